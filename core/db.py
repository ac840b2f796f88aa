"""Database connections: single connections for workers, a pool for the API."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import psycopg
from psycopg_pool import ConnectionPool

from core import metrics

log = logging.getLogger(__name__)

RECONNECT_DELAY_MIN_S = 0.5
RECONNECT_DELAY_MAX_S = 5.0
IDLE_POLL_S = 0.5

_Row = TypeVar("_Row")


def connect(url: str, *, autocommit: bool = False, application_name: str = "ironsight") -> psycopg.Connection:
    return psycopg.connect(url, autocommit=autocommit, application_name=application_name)


def open_pool(url: str, *, min_size: int = 1, max_size: int = 10, name: str = "ironsight") -> ConnectionPool:
    pool = ConnectionPool(
        url,
        min_size=min_size,
        max_size=max_size,
        name=name,
        kwargs={"application_name": name},
        open=False,
    )
    pool.open(wait=True, timeout=30)
    return pool


def timescaledb_available(conn: psycopg.Connection) -> bool:
    row = conn.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'").fetchone()
    return row is not None


def one(cursor: psycopg.Cursor[_Row]) -> _Row:
    """The next row of a query that always returns one (``count(*)``, ``now()``, an aggregate,
    ``to_regclass``…), typed as the cursor's rows: ``one(conn.execute("SELECT now()"))[0]``.

    A missing row raises LookupError saying so, rather than a TypeError on subscripting None.
    """
    row = cursor.fetchone()
    if row is None:
        raise LookupError(f"the query returned no row ({cursor.statusmessage or 'no status'})")
    return row


def where_equal(alias: str = "", /, **equal: Any) -> tuple[str, list[Any]]:
    """A WHERE clause of ``column = %s`` for every filter given (None means "any"), the columns
    qualified by ``alias`` when given. Column names come from the caller's keywords, never from input.
    """
    prefix = f"{alias}." if alias else ""
    clauses = [f"{prefix}{column} = %s" for column, value in equal.items() if value is not None]
    params = [value for value in equal.values() if value is not None]
    return ("WHERE " + " AND ".join(clauses)) if clauses else "", params


def poll_until_stopped(database_url: str, name: str, round_: Callable[[psycopg.Connection], int],
                       stop: threading.Event, *, wake_on: tuple[str, ...] = (),
                       on_stop: Callable[[psycopg.Connection], None] | None = None) -> None:
    """Run ``round_`` over one connection until ``stop``; pause when it did nothing (returned 0).

    With ``wake_on``, the pause ends as soon as a NOTIFY arrives on one of those channels (the
    producer's insert trigger sends one per transaction), so work is picked up when it commits
    rather than at the next poll; the poll stays as the fallback. ``on_stop`` runs once on the way
    out while the connection is still up. A lost database is waited for with backoff and the loop
    resumes on a new connection: the round's own transactions make that safe.
    """
    delay = RECONNECT_DELAY_MIN_S
    while not stop.is_set():
        try:
            with connect(database_url, application_name=f"ironsight-{name}") as conn:
                if wake_on:
                    for channel in wake_on:
                        conn.execute(f'LISTEN "{channel}"')
                    conn.commit()
                delay = RECONNECT_DELAY_MIN_S
                while not stop.is_set():
                    if round_(conn):
                        continue
                    if wake_on:
                        _wait_for_notify(conn, stop)
                    else:
                        stop.wait(IDLE_POLL_S)
                if on_stop is not None:
                    on_stop(conn)
        except psycopg.OperationalError as exc:
            metrics.db_connection_error(name)
            log.warning("%s lost the database (%s); retrying in %.1fs", name, exc, delay)
            stop.wait(delay)
            delay = min(delay * 2, RECONNECT_DELAY_MAX_S)


# While waiting for a notification the stop flag is looked at this often.
_NOTIFY_SLICE_S = 0.1


def _wait_for_notify(conn: psycopg.Connection, stop: threading.Event) -> None:
    """Until a notification (psycopg keeps those that came during the round), stop, or the idle
    poll is due."""
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        conn.commit()  # notifications reach a session only between its transactions
    deadline = time.monotonic() + IDLE_POLL_S
    while not stop.is_set() and (remaining := deadline - time.monotonic()) > 0:
        if any(True for _ in conn.notifies(timeout=min(_NOTIFY_SLICE_S, remaining), stop_after=1)):
            for _ in conn.notifies(timeout=0):
                pass  # the rest of what queued up: the next round serves them all
            return


def keep_running(step: Callable[[psycopg.Connection], object], *, database_url: str, every_s: float,
                 stop: threading.Event, what: str, application_name: str, retry_s: float = 5.0) -> None:
    """Run ``step`` every ``every_s`` on a connection of its own until ``stop``. Nothing but ``stop``
    ends it: a lost database is waited for, anything else is logged and tried again."""
    while not stop.is_set():
        wait = every_s
        try:
            with connect(database_url, application_name=application_name) as conn:
                while not stop.is_set():
                    step(conn)
                    stop.wait(every_s)
        except psycopg.OperationalError as exc:
            log.warning("%s cannot reach the database (%s)", what, exc)
            wait = retry_s
        except Exception:
            log.exception("%s failed; trying again in %.0fs", what, wait)
        stop.wait(wait)
