"""The alarms worker: follows ``fault_events``, keeps alarms, and opens a ticket per new alarm.

Any number of workers share the fleet the way diagnostics does (core.shards): each owns a set of
equipment shards by advisory lock, follows the fault events of those machines with a cursor per
shard (stored with the alarms it wrote, in one transaction) and opens their tickets. The timers
that are not per machine's stream (unshelving, escalations) run on the owner of shard 0 alone.

Ticket opening is retried with backoff until the API answers; the alarm id is the idempotency
key, so a retry after a lost response never opens a second ticket. Each round also ends the
shelvings whose period is over, and records and delivers escalations (alarms.escalation); all of
that state is in the database, so a restarted worker carries on where it stopped.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime
from typing import Any

import httpx
import psycopg

from alarms.escalation import deliver_escalations, schedule_escalations
from alarms.lifecycle import SYSTEM_ACTOR, clear_alarm, raise_or_reopen, record_event, unshelve_expired
from alarms.policy import AlarmPolicy
from alarms.tickets_client import TicketRequest, TicketsClient
from core import metrics, outbox
from core.db import poll_until_stopped
from core.shards import SHARD_COUNT, ShardLeases

log = logging.getLogger(__name__)

CONSUMER = "alarms"
EVENTS_PER_ROUND = 500
TICKETS_PER_ROUND = 50
TICKET_RETRY_MAX_S = 60.0
# Only alarms this serious open a work order by themselves; the rest wait for a dispatcher.
TICKET_SEVERITIES = ("critical", "major")

REBALANCE_EVERY_S = 1.0
# The shard whose owner also runs the fleet-wide timers.
TIMERS_SHARD = 0

_FAULTS = f"""
SELECT id, equipment_id, fault_code, severity, equipment_shard(equipment_id, {SHARD_COUNT}), created_at
FROM faults WHERE id = ANY(%s)
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
    def __init__(self, database_url: str, tickets_api_url: str, *, policy: AlarmPolicy | None = None,
                 api_key: str | None = None) -> None:
        self.database_url = database_url
        if policy is None or api_key is None:
            from core.settings import Settings

            settings = Settings()
            policy = policy or AlarmPolicy.from_settings(settings)
            if api_key is None and settings.alarms_api_key is not None:
                api_key = settings.alarms_api_key.get_secret_value()
        self.tickets = TicketsClient(tickets_api_url, api_key)
        self.policy = policy
        self.webhook = httpx.Client(timeout=10.0)
        self.leases = ShardLeases(CONSUMER)
        self.metrics = metrics.AlarmsMetrics(CONSUMER, self.leases)
        self.cursors: dict[int, tuple[str, int]] = {}
        self._backend_pid: int | None = None
        self._rebalanced_at = 0.0

    def run(self, stop: threading.Event) -> None:
        try:
            poll_until_stopped(self.database_url, CONSUMER, self.process_round, stop, wake_on=("fault_events",),
                               on_stop=self.shutdown)
        finally:
            self.tickets.close()
            self.webhook.close()

    def process_round(self, conn: psycopg.Connection) -> int:
        return (self.process_fault_events(conn) + self.open_pending_tickets(conn) + self.process_timers(conn))

    # --- shards ---

    def position(self) -> tuple[str, int] | None:
        """The oldest cursor among the owned shards (None when owning none)."""
        return outbox.oldest(self.cursors)

    def _own_shards(self, conn: psycopg.Connection) -> None:
        """Join on a new connection, and take or hand over shards when due."""
        if self._backend_pid != conn.info.backend_pid:
            self._backend_pid = conn.info.backend_pid
            self.cursors.clear()
            self.leases.join(conn)
            self._rebalanced_at = 0.0
        if time.monotonic() - self._rebalanced_at < REBALANCE_EVERY_S:
            return
        self._rebalanced_at = time.monotonic()
        with conn.transaction():
            surplus = self.leases.surplus(conn)
            if surplus:
                self.leases.release(conn, surplus)
                for shard in surplus:
                    self.cursors.pop(shard, None)
                log.info("alarms handed over shards %s", surplus)
            taken = self.leases.acquire(conn)
            if taken:
                for shard, (cursor, _) in outbox.load_checkpoints(conn, CONSUMER, taken).items():
                    self.cursors[shard] = cursor
                log.info("alarms took shards %s (owns %d)", taken, len(self.leases.owned))

    def shutdown(self, conn: psycopg.Connection) -> None:
        if self._backend_pid == conn.info.backend_pid and self.leases.owned:
            self.leases.release(conn, list(self.leases.owned))
            conn.commit()

    def process_timers(self, conn: psycopg.Connection, *, now: datetime | None = None) -> int:
        """Unshelve what is due, record escalations that came due, deliver pending ones (on the
        owner of the timers' shard only: these are not per machine's stream)."""
        self._own_shards(conn)
        if TIMERS_SHARD not in self.leases.owned:
            return 0
        return (unshelve_expired(conn, now=now) + schedule_escalations(conn, self.policy, now=now)
                + deliver_escalations(conn, self.policy, self.webhook, now=now))

    def process_fault_events(self, conn: psycopg.Connection) -> int:
        self._own_shards(conn)
        oldest = self.position()
        if oldest is None:
            return 0
        with conn.transaction():
            # Of every machine, in commit-safe order: the cursors advance past other shards' events too.
            events = outbox.fetch_after(conn, "fault_events", oldest, limit=EVENTS_PER_ROUND,
                                        columns=("kind", "at", "fault_id"))
            if not events:
                self.metrics.caught_up()
                return 0
            faults = {row[0]: row[1:] for row in conn.execute(_FAULTS, ([e["fault_id"] for e in events],))}
            for event in events:
                kind, at, fault_id = event["kind"], event["at"], event["fault_id"]
                equipment_id, fault_code, severity, shard, _ = faults[fault_id]
                cursor = self.cursors.get(shard)
                if cursor is None or outbox.cursor_key((event["cursor_xid"], event["id"])) <= outbox.cursor_key(cursor):
                    continue  # another worker's machine, or one this shard has already seen
                if kind == "raised":
                    result = raise_or_reopen(conn, equipment_id, fault_code, severity, at, fault_id,
                                             flap_window_s=self.policy.flap_window_s,
                                             flap_threshold=self.policy.flap_threshold)
                    self.metrics.alarm(result.outcome)
                    if result.outcome != "occurrence":
                        log.info("alarm %d %s: %s on %s (%s)%s", result.alarm_id, result.outcome, fault_code,
                                 equipment_id, severity, " — flapping" if result.flapping else "")
                else:
                    alarm_id = clear_alarm(conn, equipment_id, fault_code, at)
                    if alarm_id:
                        self.metrics.alarm("cleared")
                        log.info("alarm %d cleared: %s on %s", alarm_id, fault_code, equipment_id)
            last = (events[-1]["cursor_xid"], events[-1]["id"])
            outbox.save_cursors(conn, CONSUMER, outbox.advance(self.cursors, last), last)
            # The last event's fault was stored (raised) or cleared (reading time) at least this long ago.
            self.metrics.consumed_up_to(max(faults[events[-1]["fault_id"]][4], events[-1]["at"]))
        return len(events)

    def open_pending_tickets(self, conn: psycopg.Connection) -> int:
        self._own_shards(conn)
        if not self.leases.owned:
            return 0
        with conn.transaction():
            pending = conn.execute(
                f"""SELECT a.id, a.equipment_id, a.fault_code, a.severity, a.ticket_attempts, f.title, f.diagnosis
                   FROM alarms a LEFT JOIN faults f ON f.id = a.last_fault_id
                   WHERE a.ticket_id IS NULL AND a.severity = ANY(%s) AND a.next_ticket_try_at <= now()
                     AND equipment_shard(a.equipment_id, {SHARD_COUNT}) = ANY(%s)
                   ORDER BY a.id LIMIT %s""",
                (list(TICKET_SEVERITIES), sorted(self.leases.owned), TICKETS_PER_ROUND),
            ).fetchall()
        opened = 0
        for alarm_id, equipment_id, fault_code, severity, attempts, title, diagnosis in pending:
            request = TicketRequest(alarm_id, equipment_id, fault_code, severity,
                                    title=f"{title or fault_code} on {equipment_id}",
                                    description=describe(diagnosis), diagnosis=diagnosis)
            if attempts:
                self.metrics.ticket_retries.inc()
            try:
                ticket_id = self.tickets.open_ticket(request)
            except httpx.HTTPError as exc:
                self.metrics.ticket("failed")
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
                # Once per alarm and ticket in the history, also when a retry got the same ticket back.
                if not conn.execute("SELECT 1 FROM alarm_events WHERE alarm_id = %s AND kind = 'ticket_opened' "
                                    "AND detail ->> 'ticket_id' = %s", (alarm_id, str(ticket_id))).fetchone():
                    record_event(conn, alarm_id, "ticket_opened", SYSTEM_ACTOR, detail={"ticket_id": ticket_id})
            self.metrics.ticket("opened")
            log.info("alarm %d opened ticket %d", alarm_id, ticket_id)
            opened += 1
        return opened
