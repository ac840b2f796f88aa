"""The TimescaleDB path, tried on a real TimescaleDB.

Runs when ``IRONSIGHT_TEST_TIMESCALEDB_URL`` names a PostgreSQL server with the timescaledb
extension (docs/timescaledb.md: how to build and start one); skipped otherwise (CI has none).
Every database is created for the run on that server and dropped after (conftest's
``new_timescaledb_database``).

Besides the tests written here (the migration's hypertable and policies, the policies run, the writer
across chunks and into compressed chunks, the hourly rollups over compressed chunks, every dashboard
query on real ``time_bucket`` and on compressed chunks, diagnostics once a chunk is compressed),
this module collects tests of other modules again so that they run, unchanged, on TimescaleDB: its
``database_url`` (and so ``conn`` and ``settings``) is a migrated TimescaleDB database emptied before
each test, and its ``migrated_database_url`` — which test_dashboards' ``seeded`` fixture reads — is a
second one for the seeded fleet. Imported names that start with ``test_`` are collected here as tests.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from conftest import TIMESCALEDB_SKIP_REASON, empty_database  # tests/conftest.py, as pytest imported it

import dashboards.render as render
import tests.test_dashboards as dashboards_tests
import tests.test_ingest as ingest_tests
import tests.test_pipeline as pipeline_tests
import tests.test_portal as portal_tests
from core.register import EquipmentRecord, register_equipment
from core.telemetry import FaultCode, Reading
from dashboards.grafana_macros import TimeRange
from dashboards.verify import check_dashboards
from diagnostics.worker import DiagnosticsWorker
from ingest import queries
from ingest.partitions import ensure_partitions
from ingest.writer import AVERAGED, Batch, BatchWriter
from ironsight.schema import migrate
from tests.helpers import drain_outbox

# Tests of other modules, collected again here to run unchanged on TimescaleDB, with their fixtures.
# The ingest path through the real broker and worker:
ingesting = ingest_tests.ingesting
test_ingest_bad_payloads = (
    ingest_tests.test_bad_payloads_become_dead_letters_and_good_readings_in_between_are_all_stored)
test_ingest_one_bad_reading = ingest_tests.test_a_message_with_one_bad_reading_keeps_the_good_ones
test_ingest_redelivered = (
    ingest_tests.test_redelivered_and_overlapping_messages_are_stored_once_and_latest_state_follows_time)
test_ingest_refused = ingest_tests.test_a_message_the_database_refuses_is_dead_lettered_and_the_rest_of_its_batch_stored
test_ingest_binary = ingest_tests.test_binary_telemetry_is_stored_like_json_and_bad_binary_is_dead_lettered
# Diagnostics, alarms and the whole pipeline (broker, ingest, diagnostics, alarms, API) on a hypertable:
test_pipeline_diagnostics = pipeline_tests.test_diagnostics_raise_and_clear_a_fault_and_resume_after_restart
test_pipeline_end_to_end = pipeline_tests.test_end_to_end_a_faulty_controller_gets_one_ticket_and_healthy_ones_none
# The customer portal over HTTP, long histories from the rollups against raw readings included:
portal = portal_tests.portal
test_portal_fleet = portal_tests.test_fleet_shows_my_machines_with_position_hours_fuel_alarms_and_next_service
test_portal_history = portal_tests.test_history_is_raw_for_short_periods_and_bucketed_for_long_ones
test_portal_track_usage_service_record = portal_tests.test_track_usage_and_service_record
test_portal_survey = portal_tests.test_a_customer_submits_the_survey_of_its_ticket
test_portal_csv_export = portal_tests.test_csv_export_streams_every_reading_of_the_period
test_portal_rollups_equal_raw = portal_tests.test_long_histories_come_from_the_hourly_rollups_and_equal_the_raw_answer
# The dashboards on the seeded fleet (every query: test_every_dashboard_query_… below):
seeded = dashboards_tests.seeded
test_dashboards_seeded_fleet = dashboards_tests.test_the_seeded_fleet_has_what_the_dashboards_show
test_dashboards_fleet_map_states = dashboards_tests.test_the_fleet_map_colours_each_machine_by_its_state
test_dashboards_machine_diagnosis = dashboards_tests.test_the_machine_dashboard_shows_the_diagnosis_and_the_model_limit
test_dashboards_reader_role = dashboards_tests.test_the_reader_role_migration_is_idempotent_and_only_reads

pytestmark = pytest.mark.skipif(not os.environ.get("IRONSIGHT_TEST_TIMESCALEDB_URL"), reason=TIMESCALEDB_SKIP_REASON)

ROOT = Path(__file__).resolve().parents[1]
MIGRATION = ROOT / "ingest" / "migrations" / "0001_readings.timescaledb.sql"


# --- databases ---


@pytest.fixture(scope="module")
def migrated_database_url(new_timescaledb_database: Callable[[str], str]) -> str:
    """The seeded fleet's database (test_dashboards' ``seeded`` reads this name)."""
    url = new_timescaledb_database("dashboards")
    migrate(url)
    return url


@pytest.fixture(scope="module")
def timescaledb_url(new_timescaledb_database: Callable[[str], str]) -> str:
    url = new_timescaledb_database("main")
    migrate(url)
    return url


@pytest.fixture
def database_url(timescaledb_url: str) -> str:
    """The module's TimescaleDB database, emptied before the test (conftest's ``conn`` and
    ``settings`` follow it)."""
    empty_database(timescaledb_url)
    return timescaledb_url


def _compress_all(conn: psycopg.Connection, older_than: timedelta | None = None) -> int:
    """Compress every chunk of readings (or those older than ``older_than``); the number compressed."""
    with conn.transaction():
        chunks = conn.execute(
            "SELECT c::text FROM show_chunks('readings', older_than => %s::interval) c", (older_than,)).fetchall()
    for (chunk,) in chunks:
        with conn.transaction():
            conn.execute("SELECT compress_chunk(%s::regclass, if_not_compressed => true)", (chunk,))
    return len(chunks)


def _decompress_all(conn: psycopg.Connection) -> None:
    for (chunk,) in conn.execute("SELECT c::text FROM show_chunks('readings') c").fetchall():
        with conn.transaction():
            conn.execute("SELECT decompress_chunk(%s::regclass, if_compressed => true)", (chunk,))


def _chunks(conn: psycopg.Connection) -> list[tuple[datetime, datetime, bool]]:
    rows = conn.execute(
        "SELECT range_start, range_end, is_compressed FROM timescaledb_information.chunks "
        "WHERE hypertable_name = 'readings' ORDER BY range_start").fetchall()
    conn.commit()
    return rows


def _readings(equipment_id: str, start: datetime, count: int, step: timedelta, *, oil: float = 80.0,
              lat: float = 51.9) -> list[tuple[str, Reading]]:
    return [(equipment_id, Reading(
        ts=start + i * step, oil_temp_c=oil + i % 5, engine_rpm=900.0 + 10 * (i % 90), hydraulic_pressure_bar=200.0,
        coolant_temp_c=85.0, fuel_level_pct=90.0 - i * 0.01, engine_hours=1000.0 + i * step.total_seconds() / 3600,
        lat=lat + i * 1e-5 if i % 7 else None, lon=4.1 + i * 1e-5 if i % 7 else None, speed_kmh=float(i % 11),
        fault_codes=(FaultCode(110, 0, 1),) if i % 50 == 0 else ())) for i in range(count)]


def _midnight(ts: datetime) -> datetime:
    """The start of ts's day (UTC): the start of its daily chunk."""
    return ts.replace(hour=0, minute=0, second=0, microsecond=0)


def _register(conn: psycopg.Connection, *ids: str) -> None:
    register_equipment(conn, [EquipmentRecord(i, f"S-{i}", "EX210", "excavator", "acme") for i in ids])


# --- the migration ---


def _migration_says(pattern: str) -> str:
    found = re.search(pattern, MIGRATION.read_text(), re.IGNORECASE)
    assert found, f"{MIGRATION.name} no longer says {pattern}"
    return found.group(1)


def test_readings_is_a_hypertable_with_the_chunks_compression_and_retention_its_migration_sets(conn):
    chunk_interval = _migration_says(r"chunk_time_interval\s*=>\s*INTERVAL\s*'([^']+)'")
    compress_after = _migration_says(r"add_compression_policy\(\s*'readings'\s*,\s*INTERVAL\s*'([^']+)'")
    drop_after = _migration_says(r"add_retention_policy\(\s*'readings'\s*,\s*INTERVAL\s*'([^']+)'")
    segment_by = _migration_says(r"compress_segmentby\s*=\s*'([^']+)'")
    order_by = _migration_says(r"compress_orderby\s*=\s*'([^']+)'")
    assert (segment_by, order_by) == ("equipment_id", "ts DESC")

    assert conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'").fetchone()
    hypertables = conn.execute(
        "SELECT hypertable_name, num_dimensions, compression_enabled FROM timescaledb_information.hypertables"
    ).fetchall()
    assert hypertables == [("readings", 1, True)], "readings, and only readings, is a hypertable"
    (column, same_interval), = conn.execute(
        "SELECT column_name, time_interval = %s::interval FROM timescaledb_information.dimensions "
        "WHERE hypertable_name = 'readings'", (chunk_interval,)).fetchall()
    assert (column, same_interval) == ("ts", True)
    settings = conn.execute(
        "SELECT attname, segmentby_column_index, orderby_column_index, orderby_asc "
        "FROM timescaledb_information.compression_settings WHERE hypertable_name = 'readings' "
        "ORDER BY attname").fetchall()
    assert settings == [("equipment_id", 1, None, None), ("ts", None, 1, False)]
    jobs = dict(conn.execute(
        """SELECT proc_name, CASE proc_name
                      WHEN 'policy_compression' THEN (config ->> 'compress_after')::interval = %s::interval
                      WHEN 'policy_retention' THEN (config ->> 'drop_after')::interval = %s::interval END
           FROM timescaledb_information.jobs WHERE hypertable_name = 'readings'""",
        (compress_after, drop_after)).fetchall())
    assert jobs == {"policy_compression": True, "policy_retention": True}

    # The pair's TimescaleDB half ran under the migration's one name; nothing of the plain half exists.
    assert conn.execute("SELECT count(*) FROM schema_migrations WHERE package = 'ingest' AND name = '0001_readings'"
                        ).fetchone()[0] == 1
    assert conn.execute("SELECT to_regclass('readings_default')").fetchone()[0] is None
    assert conn.execute("SELECT array_agg(a.attname ORDER BY k.n) FROM pg_index i "
                        "CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, n) "
                        "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum "
                        "WHERE i.indrelid = 'readings'::regclass AND i.indisprimary").fetchone()[0] == [
        "equipment_id", "ts"]
    conn.commit()
    assert ensure_partitions(conn) == [], "no daily partitions on a hypertable"
    assert migrate(conn.info.dsn) == [], "migrating again applies nothing"


def test_the_policies_compress_week_old_chunks_and_drop_readings_past_retention(conn):
    _register(conn, "EX-1")
    now = datetime.now(UTC).replace(microsecond=0)
    ages = {"recent": timedelta(hours=2), "last week": timedelta(days=10), "past retention": timedelta(days=420)}
    writer = BatchWriter(conn, "test", now)
    for age in ages.values():
        writer.write(Batch(messages=1, readings=_readings("EX-1", now - age, 30, timedelta(seconds=10)),
                           sequences={"EX-1": [1]}))
    conn.autocommit = True
    jobs = dict(conn.execute("SELECT proc_name, job_id FROM timescaledb_information.jobs "
                             "WHERE hypertable_name = 'readings'").fetchall())
    conn.execute("CALL run_job(%s)", (jobs["policy_compression"],))
    compressed = {start: is_compressed for start, _, is_compressed in _chunks(conn)}
    assert len(compressed) == 3
    newest, *older = sorted(compressed, reverse=True)
    assert not compressed[newest] and all(compressed[c] for c in older), compressed
    conn.execute("CALL run_job(%s)", (jobs["policy_retention"],))
    conn.autocommit = False
    assert len(_chunks(conn)) == 2
    left = conn.execute("SELECT min(ts), count(*) FROM readings").fetchone()
    assert left == (now - ages["last week"], 60)


# --- the writer ---


def _rollups_from_raw(conn: psycopg.Connection) -> dict[tuple[str, datetime], tuple]:
    rows = conn.execute(f"""
        SELECT equipment_id, date_bin('1 hour', ts, TIMESTAMPTZ '2000-01-01 00:00+00'), count(*),
               {", ".join(f"coalesce(sum({c}::float8), 0), count({c})" for c in AVERAGED)}, max(engine_hours),
               max(ts) FILTER (WHERE lat IS NOT NULL AND lon IS NOT NULL),
               (array_agg(lat ORDER BY ts DESC) FILTER (WHERE lat IS NOT NULL AND lon IS NOT NULL))[1],
               (array_agg(lon ORDER BY ts DESC) FILTER (WHERE lat IS NOT NULL AND lon IS NOT NULL))[1]
        FROM readings GROUP BY 1, 2""").fetchall()
    return {(r[0], r[1]): r[2:] for r in rows}


def _rollups_stored(conn: psycopg.Connection) -> dict[tuple[str, datetime], tuple]:
    rows = conn.execute(f"""
        SELECT equipment_id, hour, samples, {", ".join(f"{c}_sum, {c}_n" for c in AVERAGED)}, engine_hours_max,
               position_ts, lat, lon
        FROM readings_hourly""").fetchall()
    return {(r[0], r[1]): r[2:] for r in rows}


def _assert_rollups_match_raw(conn: psycopg.Connection) -> None:
    raw, stored = _rollups_from_raw(conn), _rollups_stored(conn)
    conn.commit()
    assert raw and sorted(stored) == sorted(raw)
    for key, expected in raw.items():
        # samples, each averaged channel's sum and count, highest engine hours; the hour's last position.
        assert stored[key][:-3] == pytest.approx(expected[:-3], rel=1e-9), key
        assert stored[key][-3:] == expected[-3:], key


def test_the_writer_stores_batches_across_chunks_once_with_state_rollups_and_outbox(conn):
    _register(conn, "EX-1", "EX-2")
    now = datetime.now(UTC).replace(microsecond=0)
    start = now - timedelta(days=3)
    readings = (_readings("EX-1", start, 432, timedelta(minutes=10))
                + _readings("EX-2", start + timedelta(seconds=5), 432, timedelta(minutes=10), oil=70.0))
    writer = BatchWriter(conn, "ingest-ts", now)
    assert writer.write(Batch(messages=40, readings=readings, sequences={"EX-1": [7], "EX-2": [9]})).stored == 864
    assert len(_chunks(conn)) >= 3, "three days of daily chunks"
    # The same batch again (a redelivery): the plain insert meets a stored reading, the retry with
    # ON CONFLICT DO NOTHING stores nothing, and nothing downstream counts it twice.
    again = writer.write(Batch(messages=40, readings=readings, sequences={"EX-1": [8], "EX-2": [10]}))
    assert (again.stored, again.duplicate) == (0, 864)
    assert conn.execute("SELECT count(*), count(DISTINCT (equipment_id, ts)) FROM readings").fetchone() == (864, 864)
    assert conn.execute("SELECT count(*), sum(readings) FROM accepted_batches").fetchone() == (1, 864)
    assert conn.execute("SELECT readings_stored, readings_duplicate, messages FROM ingest_stats "
                        "WHERE worker = 'ingest-ts'").fetchone() == (864, 864, 80)
    state = conn.execute("SELECT equipment_id, last_ts, last_seq FROM equipment_state ORDER BY 1").fetchall()
    assert state == [("EX-1", start + 431 * timedelta(minutes=10), 8),
                     ("EX-2", start + timedelta(seconds=5) + 431 * timedelta(minutes=10), 10)]
    stored_codes = conn.execute("SELECT fault_codes FROM readings WHERE equipment_id = 'EX-1' AND ts = %s",
                                (start,)).fetchone()[0]
    assert stored_codes == [{"spn": 110, "fmi": 0, "oc": 1}]
    conn.commit()
    _assert_rollups_match_raw(conn)


def test_late_readings_land_in_compressed_chunks_once_and_the_rollups_follow(conn):
    """A backlog upload older than the compression age: new readings go into the compressed chunk,
    readings it already holds are recognised as duplicates (unique check against compressed data)."""
    _register(conn, "EX-1")
    now = datetime.now(UTC).replace(microsecond=0)
    start = _midnight(now - timedelta(days=10)) + timedelta(hours=1)  # an hour of readings in one chunk
    writer = BatchWriter(conn, "ingest-ts", now)
    old = _readings("EX-1", start, 360, timedelta(seconds=10))
    writer.write(Batch(messages=1, readings=old, sequences={"EX-1": [1]}))
    writer.write(Batch(messages=1, readings=_readings("EX-1", now - timedelta(minutes=5), 30, timedelta(seconds=10)),
                       sequences={"EX-1": [2]}))
    conn.autocommit = True
    assert _compress_all(conn, older_than=timedelta(days=7)) == 1
    conn.autocommit = False
    compressed = [c for _, _, c in _chunks(conn)]
    assert compressed[0] and not any(compressed[1:])

    late = old[100:110] + [("EX-1", Reading(ts=start + timedelta(seconds=5 + 10 * i), oil_temp_c=120.0, lat=52.0,
                                            lon=4.2, engine_hours=5000.0)) for i in range(20)]
    result = writer.write(Batch(messages=2, readings=late, sequences={"EX-1": [3]}))
    assert (result.stored, result.duplicate) == (20, 10)
    assert conn.execute("SELECT count(*) FROM readings").fetchone()[0] == 360 + 30 + 20
    assert conn.execute("SELECT count(*) FROM readings WHERE oil_temp_c = 120").fetchone()[0] == 20
    conn.commit()
    _assert_rollups_match_raw(conn)
    # The latest state is not moved back by the late readings.
    assert conn.execute("SELECT last_ts FROM equipment_state").fetchone()[0] == now - timedelta(minutes=5) + 29 * (
        timedelta(seconds=10))
    # All of it compressed again (the policy recompresses partial chunks): still the same answers.
    conn.commit()
    conn.autocommit = True
    _compress_all(conn)
    conn.autocommit = False
    assert all(c for _, _, c in _chunks(conn))
    _assert_rollups_match_raw(conn)


# --- the hourly rollups ---


def test_histories_from_rollups_equal_the_raw_answer_over_compressed_chunks(conn):
    """ingest.queries reads whole hours from readings_hourly and the partial hours at either end from
    readings: with every chunk compressed, both answers still agree (portal and API histories)."""
    _register(conn, "EX-1")
    now = datetime.now(UTC).replace(microsecond=0)
    start = now - timedelta(days=9, minutes=17)
    BatchWriter(conn, "ingest-ts", now).write(Batch(
        messages=1, readings=_readings("EX-1", start, 9 * 24 * 12, timedelta(minutes=5)), sequences={"EX-1": [1]}))
    conn.autocommit = True
    assert _compress_all(conn) >= 9
    conn.autocommit = False
    for period_start, bucket in ((now - timedelta(days=30), timedelta(days=1)),
                                 (now - timedelta(days=8, hours=5, minutes=7), timedelta(hours=1)),
                                 (now - timedelta(hours=7, minutes=59), timedelta(hours=2))):
        rolled = queries.readings(conn, "EX-1", period_start, now, bucket, 10_000)
        raw = queries.readings(conn, "EX-1", period_start, now, bucket, 10_000, rollups=False)
        conn.commit()
        assert rolled and [r["ts"] for r in rolled] == [r["ts"] for r in raw], bucket
        for a, b in zip(rolled, raw, strict=True):
            assert a["samples"] == b["samples"]
            assert (a["lat"], a["lon"], a["engine_hours"]) == (b["lat"], b["lon"], b["engine_hours"])
            for channel in ("oil_temp_c", "engine_rpm", "fuel_level_pct", "speed_kmh"):
                assert a[channel] == pytest.approx(b[channel], rel=1e-6), channel
    raw_rows = queries.readings(conn, "EX-1", now - timedelta(days=9, hours=1), now, None, 100_000)
    assert len(raw_rows) == 9 * 24 * 12
    conn.commit()
    _assert_rollups_match_raw(conn)


# --- diagnostics ---


def test_diagnostics_reads_new_batches_once_a_chunk_is_compressed(conn):
    _register(conn, "EX-1")
    now = datetime.now(UTC).replace(microsecond=0)
    writer = BatchWriter(conn, "ingest-ts", now)
    writer.write(Batch(messages=1, readings=_readings("EX-1", _midnight(now - timedelta(days=10)), 30,
                                                      timedelta(seconds=10)), sequences={"EX-1": [1]}))
    diagnostics = DiagnosticsWorker(conn.info.dsn)
    drain_outbox(diagnostics.process_available, conn, "accepted_batches", diagnostics.position, timeout_s=30)
    conn.autocommit = True
    assert _compress_all(conn, older_than=timedelta(days=7)) == 1
    conn.autocommit = False
    # Today's readings, in an uncompressed chunk: 90 s of an overheating engine.
    hot = [("EX-1", Reading(ts=now - timedelta(minutes=5) + timedelta(seconds=10 * i), oil_temp_c=115.0))
           for i in range(12)]
    writer.write(Batch(messages=1, readings=hot, sequences={"EX-1": [2]}))
    drain_outbox(diagnostics.process_available, conn, "accepted_batches", diagnostics.position, timeout_s=30)
    assert ("OIL_OVERHEAT",) in conn.execute("SELECT fault_code FROM faults").fetchall()
    # A controller's backlog reaching into the compressed chunk: read, and known to be late.
    backlog = _readings("EX-1", _midnight(now - timedelta(days=10)) + timedelta(hours=1), 5, timedelta(seconds=10))
    writer.write(Batch(messages=1, readings=backlog, sequences={"EX-1": [3]}))
    drain_outbox(diagnostics.process_available, conn, "accepted_batches", diagnostics.position, timeout_s=30)
    assert diagnostics.late_readings == 5


# --- every dashboard query ---


@pytest.mark.parametrize("compressed", [False, True], ids=["uncompressed", "compressed"])
@pytest.mark.parametrize("timescaledb", [False, True], ids=["plain macros", "timescaledb macros"])
@pytest.mark.parametrize("scenario", ["all customers, last 6 h", "one customer, last 90 days"])
def test_every_dashboard_query_runs_as_the_reader_on_timescaledb(seeded, scenario, timescaledb, compressed):
    """test_dashboards' check, on real TimescaleDB: time_bucket is TimescaleDB's own (no shim), and
    the readings are read as the Grafana role from plain and from compressed chunks."""
    setup = dashboards_tests._scenarios(seeded)[scenario]
    with psycopg.connect(seeded.url, autocommit=True) as conn:
        if compressed:
            assert _compress_all(conn) >= 1
        try:
            conn.autocommit = False
            assert all(c == compressed for _, _, c in _chunks(conn))
            results = check_dashboards(conn, render.dashboards(), TimeRange.last(setup["span"]),
                                       timescaledb=timescaledb, choices=setup["choices"], role=dashboards_tests.READER)
        finally:
            conn.rollback()
            conn.autocommit = True
            if compressed:
                _decompress_all(conn)
    assert not dashboards_tests._failures(results), dashboards_tests._failures(results)
    expected = sum(len(p["targets"]) for d in render.dashboards() for p in d["panels"] if p["type"] != "row")
    expected += sum(not a.get("builtIn") for d in render.dashboards() for a in d["annotations"]["list"])
    assert len([r for r in results if r.where.startswith(("panel", "annotation"))]) == expected
    grouped = [r.sql for r in results if "readings r" in r.sql and '"time"' in r.sql]
    assert grouped and all(("time_bucket('" in s) == timescaledb for s in grouped)
    assert all("$" not in r.sql.replace("$$", "") for r in results), "a variable or macro was left unexpanded"
