"""SLA timers: deadlines from the customer's contract tier, and the scheduler that warns before and flags after.

Three timers per ticket, each a deadline column, the moment it starts and the moment that stops it:

- respond: ``respond_by`` = created + contract ``respond_h`` (default 4 h); stopped by the first step
  out of ``created`` (accept, reject, cancel).
- arrive: ``arrive_by``, set when the ticket is dispatched (dispatch passes a distance-based time;
  without one, the response deadline + contract ``arrive_h``, default 4 h); stopped by the arrival,
  or by a resolution / end without a visit.
- resolve: ``resolve_by`` = created + contract ``resolve_h`` (default 24 h); stopped by the
  resolution or the end of the ticket.

Besides, every open callback is due within the customer's callback time (tickets.callbacks) and
every complaint round's answer within a week (tickets.complaints): ``run_sla_round`` warns and flags
those too, once per callback and per round (their ``warned_at`` / ``breached_at``).

``run_sla_round`` emits, per ticket and timer, a ``sla_warning`` event once ``WARN_FRACTION`` of the
allowed time has passed on a running timer, and a ``sla_breach`` event once the deadline passed with
the timer still running (or stopped late). ``ticket_sla_alerts`` has one row per ticket, timer and
kind, so each is emitted exactly once, across restarts and concurrent schedulers.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg.rows import DictRow, TupleRow, dict_row

from core import metrics
from core.db import one, poll_until_stopped
from tickets import callbacks, complaints

log = logging.getLogger(__name__)

DEFAULT_RESPOND_H = 4.0
DEFAULT_ARRIVE_H = 4.0
DEFAULT_RESOLVE_H = 24.0
# Warn when this share of the allowed time has passed: 3 h into a 4 h response promise.
WARN_FRACTION = 0.75
# A timer stopped after its deadline without a breach event (the scheduler was down all along)
# still gets its breach, when it stopped within this window.
LATE_STOP_LOOKBACK = timedelta(days=7)
# Deadlines are hours apart; checking more often than this only costs queries.
SLA_CHECK_EVERY_S = 10.0


@dataclass(frozen=True, slots=True)
class Timer:
    name: str
    due: str     # deadline column of tickets
    start: str   # SQL over alias t: when the allowed time started
    stop: str    # SQL over alias t: when the timer stopped (NULL while running)


TIMERS = (
    Timer("respond", "respond_by", "t.created_at", "COALESCE(t.responded_at, t.ended_at)"),
    Timer("arrive", "arrive_by", "t.dispatched_at", "COALESCE(t.arrived_at, t.resolved_at, t.ended_at)"),
    Timer("resolve", "resolve_by", "t.created_at", "COALESCE(t.resolved_at, t.ended_at)"),
)


# The kinds of request a ticket can be (tickets.kind); a contract tier may set limits per kind.
TICKET_KINDS = ("fault", "consultation", "complaint", "suggestion", "maintenance")
DEFAULT_REMOTE_DIAGNOSIS_MIN = 30.0
DEFAULT_CALLBACK_H = 48.0


@dataclass(frozen=True, slots=True)
class Contract:
    respond_h: float = DEFAULT_RESPOND_H
    arrive_h: float = DEFAULT_ARRIVE_H
    resolve_h: float = DEFAULT_RESOLVE_H
    remote_diagnosis_min: float = DEFAULT_REMOTE_DIAGNOSIS_MIN
    tier: str | None = None
    callback_h: float = DEFAULT_CALLBACK_H


_CONTRACT = """
SELECT coalesce(l.respond_h, t.respond_h) AS respond_h, t.arrive_h, coalesce(l.resolve_h, t.resolve_h) AS resolve_h,
       t.remote_diagnosis_min, t.name, t.callback_h
FROM equipment e LEFT JOIN customers c ON c.id = e.customer LEFT JOIN contract_tiers t ON t.name = c.tier
LEFT JOIN contract_tier_limits l ON l.tier = t.name AND l.kind = %s
WHERE e.id = %s
"""


def contract_for(conn: psycopg.Connection[TupleRow] | psycopg.Cursor[TupleRow] | psycopg.Cursor[DictRow],
                 equipment_id: str, kind: str = "fault") -> Contract | None:
    """The limits of the machine's customer's contract tier for a request of ``kind`` (defaults
    without a tier); None for unknown equipment."""
    row = conn.execute(_CONTRACT, (kind, equipment_id)).fetchone()
    if row is None:
        return None
    values = list(row.values() if isinstance(row, dict) else row)
    if values[0] is None:
        return Contract()
    return Contract(*values)


def callback_within(cur: psycopg.Cursor[DictRow], ticket: dict[str, Any]) -> timedelta:
    """How soon the ticket's customer is called back (after a resolution, after a complaint's answer)."""
    contract = contract_for(cur, ticket["equipment_id"], ticket.get("kind") or "fault") or Contract()
    return timedelta(hours=contract.callback_h)


def contract_for_customer(conn: psycopg.Connection, customer_id: str, kind: str = "fault") -> Contract:
    """The limits of a customer's tier for a request of ``kind`` (defaults without a tier)."""
    row = conn.execute(
        """SELECT coalesce(l.respond_h, t.respond_h), t.arrive_h, coalesce(l.resolve_h, t.resolve_h),
                  t.remote_diagnosis_min, t.name, t.callback_h
           FROM customers c JOIN contract_tiers t ON t.name = c.tier
           LEFT JOIN contract_tier_limits l ON l.tier = t.name AND l.kind = %s WHERE c.id = %s""",
        (kind, customer_id)).fetchone()
    return Contract() if row is None else Contract(*row)


def set_contract(conn: psycopg.Connection, customer: str, *, respond_h: float = DEFAULT_RESPOND_H,
                 arrive_h: float = DEFAULT_ARRIVE_H, resolve_h: float = DEFAULT_RESOLVE_H) -> None:
    """Give a customer limits of its own (a tier named after it); applies to tickets created from then on."""
    tier = f"contract of {customer}"
    with conn.transaction():
        conn.execute(
            """INSERT INTO contract_tiers (name, respond_h, arrive_h, resolve_h) VALUES (%s, %s, %s, %s)
               ON CONFLICT (name) DO UPDATE SET respond_h = EXCLUDED.respond_h, arrive_h = EXCLUDED.arrive_h,
                   resolve_h = EXCLUDED.resolve_h, updated_at = now()""",
            (tier, respond_h, arrive_h, resolve_h))
        conn.execute("INSERT INTO customers (id, name, tier) VALUES (%s, %s, %s) "
                     "ON CONFLICT (id) DO UPDATE SET tier = EXCLUDED.tier, updated_at = now()",
                     (customer, customer, tier))


_TIER = """
SELECT t.name, t.description, t.respond_h, t.arrive_h, t.resolve_h, t.remote_diagnosis_min, t.callback_h,
       t.updated_at,
       coalesce((SELECT jsonb_object_agg(l.kind, jsonb_build_object('respond_h', l.respond_h, 'resolve_h', l.resolve_h))
                 FROM contract_tier_limits l WHERE l.tier = t.name), '{}') AS limits
FROM contract_tiers t
"""


def list_tiers(conn: psycopg.Connection) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(_TIER + " ORDER BY t.name").fetchall()


def put_tier(conn: psycopg.Connection, name: str, *, description: str, respond_h: float, arrive_h: float,
             resolve_h: float, remote_diagnosis_min: float, limits: dict[str, tuple[float, float]],
             callback_h: float = DEFAULT_CALLBACK_H) -> dict[str, Any]:
    """Create or replace a contract tier and its limits per kind (kind → (respond_h, resolve_h));
    tickets created from then on follow it."""
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            """INSERT INTO contract_tiers (name, description, respond_h, arrive_h, resolve_h, remote_diagnosis_min,
                                          callback_h)
               VALUES (%s, %s, %s, %s, %s, %s, %s)
               ON CONFLICT (name) DO UPDATE SET description = EXCLUDED.description, respond_h = EXCLUDED.respond_h,
                   arrive_h = EXCLUDED.arrive_h, resolve_h = EXCLUDED.resolve_h,
                   remote_diagnosis_min = EXCLUDED.remote_diagnosis_min, callback_h = EXCLUDED.callback_h,
                   updated_at = now()""",
            (name, description, respond_h, arrive_h, resolve_h, remote_diagnosis_min, callback_h))
        cur.execute("DELETE FROM contract_tier_limits WHERE tier = %s", (name,))
        for kind, (kind_respond_h, kind_resolve_h) in limits.items():
            cur.execute("INSERT INTO contract_tier_limits (tier, kind, respond_h, resolve_h) VALUES (%s, %s, %s, %s)",
                        (name, kind, kind_respond_h, kind_resolve_h))
        return cur.execute(_TIER + " WHERE t.name = %s", (name,)).fetchone()  # type: ignore[return-value]


_FIRE = """
WITH hits AS (
    SELECT t.id, t.{due} AS due FROM tickets t
    WHERE t.{due} IS NOT NULL AND {start} IS NOT NULL AND ({condition})
), fired AS (
    INSERT INTO ticket_sla_alerts (ticket_id, timer, kind, due, at)
    SELECT id, %(timer)s, %(kind)s, due, %(now)s FROM hits
    ON CONFLICT DO NOTHING
    RETURNING ticket_id, due
)
INSERT INTO ticket_events (ticket_id, at, actor, event, detail)
SELECT ticket_id, %(now)s, 'sla', 'sla_' || %(kind)s,
       jsonb_build_object('timer', %(timer)s, 'due', due, 'late_by_s',
                          greatest(0, extract(epoch FROM %(now)s - due))::bigint)
FROM fired
RETURNING ticket_id
"""

_WARNING = "{stop} IS NULL AND %(now)s >= {start} + (t.{due} - {start}) * %(fraction)s AND %(now)s < t.{due}"
_BREACH = "({stop} IS NULL AND %(now)s >= t.{due}) OR ({stop} > t.{due} AND {stop} >= %(now)s - %(lookback)s)"


def run_sla_round(conn: psycopg.Connection, now: datetime | None = None, *,
                  warn_fraction: float = WARN_FRACTION) -> int:
    """Emit the SLA warnings and breaches that are due at ``now`` (the database clock when None);
    return how many events were emitted. Safe to repeat and to run concurrently."""
    emitted = 0
    with conn.transaction():
        if now is None:
            now = one(conn.execute("SELECT now()"))[0]
        for timer in TIMERS:
            for kind, condition in (("breach", _BREACH), ("warning", _WARNING)):
                cols = {"due": timer.due, "start": timer.start, "stop": timer.stop}
                sql = _FIRE.format(condition=condition.format(**cols), **cols)
                rows = conn.execute(sql, {"timer": timer.name, "kind": kind, "now": now, "fraction": warn_fraction,
                                          "lookback": LATE_STOP_LOOKBACK}).fetchall()
                for (ticket_id,) in rows:
                    log.info("ticket %d: SLA %s of the %s timer", ticket_id, kind, timer.name)
                emitted += len(rows)
                metrics.SLA_ALERTS.labels(timer=timer.name, kind=kind).inc(len(rows))
        with conn.cursor() as cur:
            fired_callbacks = callbacks.fire_sla(cur, now, warn_fraction)
            fired_answers = complaints.fire_sla(cur, now, warn_fraction)
        for kind, fired in fired_callbacks.items():
            for ticket_id, callback_id in fired:
                log.info("ticket %d: SLA %s of callback %d", ticket_id, kind, callback_id)
            emitted += len(fired)
            metrics.SLA_ALERTS.labels(timer="callback", kind=kind).inc(len(fired))
        for kind, answers in fired_answers.items():
            for ticket_id, complaint_id, department in answers:
                log.info("ticket %d: SLA %s of complaint %d's answer from %s", ticket_id, kind, complaint_id,
                         department)
            emitted += len(answers)
            metrics.SLA_ALERTS.labels(timer="complaint_answer", kind=kind).inc(len(answers))
    return emitted


def timer_status(ticket: dict[str, Any], alerts: list[dict[str, Any]], now: datetime) -> dict[str, Any]:
    """Each timer's deadline, when it stopped, its status and when it was warned / breached."""
    stops = {
        "respond": ticket.get("responded_at") or ticket.get("ended_at"),
        "arrive": ticket.get("arrived_at") or ticket.get("resolved_at") or ticket.get("ended_at"),
        "resolve": ticket.get("resolved_at") or ticket.get("ended_at"),
    }
    out: dict[str, Any] = {}
    for timer in TIMERS:
        due = ticket.get(timer.due)
        stopped = stops[timer.name]
        mine = {a["kind"]: a["at"] for a in alerts if a["timer"] == timer.name}
        if due is None:
            status = "none"
        elif stopped is not None:
            status = "met" if stopped <= due else "breached"
        elif now >= due:
            status = "breached"
        else:
            status = "warning" if "warning" in mine else "running"
        out[timer.name] = {"due": due, "stopped_at": stopped, "status": status,
                           "warned_at": mine.get("warning"), "breached_at": mine.get("breach")}
    return out


class SlaWorker:
    """The SLA scheduler as a worker: ``run(stop)`` checks every ``check_every_s`` until stopped."""

    def __init__(self, database_url: str, *, check_every_s: float = SLA_CHECK_EVERY_S,
                 warn_fraction: float = WARN_FRACTION) -> None:
        self.database_url = database_url
        self.check_every_s = check_every_s
        self.warn_fraction = warn_fraction
        self._next_check = 0.0

    def run(self, stop: threading.Event) -> None:
        poll_until_stopped(self.database_url, "sla", self.process_round, stop)

    def process_round(self, conn: psycopg.Connection) -> int:
        """One round for ``core.db.poll_until_stopped`` (or another worker's loop): checks when due."""
        if time.monotonic() < self._next_check:
            return 0
        self._next_check = time.monotonic() + self.check_every_s
        return run_sla_round(conn, warn_fraction=self.warn_fraction)
