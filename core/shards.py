"""Spreading a consumer over processes: equipment hashed into virtual shards, each shard owned by
one database session at a time through a PostgreSQL advisory lock.

The lock is the whole coordination: a session that dies (a killed process, a lost connection)
loses its locks at once, and the others take the shards on their next rebalance; nothing of our
own decides who is alive. Every member also holds a membership lock, so each can count the live
members from ``pg_locks`` and aim at its fair share (``ceil(shards / members)``): a new member
finds free shards as the others hand over their surplus, a departed member's shards are free.

Writing through the session that holds the lock is what makes ownership safe: if the session is
gone, so is the transaction that would have written for a shard it no longer owns.
"""

from __future__ import annotations

import hashlib
import logging
import math
import zlib
from collections.abc import Iterable

import psycopg

log = logging.getLogger(__name__)

# Fixed for the life of a database: checkpoints are stored per shard. 64 spreads evenly over a
# few dozen workers at most, which is far more than one database serves.
SHARD_COUNT = 64


def shard_of(equipment_id: str, shard_count: int = SHARD_COUNT) -> int:
    """The shard of a machine; the SQL function ``equipment_shard`` computes the same."""
    return int(hashlib.md5(equipment_id.encode()).hexdigest()[:8], 16) % shard_count


def advisory_key(consumer: str, purpose: str) -> int:
    """A stable 32-bit advisory lock key per consumer and purpose (signed, as PostgreSQL takes it)."""
    value = zlib.crc32(f"ironsight:{consumer}:{purpose}".encode())
    return value - (1 << 32) if value >= 1 << 31 else value


def lock_class(consumer: str, purpose: str) -> int:
    """``pg_locks.classid`` (as a signed integer) of ``consumer``'s advisory locks: ``member`` (one per
    live member) or ``shard`` (one per owned shard); ``objid`` is the pid or the shard. Monitoring reads them."""
    return advisory_key(consumer, purpose)


class ShardLeases:
    """The shards this session owns for ``consumer``, and the moves towards its fair share.

    Call ``join`` once per connection, then ``surplus`` / ``release`` / ``acquire`` on the same
    connection. Locks are session-level: a rollback keeps them, closing the connection drops them.
    """

    def __init__(self, consumer: str, shard_count: int = SHARD_COUNT) -> None:
        self.consumer = consumer
        self.shard_count = shard_count
        self.owned: set[int] = set()
        self._shards_key = advisory_key(consumer, "shard")
        self._members_key = advisory_key(consumer, "member")

    def join(self, conn: psycopg.Connection) -> None:
        """Become a member (on a new connection: whatever was owned before went with the old one)."""
        self.owned.clear()
        conn.execute("SELECT pg_advisory_lock(%s, pg_backend_pid())", (self._members_key,))

    def members(self, conn: psycopg.Connection) -> int:
        row = conn.execute(
            """SELECT count(*) FROM pg_locks
               WHERE locktype = 'advisory' AND granted AND classid = %s::integer::oid AND objsubid = 2
                 AND database = (SELECT oid FROM pg_database WHERE datname = current_database())""",
            (self._members_key,)).fetchone()
        return max(1, int(row[0]) if row else 1)

    def fair_share(self, conn: psycopg.Connection) -> int:
        return math.ceil(self.shard_count / self.members(conn))

    def surplus(self, conn: psycopg.Connection) -> list[int]:
        """Owned shards beyond the fair share, to hand over (after saving their state)."""
        extra = len(self.owned) - self.fair_share(conn)
        return sorted(self.owned, reverse=True)[:extra] if extra > 0 else []

    def release(self, conn: psycopg.Connection, shards: Iterable[int]) -> None:
        for shard in list(shards):
            conn.execute("SELECT pg_advisory_unlock(%s, %s)", (self._shards_key, shard))
            self.owned.discard(shard)

    def acquire(self, conn: psycopg.Connection) -> list[int]:
        """Take free shards up to the fair share; returns the ones newly owned."""
        want = self.fair_share(conn) - len(self.owned)
        if want <= 0:
            return []
        free = self._unlocked(conn)
        # Start at a place of our own so that members joining together do not all race for shard 0.
        start = conn.info.backend_pid % self.shard_count
        free.sort(key=lambda s: (s - start) % self.shard_count)
        taken: list[int] = []
        for shard in free:
            if len(taken) >= want:
                break
            row = conn.execute("SELECT pg_try_advisory_lock(%s, %s)", (self._shards_key, shard)).fetchone()
            if row and row[0]:
                self.owned.add(shard)
                taken.append(shard)
        return taken

    def _unlocked(self, conn: psycopg.Connection) -> list[int]:
        # Locks of this very session are re-entrant: a new ShardLeases on the same connection (a
        # consumer object replaced in place) may take them over.
        locked = {int(r[0]) for r in conn.execute(
            """SELECT objid::bigint FROM pg_locks
               WHERE locktype = 'advisory' AND granted AND classid = %s::integer::oid AND objsubid = 2
                 AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
                 AND pid <> pg_backend_pid()""",
            (self._shards_key,))}
        return [s for s in range(self.shard_count) if s not in locked and s not in self.owned]


def shard_owners(conn: psycopg.Connection, consumer: str) -> dict[int, int]:
    """Which backend (pid) holds each owned shard of ``consumer`` right now."""
    return {int(shard): int(pid) for shard, pid in conn.execute(
        """SELECT objid::bigint, pid FROM pg_locks
           WHERE locktype = 'advisory' AND granted AND classid = %s::integer::oid AND objsubid = 2
             AND database = (SELECT oid FROM pg_database WHERE datname = current_database())""",
        (advisory_key(consumer, "shard"),))}
