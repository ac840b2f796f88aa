"""Migrations and partition maintenance on the real (plain) PostgreSQL."""

from datetime import UTC, date, datetime

import core
import ingest
from core.migrations import apply_migrations, discover
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
    assert [m.name for m in discover(core, timescaledb=False)] == ["0001_fleet", "0002_sites", "0003_grafana_reader"]


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
