"""Callbacks as work: the call centre's queue of customers to call back.

A callback is scheduled in the transaction that resolves a ticket (purpose ``survey``: the six-score
survey after the repair) and in the one that records a department's answer to a complaint (purpose
``complaint_check``: is the problem really solved?). It is due within the customer's contract tier
``callback_h`` (48 h without a tier) and sits in the ``call centre`` queue until an agent takes it.
An attempt that reaches nobody is recorded and the callback rescheduled ``RETRY_AFTER`` later; after
``MAX_ATTEMPTS`` the customer counts as unreachable (tickets.aftercare decides what follows).

The SLA scheduler (tickets.sla) warns once ``WARN_FRACTION`` of a callback's time has passed with it
still open, and records a breach once it is overdue; each once, by the row's ``warned_at`` and
``breached_at``.

This module keeps the queue; what an answered callback does to its ticket or complaint is
tickets.aftercare's.
"""

from __future__ import annotations

import calendar
import logging
from datetime import date, datetime, timedelta
from typing import Any

import psycopg
from psycopg.rows import DictRow, dict_row
from psycopg.types.json import Jsonb

from core.errors import IronSightError
from notifications import notify
from tickets import groups

log = logging.getLogger(__name__)

PURPOSES = ("survey", "complaint_check")
STATES = ("open", "done", "unreachable", "cancelled")
ATTEMPT_OUTCOMES = ("answered", "no_answer", "busy", "wrong_number")
RETRY_AFTER = timedelta(hours=2)
MAX_ATTEMPTS = 5

COLUMNS = ("c.id, c.ticket_id, c.purpose, c.complaint_id, c.complaint_round, c.contact_id, c.assigned_to, c.state, "
           "c.created_at, c.due_at, c.next_attempt_at, c.attempts, c.done_at, c.done_by, c.answered_by_contact, "
           "c.warned_at, c.breached_at")
_LISTED = f"""
SELECT {COLUMNS}, t.equipment_id, e.customer AS customer_id, cu.name AS customer_name, t.title AS ticket_title,
       t.engineer, k.name AS contact_name,
       (SELECT p.e164 FROM contact_phones p WHERE p.contact_id = c.contact_id ORDER BY p.e164 LIMIT 1) AS contact_phone
FROM callbacks c JOIN tickets t ON t.id = c.ticket_id JOIN equipment e ON e.id = t.equipment_id
LEFT JOIN customers cu ON cu.id = e.customer LEFT JOIN customer_contacts k ON k.id = c.contact_id
"""


class CallbackNotFound(IronSightError):
    pass


class CallbackClosed(IronSightError):
    """The callback is no longer open (HTTP 409)."""


def schedule(cur: psycopg.Cursor[Any], ticket: dict[str, Any], purpose: str, at: datetime, *, within: timedelta,
             complaint_id: int | None = None, complaint_round: int | None = None) -> dict[str, Any] | None:
    """Put a callback for ``ticket`` in the queue, due ``within`` (the customer's callback time,
    tickets.sla.callback_within); its id and due time for the caller's event, or None when that
    callback exists already."""
    row = cur.execute(
        """INSERT INTO callbacks (ticket_id, purpose, complaint_id, complaint_round, contact_id, assigned_to,
                                  created_at, due_at, next_attempt_at)
           VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING RETURNING id""",
        (ticket["id"], purpose, complaint_id, complaint_round, ticket.get("contact_id") or _first_contact(cur, ticket),
         groups.CALL_CENTRE, at, at + within, at)).fetchone()
    if row is None:
        return None
    return {"callback_id": row["id"] if isinstance(row, dict) else row[0], "callback_due": (at + within).isoformat()}


def _first_contact(cur: psycopg.Cursor[Any], ticket: dict[str, Any]) -> int | None:
    """Without a contact on the ticket: the customer's contact who hears about every work order, else its first."""
    row = cur.execute(
        """SELECT k.id FROM customer_contacts k JOIN equipment e ON e.customer = k.customer_id
           WHERE e.id = %s ORDER BY k.notify_all DESC, k.id LIMIT 1""", (ticket["equipment_id"],)).fetchone()
    if row is None:
        return None
    return row["id"] if isinstance(row, dict) else row[0]


def lock(cur: psycopg.Cursor[DictRow], callback_id: int) -> dict[str, Any]:
    row = cur.execute(f"SELECT {COLUMNS} FROM callbacks c WHERE c.id = %s FOR UPDATE", (callback_id,)).fetchone()
    if row is None:
        raise CallbackNotFound(f"no callback {callback_id}")
    return row


def open_for(cur: psycopg.Cursor[DictRow], ticket_id: int, purpose: str) -> dict[str, Any] | None:
    """The ticket's open callback of ``purpose``, locked."""
    return cur.execute(f"SELECT {COLUMNS} FROM callbacks c WHERE c.ticket_id = %s AND c.purpose = %s "
                       "AND c.state = 'open' ORDER BY c.id DESC LIMIT 1 FOR UPDATE", (ticket_id, purpose)).fetchone()


def record_attempt(cur: psycopg.Cursor[DictRow], callback: dict[str, Any], *, agent: str, outcome: str,
                   contact_id: int | None, note: str, at: datetime) -> str:
    """Record one call of an open callback; the callback's state after it. Answered: ``done``. Nobody
    reached: rescheduled, or ``unreachable`` after ``MAX_ATTEMPTS``."""
    if callback["state"] != "open":
        raise CallbackClosed(f"callback {callback['id']} is {callback['state']}")
    cur.execute("INSERT INTO callback_attempts (callback_id, at, agent, outcome, contact_id, note) "
                "VALUES (%s, %s, %s, %s, %s, %s)", (callback["id"], at, agent, outcome, contact_id, note))
    attempts = callback["attempts"] + 1
    if outcome == "answered":
        state = "done"
        cur.execute("UPDATE callbacks SET state = 'done', attempts = %s, done_at = %s, done_by = %s, "
                    "answered_by_contact = %s, assigned_to = %s WHERE id = %s",
                    (attempts, at, agent, contact_id, agent, callback["id"]))
    elif attempts >= MAX_ATTEMPTS:
        state = "unreachable"
        cur.execute("UPDATE callbacks SET state = 'unreachable', attempts = %s, done_at = %s, done_by = %s "
                    "WHERE id = %s", (attempts, at, agent, callback["id"]))
    else:
        state = "open"
        cur.execute("UPDATE callbacks SET attempts = %s, next_attempt_at = %s, assigned_to = %s WHERE id = %s",
                    (attempts, at + RETRY_AFTER, agent, callback["id"]))
    cur.execute("INSERT INTO ticket_events (ticket_id, at, actor, event, detail) VALUES (%s, %s, %s, %s, %s)",
                (callback["ticket_id"], at, agent, "callback_attempt",
                 Jsonb({"callback_id": callback["id"], "purpose": callback["purpose"], "outcome": outcome,
                        "attempt": attempts, "contact_id": contact_id, "callback_state": state,
                        **({"next_attempt_at": (at + RETRY_AFTER).isoformat()} if state == "open" else {})})))
    return state


def cancel_open(cur: psycopg.Cursor[Any], ticket_id: int, at: datetime, reason: str) -> int:
    """Cancel the ticket's open callbacks (the ticket ended some other way); how many."""
    return cur.execute("UPDATE callbacks SET state = 'cancelled', done_at = %s, done_by = %s "
                       "WHERE ticket_id = %s AND state = 'open'", (at, reason, ticket_id)).rowcount


def claim(conn: psycopg.Connection, callback_id: int, agent: str) -> dict[str, Any]:
    """An agent takes an open callback from the queue."""
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        callback = lock(cur, callback_id)
        if callback["state"] != "open":
            raise CallbackClosed(f"callback {callback_id} is {callback['state']}")
        cur.execute("UPDATE callbacks SET assigned_to = %s WHERE id = %s", (agent, callback_id))
    found = get_callback(conn, callback_id)
    assert found is not None
    return found


def get_callback(conn: psycopg.Connection, callback_id: int) -> dict[str, Any] | None:
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(_LISTED + " WHERE c.id = %s", (callback_id,)).fetchone()
        if row is not None:
            row["attempt_log"] = cur.execute(
                "SELECT at, agent, outcome, contact_id, note FROM callback_attempts WHERE callback_id = %s "
                "ORDER BY at, id", (callback_id,)).fetchall()
        return row


def list_callbacks(conn: psycopg.Connection, *, now: datetime, state: str | None = "open", due: str = "all",
                   assigned_to: str | None = None, purpose: str | None = None, customer: str | None = None,
                   limit: int = 100, offset: int = 0) -> tuple[list[dict[str, Any]], int]:
    """The queue, most urgent first. ``due``: ``all``, ``now`` (its next attempt time has come),
    ``overdue`` (past its due time), ``today`` (due before the end of the UTC day)."""
    conditions = ["(%(state)s::text IS NULL OR c.state = %(state)s)",
                  "(%(agent)s::text IS NULL OR c.assigned_to = %(agent)s)",
                  "(%(purpose)s::text IS NULL OR c.purpose = %(purpose)s)",
                  "(%(customer)s::text IS NULL OR e.customer = %(customer)s)"]
    conditions.append({"all": "true", "now": "c.next_attempt_at <= %(now)s", "overdue": "c.due_at < %(now)s",
                       "today": "c.due_at < date_trunc('day', %(now)s AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' "
                                "+ interval '1 day'"}[due])
    where = " WHERE " + " AND ".join(conditions)
    params = {"state": state, "agent": assigned_to, "purpose": purpose, "customer": customer, "now": now,
              "limit": limit, "offset": offset}
    with conn.cursor(row_factory=dict_row) as cur:
        count = cur.execute("SELECT count(*) AS n FROM callbacks c JOIN tickets t ON t.id = c.ticket_id "
                            "JOIN equipment e ON e.id = t.equipment_id" + where, params).fetchone()
        rows = cur.execute(_LISTED + where + " ORDER BY c.due_at, c.id LIMIT %(limit)s OFFSET %(offset)s",
                           params).fetchall()
    for row in rows:
        row["overdue"] = row["state"] == "open" and row["due_at"] < now
    return rows, count["n"] if count else 0


_PLAN = """
SELECT (c.due_at AT TIME ZONE 'UTC')::date AS day,
       count(*) AS planned,
       count(*) FILTER (WHERE c.state = 'done') AS done,
       count(*) FILTER (WHERE c.state = 'done' AND c.done_at <= c.due_at) AS done_on_time,
       count(*) FILTER (WHERE c.state = 'open') AS open,
       count(*) FILTER (WHERE c.state = 'open' AND c.due_at < %(now)s) AS overdue,
       count(*) FILTER (WHERE c.state = 'unreachable') AS unreachable
FROM callbacks c
WHERE c.due_at >= %(start)s AND c.due_at < %(end)s AND c.state <> 'cancelled'
GROUP BY 1 ORDER BY 1
"""
_BY_AGENT = """
SELECT c.assigned_to AS agent, count(*) AS assigned,
       count(*) FILTER (WHERE c.state = 'done') AS done,
       count(*) FILTER (WHERE c.state = 'done' AND c.done_at <= c.due_at) AS done_on_time,
       count(*) FILTER (WHERE c.state = 'open') AS open
FROM callbacks c
WHERE c.due_at >= %(start)s AND c.due_at < %(end)s AND c.state <> 'cancelled'
GROUP BY 1 ORDER BY 1
"""


def month_plan(conn: psycopg.Connection, month: date, *, now: datetime) -> dict[str, Any]:
    """The month's callbacks (by due day, UTC): planned, done, on time, open, overdue, unreachable;
    and per agent (or the queue)."""
    start = datetime(month.year, month.month, 1, tzinfo=now.tzinfo)
    end = start + timedelta(days=calendar.monthrange(month.year, month.month)[1])
    params = {"start": start, "end": end, "now": now}
    with conn.cursor(row_factory=dict_row) as cur:
        days = cur.execute(_PLAN, params).fetchall()
        agents = cur.execute(_BY_AGENT, params).fetchall()
    totals = {key: sum(d[key] for d in days) for key in ("planned", "done", "done_on_time", "open", "overdue",
                                                          "unreachable")}
    return {"month": f"{month.year:04d}-{month.month:02d}", "totals": totals, "days": days, "agents": agents}


_FIRE = """
WITH hits AS (
    SELECT c.id FROM callbacks c
    WHERE c.state = 'open' AND c.{column} IS NULL AND {condition}
    FOR UPDATE SKIP LOCKED
), fired AS (
    UPDATE callbacks c SET {column} = %(now)s FROM hits WHERE c.id = hits.id AND c.{column} IS NULL
    RETURNING c.id, c.ticket_id, c.purpose, c.due_at, c.assigned_to
)
INSERT INTO ticket_events (ticket_id, at, actor, event, detail)
SELECT ticket_id, %(now)s, 'sla', %(event)s,
       jsonb_build_object('timer', 'callback', 'callback_id', id, 'purpose', purpose, 'due', due_at,
                          'assigned_to', assigned_to)
FROM fired
RETURNING ticket_id, (detail ->> 'callback_id')::bigint AS callback_id, (detail ->> 'due')::timestamptz AS due
"""
_WARNING = "%(now)s >= c.created_at + (c.due_at - c.created_at) * %(fraction)s AND %(now)s < c.due_at"
_BREACH = "%(now)s >= c.due_at"


def fire_sla(cur: psycopg.Cursor[Any], now: datetime, warn_fraction: float) -> dict[str, list[tuple[int, int]]]:
    """Warnings and breaches of open callbacks due at ``now``: kind → [(ticket, callback)], each once."""
    fired: dict[str, list[tuple[int, int]]] = {}
    for kind, column, condition in (("breach", "breached_at", _BREACH), ("warning", "warned_at", _WARNING)):
        rows = cur.execute(_FIRE.format(column=column, condition=condition),
                           {"now": now, "fraction": warn_fraction, "event": f"sla_{kind}"}).fetchall()
        fired[kind] = [(r["ticket_id"], r["callback_id"]) if isinstance(r, dict) else (r[0], r[1]) for r in rows]
        if kind == "warning":
            for row in rows:
                ticket_id, _, due = row.values() if isinstance(row, dict) else row
                notify(cur, "callback_due", ticket_id=ticket_id, at=now, group=groups.CALL_CENTRE,
                       facts={"due_at": due})
    return fired
