"""Reading an append-only table in commit-safe order, with a durable cursor per consumer.

Producers insert rows carrying ``xid xid8 DEFAULT pg_current_xact_id()``. A consumer takes rows
whose transaction ended before the oldest one still running (the snapshot's xmin): no row with a
smaller (xid, id) can appear after that, so advancing the cursor never skips a late commit.
The cursor is stored in the consumer's own transaction, together with what it produced.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row


def load_cursor(conn: psycopg.Connection, consumer: str) -> tuple[str, int]:
    row = conn.execute(
        "SELECT last_xid::text, last_id FROM consumer_cursors WHERE consumer = %s", (consumer,)
    ).fetchone()
    return (row[0], row[1]) if row else ("0", 0)


def save_cursor(conn: psycopg.Connection, consumer: str, cursor: tuple[str, int]) -> None:
    conn.execute(
        """INSERT INTO consumer_cursors (consumer, last_xid, last_id, updated_at)
           VALUES (%s, %s::xid8, %s, now())
           ON CONFLICT (consumer) DO UPDATE
           SET last_xid = EXCLUDED.last_xid, last_id = EXCLUDED.last_id, updated_at = now()""",
        (consumer, cursor[0], cursor[1]),
    )


def fetch_after(
    conn: psycopg.Connection, table: str, cursor: tuple[str, int], *, limit: int
) -> list[dict[str, Any]]:
    """Rows of ``table`` after ``cursor`` whose writers have all finished, oldest first.

    Each row carries ``cursor_xid`` (its xid as text) so that (cursor_xid, id) can be saved as the cursor.
    """
    query = sql.SQL(
        """SELECT t.*, t.xid::text AS cursor_xid FROM {table} AS t
           WHERE (xid, id) > (%s::xid8, %s)
             AND xid < pg_snapshot_xmin(pg_current_snapshot())
           ORDER BY xid, id
           LIMIT %s"""
    ).format(table=sql.Identifier(table))
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(query, (cursor[0], cursor[1], limit)).fetchall()
