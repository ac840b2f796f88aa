"""The customer portal's daily usage over a year of one machine: from the usage job's hourly rollup, and
from every reading of the year (as the portal computed it before the rollup).

A fresh migrated database on the server IRONSIGHT_DATABASE_URL names (otherwise an embedded
PostgreSQL) gets one simulated machine (device_sim's SimulatedMachine, healthy) reporting every
``--step`` seconds for ``--days`` days up to now, written through ingest's BatchWriter in batches of
``--batch`` readings (so the hourly rollups and the machine's state are the writer's own), into daily
partitions of ``readings`` as a database that has been running for the period holds them. The usage
job (ingest.usage.catch_up) then catches up as an ingest worker's would, leaving the last SETTLE_S
of readings to settle, and the tables are analysed.

Timed: ``ingest.queries.daily_usage`` — the function behind ``GET /portal/equipment/{id}/usage`` — for
the whole period ending now, ``--calls`` times after two warm-up calls (p50, p99, max), and the same
with ``rollups=False`` (every reading of the period, as fast as the query before the rollup)
``--raw-calls`` times with the server's ``jit`` setting and as many with ``jit = off`` (PostgreSQL's
JIT, on by default, compiles that query's plan over every daily partition of the year, which costs
more than the query); the two answers are compared day by day. Caveats: one machine on an otherwise
idle server, every page of it cached after the first call; the simulated machine never rests, so
its year has no engine-off readings.

The database is dropped afterwards unless ``--keep-database``. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import fresh_database, quantile  # noqa: E402
from core.db import one  # noqa: E402
from core.register import EquipmentRecord, register_equipment  # noqa: E402
from device_sim.machine import SimulatedMachine  # noqa: E402
from device_sim.simulated_fleet import build_fleet  # noqa: E402
from ingest import queries, usage  # noqa: E402
from ingest.partitions import PARTITIONS_AHEAD_DAYS, PARTITIONS_BACK_DAYS, ensure_partitions  # noqa: E402
from ingest.writer import Batch, BatchWriter  # noqa: E402

FIGURES = ("engine_hours", "working_hours", "idle_hours", "fuel_used_pct")


@contextmanager
def database_server(data_dir: Path) -> Iterator[str]:
    """IRONSIGHT_DATABASE_URL when set, otherwise an embedded PostgreSQL (no broker: none is needed)."""
    url = os.environ.get("IRONSIGHT_DATABASE_URL")
    if url:
        yield url
        return
    from ironsight.embedded_postgres import start_embedded_postgres

    server = start_embedded_postgres(data_dir)
    try:
        yield server.url
    finally:
        server.stop()


def create_partitions(conn: psycopg.Connection, start: datetime, end: datetime) -> None:
    """The daily partitions of the whole period, as the ingest workers create them day by day."""
    day = start.date()
    while day <= end.date() + timedelta(days=1):
        ensure_partitions(conn, today=day)
        day += timedelta(days=PARTITIONS_BACK_DAYS + PARTITIONS_AHEAD_DAYS + 1)


def write_year(conn: psycopg.Connection, equipment_id: str, machine: SimulatedMachine, start: datetime,
               count: int, step_s: float, batch_size: int) -> int:
    writer = BatchWriter(conn, "bench-portal-usage", datetime.now(UTC))
    step = timedelta(seconds=step_s)
    written, seq, started = 0, 0, time.perf_counter()
    while written < count:
        readings = []
        for i in range(written + 1, min(written + batch_size, count) + 1):
            machine.advance(step_s)
            readings.append((equipment_id, machine.reading(start + i * step)))
        seq += 1
        writer.write(Batch(messages=1, readings=readings, sequences={equipment_id: [seq]}))
        written += len(readings)
        if seq % 50 == 0:
            print(f"{written:,} readings written ({time.perf_counter() - started:.0f} s)", file=sys.stderr,
                  flush=True)
    return written


def timed_ms(call, times: int) -> tuple[list[float], object]:
    durations, answer = [], None
    for _ in range(times):
        started = time.perf_counter()
        answer = call()
        durations.append((time.perf_counter() - started) * 1000)
    return sorted(durations), answer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=float, default=365.0)
    parser.add_argument("--step", type=float, default=10.0, help="seconds between readings")
    parser.add_argument("--batch", type=int, default=5000, help="readings per writer transaction")
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--raw-calls", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep-database", action="store_true")
    args = parser.parse_args()

    spec = build_fleet(1, fault_share=0.0, seed=args.seed, id_prefix="PU")[0]
    count = int(args.days * 86400 / args.step)
    end_of_readings = datetime.now(UTC).replace(microsecond=0)
    start = end_of_readings - timedelta(seconds=count * args.step)
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ironsight-bench-") as data_dir, \
            database_server(Path(data_dir)) as server_url, \
            fresh_database(server_url, f"ironsight_bench_usage_{uuid.uuid4().hex[:8]}",
                           keep=args.keep_database) as database_url, \
            psycopg.connect(database_url) as conn:
        register_equipment(conn, [EquipmentRecord(spec.equipment_id, spec.serial, spec.model, spec.kind,
                                                  spec.customer)])
        create_partitions(conn, start, end_of_readings)
        written = write_year(conn, spec.equipment_id, SimulatedMachine(spec, start, seed=args.seed), start, count,
                             args.step, args.batch)
        write_s = time.perf_counter() - began

        started = time.perf_counter()
        usage.catch_up(conn)
        conn.commit()
        catch_up_s = time.perf_counter() - started
        conn.autocommit = True
        conn.execute("VACUUM ANALYZE readings")
        conn.execute("VACUUM ANALYZE usage_hourly")
        conn.execute("VACUUM ANALYZE equipment_usage")
        hourly_rows = one(conn.execute("SELECT count(*) FROM usage_hourly"))[0]
        partitions = one(conn.execute("SELECT count(*) FROM pg_partition_tree('readings') WHERE isleaf"))[0]
        server = one(conn.execute("SELECT current_setting('server_version')"))[0]

        # The portal's default end is now: the newest readings, not yet counted, come from readings.
        period_end = datetime.now(UTC)
        period_start = period_end - timedelta(days=args.days)

        def rolled() -> list[dict]:
            return queries.daily_usage(conn, spec.equipment_id, period_start, period_end)

        def raw() -> list[dict]:
            return queries.daily_usage(conn, spec.equipment_id, period_start, period_end, rollups=False)

        timed_ms(rolled, 2)
        rolled_ms, rolled_days = timed_ms(rolled, args.calls)
        raw_ms, raw_days = timed_ms(raw, args.raw_calls)
        jit = one(conn.execute("SELECT current_setting('jit')"))[0]
        conn.execute("SET jit = off")
        raw_no_jit_ms, _ = timed_ms(raw, args.raw_calls)

    assert isinstance(rolled_days, list) and isinstance(raw_days, list)
    assert [(d["day"], d["samples"]) for d in rolled_days] == [(d["day"], d["samples"]) for d in raw_days], \
        "the rollup's days or samples differ from the readings'"
    largest_difference = max((abs(a[f] - b[f]) for a, b in zip(rolled_days, raw_days, strict=True) for f in FIGURES),
                             default=0.0)
    totals = {f: round(sum(d[f] for d in rolled_days), 3) for f in FIGURES}
    summary = {
        "server": server, "days": args.days, "step_s": args.step, "readings": written, "partitions": partitions,
        "usage_hourly_rows": hourly_rows, "write_s": round(write_s, 1), "catch_up_s": round(catch_up_s, 1),
        "usage_days": len(rolled_days), "samples": sum(d["samples"] for d in rolled_days), **totals,
        "rollup_p50_ms": round(statistics.median(rolled_ms), 1), "rollup_p99_ms": round(quantile(rolled_ms, 0.99), 1),
        "rollup_max_ms": round(rolled_ms[-1], 1), "calls": args.calls,
        "raw_p50_ms": round(statistics.median(raw_ms), 1), "jit": jit,
        "raw_without_jit_p50_ms": round(statistics.median(raw_no_jit_ms), 1), "raw_calls": args.raw_calls,
        "largest_difference": largest_difference,
    }
    print(f"{server}: {written:,} readings over {args.days:g} days, {hourly_rows:,} hourly rows; "
          f"written in {write_s:.0f} s, caught up in {catch_up_s:.1f} s")
    print(f"usage: {len(rolled_days)} days, engine {totals['engine_hours']} h, working "
          f"{totals['working_hours']} h, idle {totals['idle_hours']} h, fuel {totals['fuel_used_pct']} % of the tank")
    print(f"daily_usage from the rollup: p50 {summary['rollup_p50_ms']} ms, p99 {summary['rollup_p99_ms']} ms "
          f"({args.calls} calls); from every reading: p50 {summary['raw_p50_ms']} ms (jit {jit}), "
          f"{summary['raw_without_jit_p50_ms']} ms (jit off) ({args.raw_calls} calls each); "
          f"largest difference {largest_difference:.3g}")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
