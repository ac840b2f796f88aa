"""The portal's daily usage from the usage job's hourly rollup (ingest.usage, usage_hourly) against the
query that reads every reading of the period, on days with gaps, engine-off, idle and working
periods, refuels, missing values and a last day the job has counted only in part."""

from __future__ import annotations

import itertools
import math
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from psycopg.rows import dict_row

from core.register import EquipmentRecord, register_equipment
from core.telemetry import Reading
from core.vocabulary import ENGINE_ON_RPM, MOVING_KMH, WORKING_RPM
from ingest import queries, usage
from ingest.writer import Batch, BatchWriter

DAY0 = datetime(2026, 3, 2, tzinfo=UTC)
DAY = timedelta(days=1)
MIGRATION = Path(usage.__file__).parent / "migrations" / "0010_usage_rollup.sql"

# The definition: every reading of the period, each counting until the next one of the period.
REFERENCE = """
WITH r AS (
    SELECT ts, engine_rpm, speed_kmh, engine_hours, fuel_level_pct,
           CASE WHEN lead(ts) OVER w IS NOT NULL
                THEN least(extract(epoch FROM lead(ts) OVER w - ts), %(max_gap)s) END AS span_s,
           fuel_level_pct - lead(fuel_level_pct) OVER w AS fuel_drop
    FROM readings WHERE equipment_id = %(id)s AND ts >= %(start)s AND ts < %(end)s
    WINDOW w AS (ORDER BY ts)
)
SELECT (date_trunc('day', ts AT TIME ZONE 'UTC'))::date AS day,
       count(*) AS samples,
       coalesce(max(engine_hours) - min(engine_hours), 0) AS engine_hours,
       coalesce(sum(span_s) FILTER (WHERE engine_rpm >= %(working)s OR
                                    (engine_rpm >= %(on)s AND speed_kmh >= %(moving)s)), 0) / 3600 AS working_hours,
       coalesce(sum(span_s) FILTER (WHERE engine_rpm >= %(on)s AND engine_rpm < %(working)s AND
                                    coalesce(speed_kmh, 0) < %(moving)s), 0) / 3600 AS idle_hours,
       coalesce(sum(fuel_drop) FILTER (WHERE fuel_drop > 0), 0) AS fuel_used_pct
FROM r GROUP BY 1 ORDER BY 1
"""

# (rpm, speed): engine off, idling, working, travelling, creeping at idle (working: it moves), and
# neither reported; a mode lasts a random number of readings.
MODES = [(0.0, 0.0), (800.0, 0.0), (1800.0, 0.0), (1500.0, 8.0), (800.0, 3.0), (None, None), (800.0, None),
         (1800.0, None)]


def simulated_readings(until: datetime) -> list[Reading]:
    """A reading a minute (now and then every 15 s) from DAY0 to ``until``, with gaps of 7 minutes (over
    the cap), 40 minutes and 3 hours, and one across the second midnight; the level drops while the
    engine runs, the tank is refilled now and then; a few readings lack fuel, speed or engine hours."""
    rng = random.Random(15143)
    readings, ts, hours, fuel = [], DAY0 + timedelta(seconds=17), 4200.0, 70.0
    mode, left = MODES[1], 0
    midnight_gap = (DAY0 + 2 * DAY - timedelta(minutes=20), DAY0 + 2 * DAY + timedelta(minutes=20, seconds=5))
    while ts < until:
        if left == 0:
            mode, left = rng.choice(MODES), rng.randint(3, 90)
        left -= 1
        rpm, speed = mode
        running = rpm is not None and rpm >= ENGINE_ON_RPM
        if running:
            fuel -= rng.uniform(0.02, 0.2)
            hours += 1 / 60
        if fuel < 15 or rng.random() < 0.002:
            fuel = min(fuel + 45.0, 100.0)
        readings.append(Reading(
            ts=ts, engine_rpm=rpm, speed_kmh=None if rng.random() < 0.02 else speed,
            fuel_level_pct=None if rng.random() < 0.01 else round(fuel, 2),
            engine_hours=None if rng.random() < 0.01 else round(hours, 3)))
        step = 15.0 if rng.random() < 0.1 else 60.0
        if rng.random() < 0.004:
            step = rng.choice((420.0, 2400.0, 3 * 3600.0))
        ts += timedelta(seconds=step)
        if midnight_gap[0] <= ts < midnight_gap[1]:
            ts = midnight_gap[1]
    return readings


def reference_usage(conn, equipment_id: str, start: datetime, end: datetime) -> list[dict]:
    params = {"id": equipment_id, "start": start, "end": end, "max_gap": usage.USAGE_MAX_GAP_S, "on": ENGINE_ON_RPM,
              "working": WORKING_RPM, "moving": MOVING_KMH}
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(REFERENCE, params).fetchall()


def assert_same_days(actual: list[dict], expected: list[dict], *, fuel_abs: float, label: str) -> None:
    assert [(d["day"], d["samples"]) for d in actual] == [(d["day"], d["samples"]) for d in expected], label
    for got, want in zip(actual, expected, strict=True):
        for key in ("engine_hours", "working_hours", "idle_hours"):
            assert got[key] == pytest.approx(want[key], rel=1e-9, abs=1e-9), (label, got["day"], key)
        assert got["fuel_used_pct"] == pytest.approx(want["fuel_used_pct"], abs=fuel_abs), (label, got["day"])


def catch_up_to(conn, until: datetime) -> None:
    """What the ingest workers' usage job does, counting every reading up to ``until`` (no reading lies
    within the clocks' skew of it: they are 2 or 5 s past a multiple of 15 s, ``until`` is not)."""
    usage.catch_up(conn, settle_s=(datetime.now(UTC) - until).total_seconds())
    conn.commit()


def windows(counted_to: datetime, readings_end: datetime) -> list[tuple[datetime, datetime]]:
    """Periods starting and ending on midnights, whole hours, inside gaps, on a reading and mid-hour,
    around the newest reading counted."""
    moments = [DAY0 - timedelta(hours=1), DAY0 + timedelta(minutes=30, seconds=20), DAY0 + DAY,
               DAY0 + DAY + timedelta(hours=5), DAY0 + 2 * DAY - timedelta(minutes=10), DAY0 + 2 * DAY,
               DAY0 + 2 * DAY + timedelta(minutes=20, seconds=5), DAY0 + 2 * DAY + timedelta(hours=13, minutes=7),
               counted_to - timedelta(minutes=50), counted_to, counted_to + timedelta(minutes=1, seconds=5),
               DAY0 + 3 * DAY, readings_end + DAY]
    return [(a, b) for a, b in itertools.combinations(sorted(moments), 2)]


def float4_rounding(days: list[dict]) -> float:
    """How far the reference's fuel may be off: it subtracts and sums the level in float4, as stored (the
    rollup in float8), each addition rounding by at most one float4 step of the day's total."""
    return max((d["samples"] * 2.0 ** (math.frexp(d["fuel_used_pct"])[1] - 24) for d in days), default=0.0)


def check_every_window(conn, counted_to: datetime, readings_end: datetime) -> int:
    checked = 0
    for start, end in windows(counted_to, readings_end):
        label = f"[{start:%d %H:%M:%S}, {end:%d %H:%M:%S})"
        expected = reference_usage(conn, "EX-1", start, end)
        rolled = queries.daily_usage(conn, "EX-1", start, end)
        assert_same_days(rolled, expected, fuel_abs=float4_rounding(expected), label=label)
        # Both of daily_usage's ways sum in float8: they agree to rounding.
        assert_same_days(rolled, queries.daily_usage(conn, "EX-1", start, end, rollups=False), fuel_abs=1e-9,
                         label=label)
        checked += 1
    conn.commit()
    return checked


@pytest.fixture
def machine(conn):
    register_equipment(conn, [EquipmentRecord("EX-1", "S-1", "EX210", "excavator", "acme")])
    readings_end = DAY0 + 3 * DAY + timedelta(hours=14)
    readings = simulated_readings(readings_end)
    writer = BatchWriter(conn, "rollup", datetime.now(UTC))
    for seq, first in enumerate(range(0, len(readings), 700), start=1):
        writer.write(Batch(messages=1, readings=[("EX-1", r) for r in readings[first:first + 700]],
                           sequences={"EX-1": [seq]}))
    return readings, readings_end


def rollup_rows(conn) -> list[tuple]:
    rows = conn.execute("SELECT hour, samples, engine_hours_min, engine_hours_max, working_s, idle_s, fuel_used_pct "
                        "FROM usage_hourly WHERE equipment_id = 'EX-1' ORDER BY hour").fetchall()
    conn.commit()
    return rows


def test_daily_usage_from_the_rollup_equals_the_one_from_every_reading(conn, machine):
    readings, readings_end = machine
    # Nothing counted yet: every reading is read.
    assert check_every_window(conn, DAY0, readings_end) > 50
    # Counted in steps, the last day only in part (the job is behind, or the readings are recent).
    for counted_to in (DAY0 + timedelta(hours=7, minutes=3), DAY0 + DAY + timedelta(hours=23, minutes=45),
                       DAY0 + 3 * DAY + timedelta(hours=9, minutes=17, seconds=30)):
        catch_up_to(conn, counted_to)
        through = queries.usage_totals(conn, ["EX-1"])["EX-1"]["through_ts"]
        conn.commit()
        assert through == max(r.ts for r in readings if r.ts <= counted_to)
        check_every_window(conn, through, readings_end)

    # Counted once each: the hours' idle seconds add up to the running total, their readings to the
    # readings counted.
    totals = queries.usage_totals(conn, ["EX-1"])["EX-1"]
    hours = rollup_rows(conn)
    assert sum(h[5] for h in hours) == pytest.approx(totals["idle_s"], rel=1e-12)
    assert sum(h[6] for h in hours) == pytest.approx(totals["fuel_used_pct"], rel=1e-12)
    assert sum(h[1] for h in hours) == sum(1 for r in readings if r.ts <= totals["through_ts"])

    catch_up_to(conn, readings_end + DAY)
    check_every_window(conn, readings[-1].ts, readings_end)


def test_the_migration_rolls_up_what_was_counted_before_it(conn, machine):
    readings, readings_end = machine
    counted_to = DAY0 + 2 * DAY + timedelta(hours=16, minutes=40)
    catch_up_to(conn, counted_to)
    kept_by_the_job = rollup_rows(conn)
    # A database from before the migration: the totals counted, no hourly rows.
    conn.execute("TRUNCATE usage_hourly")
    conn.execute(MIGRATION.read_text())
    conn.commit()
    backfilled = rollup_rows(conn)
    assert [h[:4] for h in backfilled] == [h[:4] for h in kept_by_the_job]
    for filled, kept in zip(backfilled, kept_by_the_job, strict=True):
        assert filled[4:] == pytest.approx(kept[4:], rel=1e-12, abs=1e-9)
    check_every_window(conn, max(r.ts for r in readings if r.ts <= counted_to), readings_end)
    # The job goes on from there.
    catch_up_to(conn, readings_end)
    check_every_window(conn, readings[-1].ts, readings_end)


def test_a_reading_late_for_an_hour_already_counted_is_not_rolled_up(conn, machine):
    readings, readings_end = machine
    catch_up_to(conn, readings_end)
    day = (DAY0 + DAY, DAY0 + 2 * DAY)
    before = queries.daily_usage(conn, "EX-1", *day)
    late = DAY0 + DAY + timedelta(hours=6, seconds=31)
    BatchWriter(conn, "late", datetime.now(UTC)).write(Batch(messages=1, readings=[
        ("EX-1", Reading(ts=late, engine_rpm=1800.0, fuel_level_pct=1.0))], sequences={"EX-1": [1]}))
    catch_up_to(conn, readings_end)
    # Stored, and counted where the readings themselves are read (the reference, or rollups=False) …
    assert reference_usage(conn, "EX-1", *day)[0]["samples"] == before[0]["samples"] + 1
    assert queries.daily_usage(conn, "EX-1", *day, rollups=False)[0]["samples"] == before[0]["samples"] + 1
    # … but not in the hours the job had already counted.
    assert queries.daily_usage(conn, "EX-1", *day) == before
