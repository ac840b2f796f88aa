"""The alarms worker: follows ``fault_events``, keeps alarms, and opens a ticket per new alarm.

Ticket opening is retried with backoff until the API answers; the alarm id is the idempotency
key, so a retry after a lost response never opens a second ticket.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import httpx
import psycopg

from alarms.lifecycle import clear_alarm, raise_alarm
from alarms.tickets_client import TicketRequest, TicketsClient
from core import outbox
from core.db import poll_until_stopped

log = logging.getLogger(__name__)

CONSUMER = "alarms"
EVENTS_PER_ROUND = 500
TICKETS_PER_ROUND = 50
TICKET_RETRY_MAX_S = 60.0
# Only alarms this serious open a work order by themselves; the rest wait for a dispatcher.
TICKET_SEVERITIES = ("critical", "major")

_EVENTS = """
SELECT e.id, e.kind, e.at, f.id AS fault_id, f.equipment_id, f.fault_code, f.severity
FROM fault_events e JOIN faults f ON f.id = e.fault_id
WHERE e.id = ANY(%s) ORDER BY e.xid, e.id
"""


def describe(diagnosis: dict[str, Any] | None) -> str:
    """The ticket text a dispatcher reads first: the most probable cause and what to try."""
    if not diagnosis or not diagnosis.get("causes"):
        return ""
    top = diagnosis["causes"][0]
    lines = [f"Most probable cause: {top['title']} ({top['probability']:.0%})."]
    if top.get("because"):
        lines.append("Evidence: " + "; ".join(top["because"]) + ".")
    lines.append("Try first:" if top["remote_resolvable"] else "Needs a visit:")
    lines.extend(f"- {step}" for step in top["remedy"])
    if diagnosis.get("spare_part"):
        lines.append(f"Spare part if a visit is needed: {diagnosis['spare_part']}.")
    return "\n".join(lines)


class AlarmsWorker:
    def __init__(self, database_url: str, tickets_api_url: str) -> None:
        self.database_url = database_url
        self.tickets = TicketsClient(tickets_api_url)

    def run(self, stop: threading.Event) -> None:
        try:
            poll_until_stopped(self.database_url, CONSUMER, self.process_round, stop)
        finally:
            self.tickets.close()

    def process_round(self, conn: psycopg.Connection) -> int:
        return self.process_fault_events(conn) + self.open_pending_tickets(conn)

    def process_fault_events(self, conn: psycopg.Connection) -> int:
        with conn.transaction():
            cursor = outbox.load_cursor(conn, CONSUMER)
            events = outbox.fetch_after(conn, "fault_events", cursor, limit=EVENTS_PER_ROUND)
            if not events:
                return 0
            for _, kind, at, fault_id, equipment_id, fault_code, severity in conn.execute(
                _EVENTS, ([e["id"] for e in events],)
            ):
                if kind == "raised":
                    alarm_id, new = raise_alarm(conn, equipment_id, fault_code, severity, at, fault_id)
                    if new:
                        log.info("alarm %d raised: %s on %s (%s)", alarm_id, fault_code, equipment_id, severity)
                else:
                    alarm_id = clear_alarm(conn, equipment_id, fault_code, at)
                    if alarm_id:
                        log.info("alarm %d cleared: %s on %s", alarm_id, fault_code, equipment_id)
            last = events[-1]
            outbox.save_cursor(conn, CONSUMER, (last["cursor_xid"], last["id"]))
        return len(events)

    def open_pending_tickets(self, conn: psycopg.Connection) -> int:
        with conn.transaction():
            pending = conn.execute(
                """SELECT a.id, a.equipment_id, a.fault_code, a.severity, a.ticket_attempts, f.title, f.diagnosis
                   FROM alarms a LEFT JOIN faults f ON f.id = a.last_fault_id
                   WHERE a.ticket_id IS NULL AND a.severity = ANY(%s) AND a.next_ticket_try_at <= now()
                   ORDER BY a.id LIMIT %s""",
                (list(TICKET_SEVERITIES), TICKETS_PER_ROUND),
            ).fetchall()
        opened = 0
        for alarm_id, equipment_id, fault_code, severity, attempts, title, diagnosis in pending:
            request = TicketRequest(alarm_id, equipment_id, fault_code, severity,
                                    title=f"{title or fault_code} on {equipment_id}",
                                    description=describe(diagnosis), diagnosis=diagnosis)
            try:
                ticket_id = self.tickets.open_ticket(request)
            except httpx.HTTPError as exc:
                backoff_s = min(2.0 ** attempts, TICKET_RETRY_MAX_S)
                log.warning("opening a ticket for alarm %d failed (%s); retry in %.0fs", alarm_id, exc, backoff_s)
                with conn.transaction():
                    conn.execute(
                        """UPDATE alarms SET ticket_attempts = ticket_attempts + 1, ticket_error = %s,
                           next_ticket_try_at = now() + make_interval(secs => %s) WHERE id = %s""",
                        (str(exc)[:500], backoff_s, alarm_id),
                    )
                continue
            with conn.transaction():
                conn.execute(
                    "UPDATE alarms SET ticket_id = %s, ticket_attempts = ticket_attempts + 1, ticket_error = NULL "
                    "WHERE id = %s",
                    (ticket_id, alarm_id),
                )
            log.info("alarm %d opened ticket %d", alarm_id, ticket_id)
            opened += 1
        return opened
