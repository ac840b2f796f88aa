"""The outbox: ``notify`` writes one row per recipient of an event, in the caller's transaction.

Whatever commits the event commits its notifications, and a rolled-back event sends nothing. Each
row holds everything its delivery needs (channel, address, rendered subject and body, the facts),
so the notify workers never look at tickets, contacts or templates again.

Recipients and their channel:

- ``customer=True``: the ticket's contact and every contact of the machine's customer with
  ``notify_all``. Preferred ``email`` → e-mail; ``sms`` or ``phone`` → SMS to their first number
  (a mobile first); ``app`` → e-mail if they have an address, else SMS. When the preferred address
  is missing, the other channel is used. A ticket without anyone to tell gets one ``unsendable``
  row for the customer, so that the silence is visible.
- ``engineer=<id>``: that engineer, by their preferred channel (``sms`` or ``email``), else the other.
- ``group=<name>``: every member of the group the same way, and the group's own webhook if it has one.
- The integration webhook (``IRONSIGHT_NOTIFY_WEBHOOK_URL``), one row per event, when the process
  that writes the event has it configured: the URL is resolved here, at enqueue, and kept in the row.

A recipient without a usable address gets a row in state ``unsendable`` with the reason (counted,
visible), never nothing.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from core import metrics
from notifications.templates import DEFAULT_LANGUAGE, EVENTS, render

log = logging.getLogger(__name__)

AUDIENCES = ("customer", "engineer", "group", "integration")
CHANNELS = ("email", "sms", "webhook")
INTEGRATION_WEBHOOK_VARIABLE = "IRONSIGHT_NOTIFY_WEBHOOK_URL"


@dataclass(frozen=True, slots=True)
class Recipient:
    audience: str
    key: str              # contact:<id>, engineer:<id>, member:<group>/<member>, group:<name>, integration
    name: str
    language: str
    channel: str          # the channel used, or the one preferred when there is no address at all
    address: str | None   # None: unsendable
    reason: str | None = None


_TICKET_FACTS = """
SELECT t.id AS ticket, t.title, t.equipment_id AS equipment, e.model AS equipment_model,
       coalesce(c.name, e.customer) AS customer, coalesce(g.name, t.engineer) AS engineer,
       t.eta, t.arrive_by, t.state, t.contact_id, e.customer AS customer_id
FROM tickets t
JOIN equipment e ON e.id = t.equipment_id
LEFT JOIN customers c ON c.id = e.customer
LEFT JOIN engineers g ON g.id = t.engineer
WHERE t.id = %s
"""

# The ticket's contact first, then the contacts who hear about every work order of the customer.
_CONTACTS = """
SELECT c.id, c.name, c.email, c.preferred_channel, c.language,
       (SELECT p.e164 FROM contact_phones p WHERE p.contact_id = c.id
        ORDER BY (p.label = 'mobile') DESC, p.e164 LIMIT 1) AS phone
FROM customer_contacts c
WHERE c.customer_id = %(customer)s AND (c.id = %(contact)s OR c.notify_all)
ORDER BY (c.id = %(contact)s) DESC NULLS LAST, c.id
"""

_INSERT = """
INSERT INTO notifications (event, ticket_id, audience, recipient, recipient_name, channel, address, language,
                           subject, body, facts, state, reason, created_at, next_try_at)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, least(%s, statement_timestamp()))
"""


def _by_preference(preferred: str, email: str | None, phone: str | None) -> tuple[str, str | None]:
    """(channel, address) for someone who prefers ``preferred`` (``email`` or ``sms``): that channel
    when its address is known, else the other one, else the preferred one without an address."""
    order = ("email", "sms") if preferred == "email" else ("sms", "email")
    addresses = {"email": email or None, "sms": phone or None}
    for channel in order:
        if addresses[channel]:
            return channel, addresses[channel]
    return preferred, None


def contact_recipient(row: Mapping[str, Any]) -> Recipient:
    """A customer contact: email → e-mail, sms or phone → SMS, app → e-mail if they have one."""
    preferred = "email" if row["preferred_channel"] in ("email", "app") else "sms"
    channel, address = _by_preference(preferred, row["email"], row["phone"])
    return Recipient("customer", f"contact:{row['id']}", row["name"], row["language"], channel, address,
                     None if address else "the contact has neither an e-mail address nor a phone number")


def person_recipient(audience: str, key: str, row: Mapping[str, Any]) -> Recipient:
    """An engineer or a group member, by their preferred channel (sms or email)."""
    channel, address = _by_preference(row["preferred_channel"], row["email"], row["phone"])
    return Recipient(audience, key, row["name"], row["language"], channel, address,
                     None if address else f"{key} has neither an e-mail address nor a phone number")


def _customer_recipients(cur: psycopg.Cursor[dict[str, Any]], ticket: Mapping[str, Any]) -> list[Recipient]:
    contacts = cur.execute(_CONTACTS, {"customer": ticket["customer_id"], "contact": ticket["contact_id"]}).fetchall()
    if not contacts:
        return [Recipient("customer", f"customer:{ticket['customer_id']}", str(ticket["customer"]), DEFAULT_LANGUAGE,
                          "email", None, "no contact to notify: the ticket names none and no contact of the "
                                             "customer hears about every work order")]
    return [contact_recipient(row) for row in contacts]


def _engineer_recipient(cur: psycopg.Cursor[dict[str, Any]], engineer: str) -> Recipient:
    row = cur.execute("SELECT id, name, email, phone, language, preferred_channel FROM engineers WHERE id = %s",
                      (engineer,)).fetchone()
    if row is None:
        raise LookupError(f"no engineer {engineer!r}")
    return person_recipient("engineer", f"engineer:{engineer}", row)


def _group_recipients(cur: psycopg.Cursor[dict[str, Any]], group: str) -> list[Recipient]:
    found = cur.execute("SELECT name, webhook_url FROM service_groups WHERE name = %s", (group,)).fetchone()
    if found is None:
        raise LookupError(f"no service group {group!r}")
    members = cur.execute("SELECT member, name, email, phone, language, preferred_channel "
                          "FROM service_group_members WHERE group_name = %s ORDER BY member", (group,)).fetchall()
    recipients = [person_recipient("group", f"member:{group}/{m['member']}", m) for m in members]
    if found["webhook_url"]:
        recipients.append(Recipient("group", f"group:{group}", group, DEFAULT_LANGUAGE, "webhook",
                                    found["webhook_url"]))
    if not recipients:
        recipients.append(Recipient("group", f"group:{group}", group, DEFAULT_LANGUAGE, "email", None,
                                    f"the group {group!r} has no members and no webhook"))
    return recipients


def integration_webhook_url() -> str | None:
    """Where every event also goes, as this process is configured (``Settings.notify_webhook_url``).

    Read from the environment directly: building the whole Settings costs milliseconds, on the path of
    every event."""
    return os.environ.get(INTEGRATION_WEBHOOK_VARIABLE, "").strip() or None


def _stored(value: Any) -> Any:
    """A fact as JSON: times as ISO 8601, the rest as given when JSON has it, else as text."""
    if isinstance(value, datetime):
        return value.isoformat()
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple):
        return [_stored(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _stored(v) for k, v in value.items()}
    return str(value)


def notify(cur: psycopg.Cursor[Any], event: str, *, ticket_id: int, at: datetime, customer: bool = False,
           engineer: str | None = None, group: str | None = None, facts: Mapping[str, Any] | None = None) -> int:
    """Write the outbox rows for one event, in the caller's transaction; return how many."""
    if event not in EVENTS:
        raise ValueError(f"unknown notification event {event!r}; known: {', '.join(EVENTS)}")
    with cur.connection.cursor(row_factory=dict_row) as own:
        ticket = own.execute(_TICKET_FACTS, (ticket_id,)).fetchone()
        if ticket is None:
            raise LookupError(f"no ticket {ticket_id}")
        shown = {name: ticket[name] for name in ("ticket", "title", "equipment", "equipment_model", "customer",
                                                 "engineer", "eta", "arrive_by", "state")}
        if group is not None:
            shown["group"] = group
        shown.update(facts or {})
        recipients: list[Recipient] = []
        if customer:
            recipients.extend(_customer_recipients(own, ticket))
        if engineer is not None:
            recipients.append(_engineer_recipient(own, engineer))
        if group is not None:
            recipients.extend(_group_recipients(own, group))
        webhook = integration_webhook_url()
        if webhook:
            recipients.append(Recipient("integration", "integration", "integration", DEFAULT_LANGUAGE, "webhook",
                                        webhook))
        stored_facts = Jsonb({name: _stored(value) for name, value in shown.items()})
        rows, seen = [], set()
        for recipient in recipients:
            # One message per address: an engineer who is also a member of the group hears it once.
            identity = (recipient.channel, recipient.address) if recipient.address else (recipient.key,)
            if identity in seen:
                continue
            seen.add(identity)
            message = render(event, recipient.language, shown)
            state = "pending" if recipient.address else "unsendable"
            rows.append((event, ticket_id, recipient.audience, recipient.key, recipient.name, recipient.channel,
                         recipient.address, recipient.language, message.subject, message.body, stored_facts, state,
                         recipient.reason, at, at))
        own.executemany(_INSERT, rows)
    for row in rows:
        channel, state = row[5], row[11]
        metrics.notification(channel, "queued" if state == "pending" else "unsendable")
        if state == "unsendable":
            log.warning("notification %s of ticket %d for %s is unsendable: %s", event, ticket_id, row[3], row[12])
    return len(rows)
