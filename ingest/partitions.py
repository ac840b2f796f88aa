"""Daily partitions of ``readings`` on plain PostgreSQL (TimescaleDB makes its own chunks)."""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime, timedelta

import psycopg
from psycopg import sql

from core.db import one

log = logging.getLogger(__name__)

# Partitions exist this far back at first start (a backlog upload lands in place) and are kept
# this far ahead so that the writer never waits for DDL.
PARTITIONS_BACK_DAYS = 7
PARTITIONS_AHEAD_DAYS = 7


def readings_is_partitioned(conn: psycopg.Connection) -> bool:
    row = conn.execute(
        "SELECT 1 FROM pg_partitioned_table p JOIN pg_class c ON c.oid = p.partrelid "
        "WHERE c.relname = 'readings' AND c.relnamespace = to_regnamespace(current_schema())"
    ).fetchone()
    return row is not None


def ensure_partitions(conn: psycopg.Connection, today: date | None = None) -> list[str]:
    """Create the missing daily partitions around today, one transaction each; return their names.

    Call it on a connection with no transaction open, so that each partition commits on its own.
    """
    with conn.transaction():
        partitioned = readings_is_partitioned(conn)
    if not partitioned:
        return []
    today = today or datetime.now(UTC).date()
    created = []
    for offset in range(-PARTITIONS_BACK_DAYS, PARTITIONS_AHEAD_DAYS + 1):
        day = today + timedelta(days=offset)
        name = f"readings_p{day:%Y%m%d}"
        start = datetime(day.year, day.month, day.day, tzinfo=UTC)
        end = start + timedelta(days=1)
        with conn.transaction():
            exists = one(conn.execute("SELECT to_regclass(%s)", (name,)))[0]
            if exists:
                continue
            # Readings that arrived before this day had a partition sit in the default one;
            # a partition over them would be refused, so that day stays in the default.
            stray = conn.execute(
                "SELECT 1 FROM readings_default WHERE ts >= %s AND ts < %s LIMIT 1", (start, end)
            ).fetchone()
            if stray:
                log.warning("readings for %s are in the default partition; not creating %s", day, name)
                continue
            conn.execute(
                sql.SQL("CREATE TABLE {} PARTITION OF readings FOR VALUES FROM ({}) TO ({})").format(
                    sql.Identifier(name), sql.Literal(start), sql.Literal(end)
                )
            )
            created.append(name)
    if created:
        log.info("created readings partitions %s … %s", created[0], created[-1])
    return created
