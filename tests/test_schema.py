"""Migrations and partition maintenance on the real (plain) PostgreSQL."""

import re
from datetime import UTC, date, datetime

import core
import ingest
from core.migrations import apply_migrations, discover
from core.shards import SHARD_COUNT
from ingest.partitions import PARTITIONS_AHEAD_DAYS, PARTITIONS_BACK_DAYS, ensure_partitions
from ironsight.schema import SCHEMA_PACKAGES


def test_migrations_are_idempotent(conn):
    assert apply_migrations(conn, SCHEMA_PACKAGES) == []


def test_the_timescaledb_or_plain_variant_is_chosen_under_one_name():
    plain = {m.name: m.path.name for m in discover(ingest, timescaledb=False)}
    timescale = {m.name: m.path.name for m in discover(ingest, timescaledb=True)}
    assert plain["0001_readings"] == "0001_readings.plain.sql"
    assert timescale["0001_readings"] == "0001_readings.timescaledb.sql"
    assert plain.keys() == timescale.keys()
    assert [m.name for m in discover(core, timescaledb=False)] == ["0001_fleet", "0002_sites", "0003_grafana_reader",
                                                                           "0004_shards", "0005_customers"]


def test_plain_path_partitions_by_day_and_parks_strays_in_the_default(conn):
    conn.execute("INSERT INTO equipment (id, serial, model, kind, customer) VALUES ('EX-1', 'S', 'M', 'k', 'c')")
    conn.commit()
    assert conn.execute("SELECT extname FROM pg_extension WHERE extname = 'timescaledb'").fetchone() is None
    far_future = date(2031, 3, 1)
    # A reading for a day without a partition lands in the default partition …
    conn.execute("INSERT INTO readings (equipment_id, ts, oil_temp_c) VALUES ('EX-1', %s, 80)",
                 (datetime(2031, 3, 4, 12, tzinfo=UTC),))
    conn.commit()
    created = ensure_partitions(conn, today=far_future)
    # … so that day keeps no partition of its own, while every other day around gets one.
    assert len(created) == PARTITIONS_BACK_DAYS + PARTITIONS_AHEAD_DAYS
    assert "readings_p20310304" not in created and "readings_p20310301" in created
    assert ensure_partitions(conn, today=far_future) == []
    conn.execute("INSERT INTO readings (equipment_id, ts, oil_temp_c) VALUES ('EX-1', %s, 81)",
                 (datetime(2031, 3, 2, 8, tzinfo=UTC),))
    placed = conn.execute("SELECT tableoid::regclass::text, oil_temp_c FROM readings ORDER BY ts").fetchall()
    assert placed == [("readings_p20310302", 81.0), ("readings_default", 80.0)]
    conn.rollback()
    for name in created:
        conn.execute(f"DROP TABLE {name}")
    conn.commit()


def test_upgrade_keeps_the_accepted_batches_diagnostics_has_not_read_yet(new_database, monkeypatch):
    """0004 turns the jsonb spans of waiting batches into arrays; diagnostics still finds their readings."""
    from core import migrations
    from core.db import connect
    from diagnostics.worker import _NEW_READINGS

    discover_all = migrations.discover
    monkeypatch.setattr(migrations, "discover", lambda package, *, timescaledb: [
        m for m in discover_all(package, timescaledb=timescaledb) if not (package is ingest and m.name >= "0004")])
    with connect(new_database("upgrade")) as conn:
        apply_migrations(conn, SCHEMA_PACKAGES)
        conn.execute("INSERT INTO equipment (id, serial, model, kind, customer) VALUES ('EX-1', 'S', 'M', 'k', 'c'), "
                     "('EX-2', 'S2', 'M', 'k', 'c')")
        conn.commit()
        ts = [datetime(2026, 5, 1, 12, m, tzinfo=UTC) for m in range(3)]
        # One batch as the old writer committed it: readings and their spans in one transaction.
        conn.execute("INSERT INTO readings (equipment_id, ts, oil_temp_c) VALUES "
                     "('EX-1', %s, 80), ('EX-1', %s, 81), ('EX-2', %s, 70)", ts)
        batch_id = conn.execute(
            "INSERT INTO accepted_batches (readings, spans) VALUES (3, jsonb_build_array("
            "jsonb_build_object('equipment_id', 'EX-2', 'first_ts', %s::timestamptz, 'last_ts', %s::timestamptz),"
            "jsonb_build_object('equipment_id', 'EX-1', 'first_ts', %s::timestamptz, 'last_ts', %s::timestamptz)"
            ")) RETURNING id", (ts[2], ts[2], ts[0], ts[1])).fetchone()[0]
        conn.commit()

        monkeypatch.undo()
        # 0004 and 0005 first, then whatever later ingest migrations exist.
        applied = apply_migrations(conn, SCHEMA_PACKAGES)
        assert applied[:2] == ["ingest/0004_write_path", "ingest/0005_notify"]
        assert all(name.startswith("ingest/") for name in applied)
        every_shard = list(range(SHARD_COUNT))
        found = [(row[0], row[1]) for row in conn.execute(_NEW_READINGS, {
            "shards": every_shard, "xids": ["0"] * SHARD_COUNT, "ids": [0] * SHARD_COUNT, "batches": [batch_id]})]
        assert found == [("EX-1", ts[0].timestamp()), ("EX-1", ts[1].timestamp()), ("EX-2", ts[2].timestamp())]
        assert conn.execute("SELECT column_name FROM information_schema.columns "
                            "WHERE table_name = 'accepted_batches' AND column_name = 'spans'").fetchone() is None


def test_the_device_states_the_database_allows_are_the_registry_s(conn):
    from devices.registry import DEVICE_STATES

    checks = [row[0] for row in conn.execute(
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = 'devices'::regclass AND contype = 'c'")]
    [allowed] = [check for check in checks if re.search(r"\(state = ANY", check)]
    assert sorted(re.findall(r"'(\w+)'::text", allowed)) == sorted(DEVICE_STATES)


def test_the_ticket_kinds_and_channels_the_database_allows_are_the_code_s(conn):
    from tickets.service import TICKET_CHANNELS
    from tickets.sla import TICKET_KINDS

    def allowed(constraint: str) -> set[str]:
        definition = conn.execute("SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = %s",
                                  (constraint,)).fetchone()[0]
        return set(re.findall(r"'(\w+)'::text", definition))

    assert allowed("tickets_kind_check") == set(TICKET_KINDS)
    assert allowed("contract_tier_limits_kind_check") == set(TICKET_KINDS)
    assert allowed("tickets_channel_check") == set(TICKET_CHANNELS)
