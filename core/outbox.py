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


def fetch_after(
    conn: psycopg.Connection, table: str, cursor: tuple[str, int], *, limit: int,
    columns: tuple[str, ...] | None = None,
) -> list[dict[str, Any]]:
    """Rows of ``table`` after ``cursor`` whose writers have all finished, oldest first: every
    column, or ``columns`` (plus ``id``) when a consumer needs only those.

    Each row carries ``cursor_xid`` (its xid as text) so that (cursor_xid, id) can be saved as the cursor.
    """
    selected = (sql.SQL("t.*") if columns is None
                else sql.SQL(", ").join(sql.Identifier("t", c) for c in ("id", *columns)))
    query = sql.SQL(
        """SELECT {selected}, t.xid::text AS cursor_xid FROM {table} AS t
           WHERE (xid, id) > (%s::xid8, %s)
             AND xid < pg_snapshot_xmin(pg_current_snapshot())
           ORDER BY xid, id
           LIMIT %s"""
    ).format(selected=selected, table=sql.Identifier(table))
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(query, (cursor[0], cursor[1], limit)).fetchall()


# --- consumers spread over shards (core.shards) ---

def load_checkpoints(conn: psycopg.Connection, consumer: str,
                     shards: list[int]) -> dict[int, tuple[tuple[str, int], bytes | None]]:
    """Each shard's saved cursor and state. A shard never checkpointed starts where the consumer's
    single cursor was (a consumer that ran unsharded before), or at the beginning."""
    found = {row[0]: ((row[1], row[2]), row[3]) for row in conn.execute(
        """SELECT shard, last_xid::text, last_id, state FROM shard_checkpoints
           WHERE consumer = %s AND shard = ANY(%s)""", (consumer, shards))}
    legacy = load_cursor(conn, consumer)
    return {shard: found.get(shard, (legacy, None)) for shard in shards}


def save_checkpoint(conn: psycopg.Connection, consumer: str, shard: int, cursor: tuple[str, int],
                    state: bytes | None, saved_by: str) -> None:
    conn.execute(
        """INSERT INTO shard_checkpoints (consumer, shard, last_xid, last_id, state, saved_at, saved_by,
                                          progress_xid, progress_id, progress_at)
           VALUES (%s, %s, %s::xid8, %s, %s, now(), %s, %s::xid8, %s, now())
           ON CONFLICT (consumer, shard) DO UPDATE SET last_xid = EXCLUDED.last_xid, last_id = EXCLUDED.last_id,
               state = EXCLUDED.state, saved_at = now(), saved_by = EXCLUDED.saved_by,
               progress_xid = EXCLUDED.last_xid, progress_id = EXCLUDED.last_id, progress_at = now()""",
        (consumer, shard, cursor[0], cursor[1], state, saved_by, cursor[0], cursor[1]))


def save_cursors(conn: psycopg.Connection, consumer: str, shards: list[int], cursor: tuple[str, int]) -> None:
    """Move these shards' cursors to one position (a consumer without state of its own)."""
    if shards:
        conn.execute(
            """INSERT INTO shard_checkpoints (consumer, shard, last_xid, last_id, saved_at, progress_xid,
                                              progress_id, progress_at)
               SELECT %s, shard, %s::xid8, %s, now(), %s::xid8, %s, now() FROM unnest(%s::integer[]) AS shard
               ON CONFLICT (consumer, shard) DO UPDATE SET last_xid = EXCLUDED.last_xid,
                   last_id = EXCLUDED.last_id, saved_at = now(), progress_xid = EXCLUDED.last_xid,
                   progress_id = EXCLUDED.last_id, progress_at = now()""",
            (consumer, cursor[0], cursor[1], cursor[0], cursor[1], shards))


def save_progress(conn: psycopg.Connection, consumer: str, shards: list[int], cursor: tuple[str, int]) -> None:
    """Record how far these (checkpointed) shards have been consumed, without their state."""
    if shards:
        conn.execute(
            """UPDATE shard_checkpoints SET progress_xid = %s::xid8, progress_id = %s, progress_at = now()
               WHERE consumer = %s AND shard = ANY(%s)""", (cursor[0], cursor[1], consumer, shards))


def lag_seconds(conn: psycopg.Connection, table: str, consumer: str) -> float:
    """How long the oldest row of ``table`` not yet consumed by every shard of ``consumer`` has
    waited (0 when all is consumed); by the shards' progress, else their checkpoints."""
    row = conn.execute(sql.SQL(
        """WITH behind AS (
               SELECT coalesce(progress_xid, last_xid) AS xid, coalesce(progress_id, last_id) AS id
               FROM shard_checkpoints WHERE consumer = %s ORDER BY 1, 2 LIMIT 1)
           SELECT extract(epoch FROM now() - min(t.accepted_at))::float8
           FROM {table} t, behind WHERE (t.xid, t.id) > (behind.xid, behind.id)""").format(
        table=sql.Identifier(table)), (consumer,)).fetchone()
    return float(row[0]) if row and row[0] is not None else 0.0


def cursor_key(cursor: tuple[str, int]) -> tuple[int, int]:
    """A cursor as comparable numbers (xid8 is 64-bit; as text it would sort wrongly)."""
    return int(cursor[0]), cursor[1]


def oldest(cursors: dict[int, tuple[str, int]]) -> tuple[str, int] | None:
    """The oldest of a sharded consumer's cursors (where its next read starts); None without shards."""
    return min(cursors.values(), key=cursor_key) if cursors else None


def advance(cursors: dict[int, tuple[str, int]], last: tuple[str, int]) -> list[int]:
    """Move every cursor behind ``last`` to it (a read from the oldest cursor to ``last`` has seen
    everything every shard had not); returns the shards that moved."""
    moved = [shard for shard, cursor in cursors.items() if cursor_key(last) > cursor_key(cursor)]
    for shard in moved:
        cursors[shard] = last
    return moved

