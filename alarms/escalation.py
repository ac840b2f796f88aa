"""Escalation of unacknowledged critical alarms to the next level through an outbound webhook.

Two steps of the alarms worker's round, both with their state in the database so that a restart
resumes them:

- ``schedule_escalations`` finds active, unacknowledged, unshelved alarms of an escalating severity
  that have waited ``escalation_after_min`` × level minutes since they were created, and inserts one
  ``alarm_escalations`` row per level reached. The primary key (alarm, level) makes every level
  happen at most once, even with two workers; an ``escalated`` event goes into the alarm's history.
- ``deliver_escalations`` POSTs each pending escalation as JSON to the webhook, with the
  ``Idempotency-Key`` ``alarm-<id>-escalation-<level>`` so that a receiver can drop the repeat
  after a lost response; a failure is retried with exponential backoff until it succeeds.
  Without a webhook URL an escalation is recorded as ``unsent`` and never delivered.

The HTTP call is made outside any transaction: a slow webhook never holds back the outbox consumers.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

import httpx
import psycopg
from psycopg.rows import dict_row

from alarms.lifecycle import SYSTEM_ACTOR, record_event
from alarms.policy import AlarmPolicy
from core.db import one

log = logging.getLogger(__name__)

WEBHOOK_TIMEOUT_S = 5.0
# Backoff of a failing webhook: 1 s, 2 s, 4 s … up to 5 minutes between attempts.
WEBHOOK_RETRY_MAX_S = 300.0
ESCALATIONS_PER_ROUND = 50

_DUE = """
SELECT a.id, a.escalation_level,
       least(%(max_level)s,
             floor(extract(epoch FROM (%(now)s - a.created_at)) / %(after_s)s))::int AS due_level,
       extract(epoch FROM (%(now)s - a.created_at)) AS waited_s
FROM alarms a
WHERE a.state = 'active' AND a.acknowledged_at IS NULL AND a.severity = ANY(%(severities)s)
  AND (a.shelved_until IS NULL OR a.shelved_until <= %(now)s)
  AND a.escalation_level < %(max_level)s
  AND a.created_at <= %(now)s - make_interval(secs => %(after_s)s * (a.escalation_level + 1))
ORDER BY a.id
LIMIT %(limit)s
FOR UPDATE OF a SKIP LOCKED
"""


def _db_now(conn: psycopg.Connection, now: datetime | None) -> datetime:
    return now if now is not None else one(conn.execute("SELECT now()"))[0]


def schedule_escalations(conn: psycopg.Connection, policy: AlarmPolicy, *, now: datetime | None = None) -> int:
    """Record every escalation level that has come due; return how many were recorded."""
    after_s = policy.escalation_after_min * 60.0
    recorded = 0
    with conn.transaction():
        now = _db_now(conn, now)
        due = conn.execute(_DUE, {"now": now, "after_s": after_s, "max_level": policy.escalation_max_level,
                                  "severities": list(policy.escalation_severities),
                                  "limit": ESCALATIONS_PER_ROUND}).fetchall()
        status = "pending" if policy.escalation_webhook_url else "unsent"
        for alarm_id, level_now, due_level, waited_s in due:
            for level in range(level_now + 1, due_level + 1):
                inserted = conn.execute(
                    "INSERT INTO alarm_escalations (alarm_id, level, created_at, status, next_try_at) "
                    "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (alarm_id, level) DO NOTHING RETURNING level",
                    (alarm_id, level, now, status, now),
                ).fetchone()
                if inserted is None:
                    continue
                record_event(conn, alarm_id, "escalated", SYSTEM_ACTOR, at=now, detail={
                    "level": level, "unacknowledged_s": round(float(waited_s)),
                    "notify": "webhook" if status == "pending" else "none (no webhook configured)"})
                log.warning("alarm %d unacknowledged for %.0f min: escalated to level %d%s", alarm_id,
                            float(waited_s) / 60, level, "" if status == "pending" else " (no webhook configured)")
                recorded += 1
            conn.execute("UPDATE alarms SET escalation_level = greatest(escalation_level, %s) WHERE id = %s",
                         (due_level, alarm_id))
    return recorded


_PENDING = """
SELECT e.alarm_id, e.level, e.attempts, e.created_at AS escalated_at, a.equipment_id, a.fault_code, a.severity,
       a.state, a.raised_at, a.created_at, a.occurrences, a.assignee, a.ticket_id, a.flapping, f.title
FROM alarm_escalations e JOIN alarms a ON a.id = e.alarm_id LEFT JOIN faults f ON f.id = a.last_fault_id
WHERE e.status = 'pending' AND e.next_try_at <= %s
ORDER BY e.next_try_at, e.alarm_id, e.level
LIMIT %s
"""


def webhook_payload(row: dict[str, Any]) -> dict[str, Any]:
    """What the next level receives: which alarm, how serious, and since when nobody acknowledged it."""
    return {
        "event": "alarm.escalated",
        "alarm_id": row["alarm_id"],
        "level": row["level"],
        "equipment_id": row["equipment_id"],
        "fault_code": row["fault_code"],
        "title": row["title"],
        "severity": row["severity"],
        "state": row["state"],
        "raised_at": row["raised_at"].isoformat(),
        "escalated_at": row["escalated_at"].isoformat(),
        "occurrences": row["occurrences"],
        "flapping": row["flapping"],
        "assignee": row["assignee"],
        "ticket_id": row["ticket_id"],
    }


def deliver_escalations(conn: psycopg.Connection, policy: AlarmPolicy, http: httpx.Client,
                        *, now: datetime | None = None) -> int:
    """POST the pending escalations whose time has come; return how many were delivered."""
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        now = _db_now(conn, now)
        pending = cur.execute(_PENDING, (now, ESCALATIONS_PER_ROUND)).fetchall()
    delivered = 0
    for row in pending:
        key = (row["alarm_id"], row["level"])
        if not policy.escalation_webhook_url:
            with conn.transaction():
                conn.execute("UPDATE alarm_escalations SET status = 'unsent', last_error = 'no webhook configured' "
                             "WHERE alarm_id = %s AND level = %s AND status = 'pending'", key)
            continue
        try:
            response = http.post(policy.escalation_webhook_url, json=webhook_payload(row),
                                 headers={"Idempotency-Key": f"alarm-{key[0]}-escalation-{key[1]}"},
                                 timeout=WEBHOOK_TIMEOUT_S)
            response.raise_for_status()
        except httpx.HTTPError as exc:
            backoff_s = min(2.0 ** row["attempts"], WEBHOOK_RETRY_MAX_S)
            log.warning("escalation of alarm %d to level %d failed (%s); retry in %.0fs", *key, exc, backoff_s)
            with conn.transaction():
                conn.execute(
                    "UPDATE alarm_escalations SET attempts = attempts + 1, last_error = %s, "
                    "next_try_at = %s + make_interval(secs => %s) WHERE alarm_id = %s AND level = %s",
                    (str(exc)[:500], now, backoff_s, *key))
            continue
        with conn.transaction():
            updated = conn.execute(
                "UPDATE alarm_escalations SET status = 'sent', sent_at = %s, attempts = attempts + 1, "
                "last_error = NULL WHERE alarm_id = %s AND level = %s AND status = 'pending' RETURNING attempts",
                (now, *key)).fetchone()
            if updated:
                record_event(conn, key[0], "escalation_sent", SYSTEM_ACTOR, at=now, detail={
                    "level": key[1], "attempts": updated[0], "status_code": response.status_code})
        log.info("escalation of alarm %d to level %d delivered", *key)
        delivered += 1
    return delivered
