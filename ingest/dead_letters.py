"""Dead letters after they are written: their retention, and the reads the API serves.

Refused device input (``dead_letters``, written by the ingest and devices workers) is kept for
``IRONSIGHT_DEAD_LETTER_RETENTION_DAYS`` and then deleted by every ingest worker on a thread of its
own, every ``IRONSIGHT_DEAD_LETTER_PURGE_EVERY_S``: oldest first through the ``received_at`` index,
a few thousand rows per statement, rows another worker is deleting skipped (``SKIP LOCKED``), so
that a purge never holds many locks or one long transaction, and several workers never wait on
each other.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg.rows import dict_row

from core.db import connect, one, where_equal

log = logging.getLogger(__name__)

# Rows per DELETE: short statements, few locks at a time.
PURGE_BATCH_ROWS = 5_000
# A lost database is tried again after this long (the next purge is due anyway).
PURGE_RETRY_S = 30.0

_PURGE = """
DELETE FROM dead_letters WHERE id IN (
    SELECT id FROM dead_letters WHERE received_at < now() - %s
    ORDER BY received_at LIMIT %s FOR UPDATE SKIP LOCKED)
"""


def purge_dead_letters(conn: psycopg.Connection, older_than: timedelta, *, batch_rows: int = PURGE_BATCH_ROWS,
                       stop: threading.Event | None = None) -> int:
    """Delete the dead letters received more than ``older_than`` ago, ``batch_rows`` per committed
    statement, until none is left (or ``stop``); returns how many were deleted."""
    total = 0
    while stop is None or not stop.is_set():
        with conn.transaction():
            deleted = conn.execute(_PURGE, (older_than, batch_rows)).rowcount
        total += deleted
        if deleted < batch_rows:
            break
    return total


class DeadLetterRetention:
    """The purge thread of one ingest worker; ``retention_days`` ≤ 0 keeps dead letters forever."""

    def __init__(self, database_url: str, retention_days: float, every_s: float, *, name: str) -> None:
        self.database_url = database_url
        self.retention = timedelta(days=retention_days) if retention_days > 0 else None
        self.every_s = every_s
        self.name = name
        self.purged = 0

    def start(self, stop: threading.Event) -> threading.Thread | None:
        if self.retention is None:
            return None
        thread = threading.Thread(target=self.run, args=(stop,), name=f"{self.name} dead-letter retention",
                                  daemon=True)
        thread.start()
        return thread

    def run(self, stop: threading.Event) -> None:
        """Purge now and then every ``every_s`` until ``stop``. Nothing here ends the thread early:
        a lost database is waited for, anything else is logged and tried again next time."""
        assert self.retention is not None
        while not stop.is_set():
            wait = self.every_s
            try:
                with connect(self.database_url, autocommit=True,
                             application_name="ironsight-dead-letter-retention") as conn:
                    deleted = purge_dead_letters(conn, self.retention, stop=stop)
                self.purged += deleted
                if deleted:
                    log.info("%s: deleted %d dead letters older than %s", self.name, deleted, self.retention)
            except psycopg.OperationalError as exc:
                log.warning("%s: dead-letter retention cannot reach the database (%s)", self.name, exc)
                wait = min(wait, PURGE_RETRY_S)
            except Exception:
                log.exception("%s: dead-letter retention failed; trying again in %.0fs", self.name, wait)
            stop.wait(wait)


# --- reads for the API ---


def _where(reason: str | None, equipment_id: str | None, start: datetime | None,
           end: datetime | None) -> tuple[str, list[Any]]:
    where, params = where_equal(reason=reason, equipment_id=equipment_id)
    clauses = [where.removeprefix("WHERE ")] if where else []
    if start is not None:
        clauses.append("received_at >= %s")
        params.append(start)
    if end is not None:
        clauses.append("received_at < %s")
        params.append(end)
    return ("WHERE " + " AND ".join(clauses)) if clauses else "", params


def list_dead_letters(conn: psycopg.Connection, *, reason: str | None, equipment_id: str | None,
                      start: datetime | None, end: datetime | None, limit: int, offset: int,
                      preview_bytes: int) -> tuple[list[dict[str, Any]], int]:
    """Newest first; ``payload`` holds only the first ``preview_bytes`` of the stored payload."""
    where, params = _where(reason, equipment_id, start, end)
    with conn.cursor(row_factory=dict_row) as cur:
        count = one(cur.execute(f"SELECT count(*) AS n FROM dead_letters {where}", params))["n"]
        rows = cur.execute(
            f"""SELECT id, received_at, topic, equipment_id, reason, detail, payload_bytes,
                       substring(payload FROM 1 FOR %s) AS payload, length(payload) AS stored_bytes
                FROM dead_letters {where} ORDER BY received_at DESC, id DESC LIMIT %s OFFSET %s""",
            [preview_bytes, *params, limit, offset]).fetchall()
    return rows, count


def count_by_reason(conn: psycopg.Connection, *, equipment_id: str | None, start: datetime | None,
                    end: datetime | None) -> list[dict[str, Any]]:
    """Per reason: how many dead letters, the first and the last one's time; most frequent first."""
    where, params = _where(None, equipment_id, start, end)
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            f"""SELECT reason, count(*) AS count, min(received_at) AS first_at, max(received_at) AS last_at
                FROM dead_letters {where} GROUP BY reason ORDER BY count(*) DESC, reason""", params).fetchall()
