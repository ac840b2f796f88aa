"""Shard leases on the real database: the hash agrees with SQL, members share fairly, and a session
that ends gives its shards up."""

import psycopg

from core.shards import SHARD_COUNT, ShardLeases, shard_of, shard_owners


def test_python_and_sql_put_a_machine_in_the_same_shard(conn):
    ids = [f"EX-{i}" for i in range(500)] + ["a", "Z.9_-", "x" * 64]
    in_sql = dict(conn.execute("SELECT id, equipment_shard(id, %s) FROM unnest(%s::text[]) AS id",
                               (SHARD_COUNT, ids)).fetchall())
    assert in_sql == {e: shard_of(e) for e in ids}
    assert len(set(in_sql.values())) == SHARD_COUNT  # 500 machines reach every shard


def test_members_take_their_fair_share_and_a_departed_members_shards_are_free(database_url):
    sessions = [psycopg.connect(database_url, autocommit=True) for _ in range(3)]
    leases = [ShardLeases("test") for _ in sessions]
    try:
        first = leases[0]
        first.join(sessions[0])
        assert len(first.acquire(sessions[0])) == SHARD_COUNT
        for lease, session in zip(leases[1:], sessions[1:], strict=True):
            lease.join(session)
        # Three members: the first hands over its surplus, the others take what is free.
        surplus = first.surplus(sessions[0])
        assert len(surplus) == SHARD_COUNT - 22
        first.release(sessions[0], surplus)
        for lease, session in zip(leases[1:], sessions[1:], strict=True):
            lease.acquire(session)
        owned = [lease.owned for lease in leases]
        assert [len(o) for o in owned] == [22, 22, 20]
        assert set().union(*owned) == set(range(SHARD_COUNT)) and sum(len(o) for o in owned) == SHARD_COUNT
        owners = shard_owners(sessions[1], "test")
        assert {owners[s] for s in owned[2]} == {sessions[2].info.backend_pid}

        # The third member's session ends: its shards are free, and the two left share everything.
        sessions[2].close()
        for lease, session in zip(leases[:2], sessions[:2], strict=True):
            lease.acquire(session)
        assert len(leases[0].owned) + len(leases[1].owned) == SHARD_COUNT
        assert len(shard_owners(sessions[0], "test")) == SHARD_COUNT
        # Other consumers' shards are other locks.
        assert shard_owners(sessions[0], "other") == {}
    finally:
        for session in sessions:
            session.close()
