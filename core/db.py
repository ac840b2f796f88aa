"""Database connections: single connections for workers, a pool for the API."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool

log = logging.getLogger(__name__)

RECONNECT_DELAY_MIN_S = 0.5
RECONNECT_DELAY_MAX_S = 5.0
IDLE_POLL_S = 0.5


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


def where_equal(alias: str = "", /, **equal: Any) -> tuple[str, list[Any]]:
    """A WHERE clause of ``column = %s`` for every filter given (None means "any"), the columns
    qualified by ``alias`` when given. Column names come from the caller's keywords, never from input.
    """
    prefix = f"{alias}." if alias else ""
    clauses = [f"{prefix}{column} = %s" for column, value in equal.items() if value is not None]
    params = [value for value in equal.values() if value is not None]
    return ("WHERE " + " AND ".join(clauses)) if clauses else "", params


def poll_until_stopped(database_url: str, name: str, round_: Callable[[psycopg.Connection], int],
                       stop: threading.Event) -> None:
    """Run ``round_`` over one connection until ``stop``; pause when it did nothing (returned 0).

    A lost database is waited for with backoff and the loop resumes on a new connection: the
    round's own transactions make that safe.
    """
    delay = RECONNECT_DELAY_MIN_S
    while not stop.is_set():
        try:
            with connect(database_url, application_name=f"ironsight-{name}") as conn:
                delay = RECONNECT_DELAY_MIN_S
                while not stop.is_set():
                    if not round_(conn):
                        stop.wait(IDLE_POLL_S)
        except psycopg.OperationalError as exc:
            log.warning("%s lost the database (%s); retrying in %.1fs", name, exc, delay)
            stop.wait(delay)
            delay = min(delay * 2, RECONNECT_DELAY_MAX_S)
