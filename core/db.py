"""Database connections: single connections for workers, a pool for the API."""

from __future__ import annotations

import logging
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool

log = logging.getLogger(__name__)


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


def where_equal(**equal: Any) -> tuple[str, list[Any]]:
    """A WHERE clause of ``column = %s`` for every filter given (None means "any").

    Column names come from the caller's keyword names, never from user input.
    """
    clauses = [f"{column} = %s" for column, value in equal.items() if value is not None]
    params = [value for value in equal.values() if value is not None]
    return ("WHERE " + " AND ".join(clauses)) if clauses else "", params
