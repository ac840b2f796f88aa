"""The notify worker: delivers the outbox, records every attempt, retries with backoff.

A round claims due rows (``FOR UPDATE SKIP LOCKED``) in a short transaction that moves their
``next_try_at`` to the end of a lease and gives them a lease token; then it sends each one outside
any transaction, and records the attempt and the new state together in one transaction that holds
only if the token is still the row's. So:

- two workers never take the same row (the claim skips locked rows, and a claimed row is not due
  until its lease ends);
- a row is marked sent in the same step its delivery is recorded;
- a worker killed between sending and recording leaves the row pending, due again when the lease
  ends: another worker sends it again (at least once), with the same Idempotency-Key or Message-ID
  for the receiver to drop the repeat;
- a configured channel that cannot be reached is retried with exponential backoff (``retry_first_s``
  doubling up to ``retry_max_s``) until ``give_up_after_s`` after queueing, then ``failed``; a refusal
  that no retry cures (HTTP 4xx, SMTP 5xx) is ``failed`` at once; a channel not configured at all
  makes its rows ``unsent`` with the reason.

Any number of workers may run; each round is callable directly with an injectable ``now``.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg.rows import dict_row

from core import metrics
from core.db import one, poll_until_stopped
from notifications.channels import Channels, DeliveryConfig, Outcome

log = logging.getLogger(__name__)

WAKE_CHANNEL = "notifications"
# Rows claimed at once; with the lease check below, a slow receiver makes the rest wait, not double.
CLAIM_ROWS = 20

_CLAIM = """
WITH due AS (
    SELECT id FROM notifications
    WHERE state = 'pending' AND next_try_at <= %(now)s
    ORDER BY next_try_at, id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
UPDATE notifications n SET next_try_at = %(now)s + make_interval(secs => %(lease_s)s), lease_token = %(token)s,
                           leased_by = %(worker)s
FROM due WHERE n.id = due.id
RETURNING n.id, n.key, n.event, n.ticket_id, n.audience, n.recipient, n.recipient_name, n.channel, n.address,
          n.language, n.subject, n.body, n.facts, n.created_at, n.queued_at, n.attempts
"""

_ATTEMPT = """
INSERT INTO notification_attempts (notification_id, at, worker, channel, ok, status_code, reply, error, duration_ms)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)
"""


@dataclass(frozen=True, slots=True)
class Claim:
    token: uuid.UUID
    rows: list[dict[str, Any]]
    began: float  # monotonic time of the claim: the lease runs from here


def claim(conn: psycopg.Connection, *, worker: str, lease_s: float, now: datetime | None = None,
          limit: int = CLAIM_ROWS) -> Claim:
    """Take up to ``limit`` due rows for ``lease_s``: nobody else takes them until it ends."""
    token = uuid.uuid4()
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        now = _clock(conn, now)
        rows = cur.execute(_CLAIM, {"now": now, "limit": limit, "lease_s": lease_s, "token": token,
                                    "worker": worker}).fetchall()
    rows.sort(key=lambda row: row["id"])
    return Claim(token, rows, time.monotonic())


def record(conn: psycopg.Connection, row: dict[str, Any], outcome: Outcome, *, token: uuid.UUID, worker: str,
           now: datetime, config: DeliveryConfig) -> str | None:
    """Record one attempt and its consequence, together; returns the row's new state (None when the
    lease was lost meanwhile: the attempt is recorded, the state is the new holder's)."""
    attempts = row["attempts"] + 1
    if outcome.ok:
        state, reason, next_try = "sent", None, now
    elif outcome.permanent:
        state, reason, next_try = "failed", outcome.describe(), now
    elif now - row["queued_at"] >= timedelta(seconds=config.give_up_after_s):
        state, reason, next_try = "failed", f"gave up after {attempts} attempts: {outcome.describe()}", now
    else:
        backoff_s = min(config.retry_first_s * 2.0 ** (attempts - 1), config.retry_max_s)
        state, reason, next_try = "pending", outcome.describe(), now + timedelta(seconds=backoff_s)
    with conn.transaction():
        conn.execute(_ATTEMPT, (row["id"], now, worker, row["channel"], outcome.ok, outcome.status_code,
                                outcome.reply, outcome.error, outcome.duration_s * 1000.0))
        updated = conn.execute(
            """UPDATE notifications SET state = %s, reason = %s, next_try_at = %s, attempts = attempts + 1,
                      lease_token = NULL, leased_by = NULL,
                      sent_at = CASE WHEN %s = 'sent' THEN %s END,
                      finished_at = CASE WHEN %s <> 'pending' THEN %s END
               WHERE id = %s AND lease_token = %s AND state = 'pending'""",
            (state, reason, next_try, state, now, state, now, row["id"], token)).rowcount
    if not updated:
        log.warning("notification %d: the lease ran out during the attempt; another worker has it", row["id"])
        return None
    if state == "pending":
        metrics.notification(row["channel"], "retried", outcome.duration_s)
        log.info("notification %d (%s to %s) not delivered (%s); attempt %d, next at %s", row["id"], row["channel"],
                 row["recipient"], reason, attempts, next_try.isoformat(timespec="seconds"))
    else:
        metrics.notification(row["channel"], state, outcome.duration_s)
        if state == "failed":
            log.warning("notification %d (%s to %s) failed: %s", row["id"], row["channel"], row["recipient"], reason)
    return state


def _mark_unsent(conn: psycopg.Connection, row: dict[str, Any], reason: str, *, token: uuid.UUID,
                 now: datetime) -> None:
    with conn.transaction():
        updated = conn.execute(
            "UPDATE notifications SET state = 'unsent', reason = %s, finished_at = %s, lease_token = NULL, "
            "leased_by = NULL WHERE id = %s AND lease_token = %s AND state = 'pending'",
            (reason, now, row["id"], token)).rowcount
    if updated:
        metrics.notification(row["channel"], "unsent")
        log.warning("notification %d (%s to %s) unsent: %s", row["id"], row["channel"], row["recipient"], reason)


def _release(conn: psycopg.Connection, rows: list[dict[str, Any]], *, token: uuid.UUID, now: datetime) -> None:
    """Hand back claimed rows not tried (the lease would not cover them): due again at once."""
    with conn.transaction():
        conn.execute("UPDATE notifications SET next_try_at = %s, lease_token = NULL, leased_by = NULL "
                     "WHERE id = ANY(%s) AND lease_token = %s AND state = 'pending'",
                     (now, [row["id"] for row in rows], token))


def _clock(conn: psycopg.Connection, now: datetime | None) -> datetime:
    """The test's clock, else the database's (in a transaction of its own: nothing stays open while
    a receiver takes its time)."""
    if now is not None:
        return now
    with conn.transaction():
        return one(conn.execute("SELECT now()"))[0]


def deliver_round(conn: psycopg.Connection, channels: Channels, *, worker: str = "notify",
                  now: datetime | None = None, limit: int = CLAIM_ROWS) -> int:
    """Claim the due rows, send each, record each; return how many were handled (0: nothing due).

    ``conn`` is the worker's own connection, outside any transaction. With ``now`` (a test's clock),
    that time is used for the claim, the attempts and the backoff."""
    config = channels.config
    claimed = claim(conn, worker=worker, lease_s=config.lease_s, now=now, limit=limit)
    for index, row in enumerate(claimed.rows):
        at = _clock(conn, now)
        if time.monotonic() - claimed.began > config.lease_s - 2 * config.timeout_s:
            _release(conn, claimed.rows[index:], token=claimed.token, now=at)
            return index
        reason = channels.unconfigured(row["channel"])
        if reason is not None:
            _mark_unsent(conn, row, reason, token=claimed.token, now=at)
            continue
        outcome = channels.send(row)
        record(conn, row, outcome, token=claimed.token, worker=worker, now=at, config=config)
    return len(claimed.rows)


class NotifyWorker:
    """Delivers notifications until stopped: woken by NOTIFY when rows commit, polling for retries."""

    def __init__(self, database_url: str, config: DeliveryConfig, *, name: str = "notify") -> None:
        self.database_url = database_url
        self.config = config
        self.name = name

    def run(self, stop: threading.Event) -> None:
        channels = Channels(self.config)
        log.info("%s delivering: e-mail %s, SMS %s, webhooks signed: %s", self.name,
                 "on" if self.config.smtp else "not configured",
                 "on" if self.config.sms_gateway_url else "not configured",
                 "yes" if self.config.webhook_secret else "no (IRONSIGHT_NOTIFY_WEBHOOK_SECRET unset)")
        try:
            poll_until_stopped(self.database_url, self.name,
                               lambda conn: deliver_round(conn, channels, worker=self.name), stop,
                               wake_on=(WAKE_CHANNEL,))
        finally:
            channels.close()
