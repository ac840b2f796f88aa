"""Storage benchmark: bytes per data point of ``readings`` on TimescaleDB (compressed) and on plain PostgreSQL.

One simulated machine (device_sim's SimulatedMachine, healthy) reports every ``--step`` seconds for
``--days`` days, ending now. Its readings are generated once and COPYed, in the writer's column types,
into the ``readings`` table of a fresh migrated database on each server side by side, so both hold
exactly the same rows: on TimescaleDB the hypertable of daily chunks (ingest's migration), whose every
chunk is then compressed as the compression policy would (segmented by equipment, ordered by time);
on plain PostgreSQL the daily range partitions (the last 7 days; the rest lands in readings_default,
as a backlog would). Both are then vacuumed and analysed.

Bytes per data point = the total size of readings (every chunk or partition with its indexes, TOAST
and, on TimescaleDB, the compressed chunks) / (rows × the 9 value columns of core.telemetry.CHANNELS).
fault_codes, NULL unless a controller reports a code, is stored but not counted as a value.

Caveats: one machine, written in time order, packs the primary-key index tighter than a fleet whose
writes interleave machines (plain PostgreSQL's figure is a lower bound); the simulator's channels
are rounded as a controller reports them (0.01 °C, 0.1 rpm, 1e-6° of position), which is what makes
them compress; its machine never rests, so the year has no hours of engine-off readings.

Servers: ``--timescaledb-url`` (default IRONSIGHT_TIMESCALEDB_URL or postgresql://postgres@127.0.0.1:5433/postgres)
and ``--postgres-url`` (default IRONSIGHT_DATABASE_URL or postgresql://postgres@127.0.0.1:5432/postgres);
``--skip-timescaledb`` / ``--skip-postgres`` measure one. The databases are dropped afterwards unless
``--keep-databases``. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
from psycopg.types.json import Jsonb

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import fresh_database  # noqa: E402
from core.telemetry import CHANNELS, Reading  # noqa: E402
from device_sim.machine import SimulatedMachine  # noqa: E402
from device_sim.simulated_fleet import build_fleet  # noqa: E402
from ingest.writer import READING_COLUMNS  # noqa: E402

DEFAULT_TIMESCALEDB_URL = "postgresql://postgres@127.0.0.1:5433/postgres"
DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
COPY_ROWS_PER_COMMIT = 200_000

_PLAIN_SIZE = """
SELECT coalesce(sum(pg_total_relation_size(relid)), 0)::bigint, coalesce(sum(pg_relation_size(relid)), 0)::bigint
FROM pg_partition_tree('readings') WHERE isleaf
"""
# hypertable_detailed_size: heap, indexes, TOAST and total, compressed chunks included.
_HYPERTABLE_SIZE = "SELECT total_bytes, table_bytes FROM hypertable_detailed_size('readings')"


def readings(days: float, step_s: float, seed: int) -> Iterator[tuple[str, Reading]]:
    """The machine's readings, oldest first, the last one about now."""
    spec = build_fleet(1, fault_share=0.0, seed=seed, id_prefix="ST")[0]
    count = int(days * 86400 / step_s)
    end = datetime.now(UTC).replace(microsecond=0)
    start = end - timedelta(seconds=count * step_s)
    machine = SimulatedMachine(spec, start, seed=seed)
    step = timedelta(seconds=step_s)
    for i in range(1, count + 1):
        machine.advance(step_s)
        yield spec.equipment_id, machine.reading(start + i * step)


def row(equipment_id: str, reading: Reading) -> tuple:
    # The writer's row: the id, the reading's fields up to fault_codes, the codes as jsonb or NULL.
    codes = Jsonb([{"spn": c.spn, "fmi": c.fmi, "oc": c.oc} for c in reading.fault_codes]) \
        if reading.fault_codes else None
    return (equipment_id, *reading[:-1], codes)


def column_types(conn: psycopg.Connection) -> list[str]:
    """The readings table's own types of the writer's columns (real or double precision per channel)."""
    types = dict(conn.execute(
        "SELECT attname, format_type(atttypid, NULL) FROM pg_attribute "
        "WHERE attrelid = 'readings'::regclass AND attnum > 0 AND NOT attisdropped").fetchall())
    conn.commit()
    return [types[c] for c in READING_COLUMNS]


class Target:
    """One server's fresh database and its open COPY into readings."""

    def __init__(self, kind: str, url: str, stack: ExitStack, keep: bool) -> None:
        self.kind = kind
        name = f"ironsight_bench_storage_{kind}_{uuid.uuid4().hex[:8]}"
        self.database_url = stack.enter_context(fresh_database(url, name, keep=keep))
        self.conn = stack.enter_context(psycopg.connect(self.database_url))
        timescaledb = self.conn.execute(
            "SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'").fetchone() is not None
        if timescaledb != (kind == "timescaledb"):
            raise SystemExit(f"{url}: timescaledb extension {'missing' if not timescaledb else 'present'}; "
                             f"expected the {kind} path")
        self.types = column_types(self.conn)
        self.version = self.conn.execute(
            "SELECT current_setting('server_version') || coalesce(' + TimescaleDB ' || "
            "(SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'), '')").fetchone()[0]
        self.conn.commit()
        self._cursor: psycopg.Cursor | None = None
        self._copy = None

    def begin(self) -> None:
        self._cursor = self.conn.cursor()
        self._copy_cm = self._cursor.copy(
            f"COPY readings ({', '.join(READING_COLUMNS)}) FROM STDIN (FORMAT BINARY)")
        self._copy = self._copy_cm.__enter__()
        self._copy.set_types(self.types)

    def write(self, values: tuple) -> None:
        self._copy.write_row(values)

    def commit(self) -> None:
        self._copy_cm.__exit__(None, None, None)
        self.conn.commit()
        self._cursor.close()


def measure(target: Target, rows: int) -> dict:
    conn = target.conn
    conn.autocommit = True
    points = rows * len(CHANNELS)
    result: dict = {"server": target.version, "rows": rows, "points": points}
    stored = conn.execute("SELECT count(*) FROM readings").fetchone()[0]
    assert stored == rows, f"{target.kind}: {stored} rows stored, {rows} written"
    if target.kind == "timescaledb":
        conn.execute("VACUUM ANALYZE readings")
        total, heap = conn.execute(_HYPERTABLE_SIZE).fetchone()
        result["uncompressed_bytes"] = total
        result["uncompressed_bytes_per_point"] = round(total / points, 2)
        chunks = [c for (c,) in conn.execute("SELECT c::text FROM show_chunks('readings') c").fetchall()]
        started = time.perf_counter()
        for chunk in chunks:
            conn.execute("SELECT compress_chunk(%s::regclass, if_not_compressed => true)", (chunk,))
        result["compress_s"] = round(time.perf_counter() - started, 1)
        result["chunks"] = len(chunks)
        conn.execute("VACUUM ANALYZE readings")
        total, heap = conn.execute(_HYPERTABLE_SIZE).fetchone()
        left = conn.execute("SELECT count(*) FROM readings").fetchone()[0]
        assert left == rows, f"{left} rows readable after compression, {rows} written"
        result["compressed_chunks"] = conn.execute(
            "SELECT count(*) FROM timescaledb_information.chunks "
            "WHERE hypertable_name = 'readings' AND is_compressed").fetchone()[0]
    else:
        conn.execute("VACUUM ANALYZE readings")
        total, heap = conn.execute(_PLAIN_SIZE).fetchone()
        result["partitions"] = conn.execute(
            "SELECT count(*) FROM pg_partition_tree('readings') WHERE isleaf").fetchone()[0]
    result["total_bytes"] = total
    result["bytes_per_point"] = round(total / points, 2)
    result["bytes_per_row"] = round(total / rows, 1)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=float, default=365.0)
    parser.add_argument("--step", type=float, default=10.0, help="seconds between readings")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--timescaledb-url", default=os.environ.get("IRONSIGHT_TIMESCALEDB_URL",
                                                                    DEFAULT_TIMESCALEDB_URL))
    parser.add_argument("--postgres-url", default=os.environ.get("IRONSIGHT_DATABASE_URL", DEFAULT_POSTGRES_URL))
    parser.add_argument("--skip-timescaledb", action="store_true")
    parser.add_argument("--skip-postgres", action="store_true")
    parser.add_argument("--keep-databases", action="store_true")
    args = parser.parse_args()
    servers = [(kind, url) for kind, url, skip in (("timescaledb", args.timescaledb_url, args.skip_timescaledb),
                                                    ("postgres", args.postgres_url, args.skip_postgres)) if not skip]
    if not servers:
        raise SystemExit("nothing to measure")

    started = time.perf_counter()
    with ExitStack() as stack:
        targets = [Target(kind, url, stack, args.keep_databases) for kind, url in servers]
        rows = 0
        for target in targets:
            target.begin()
        for equipment_id, reading in readings(args.days, args.step, args.seed):
            values = row(equipment_id, reading)
            for target in targets:
                target.write(values)
            rows += 1
            if rows % COPY_ROWS_PER_COMMIT == 0:
                for target in targets:
                    target.commit()
                    target.begin()
                print(f"{rows:,} rows ({time.perf_counter() - started:.0f} s)", file=sys.stderr, flush=True)
        for target in targets:
            target.commit()
        generated_s = time.perf_counter() - started
        results = {target.kind: measure(target, rows) for target in targets}

    summary: dict = {
        "days": args.days, "step_s": args.step, "rows": rows, "value_columns": len(CHANNELS),
        "generate_and_copy_s": round(generated_s, 1), "total_s": round(time.perf_counter() - started, 1),
        **results,
    }
    if "timescaledb" in results and "postgres" in results:
        summary["plain_over_timescaledb"] = round(
            results["postgres"]["bytes_per_point"] / results["timescaledb"]["bytes_per_point"], 2)
    for kind, result in results.items():
        extra = (f" (uncompressed {result['uncompressed_bytes_per_point']} B/point)"
                 if "uncompressed_bytes_per_point" in result else "")
        print(f"{kind:12} {result['server']}: {result['rows']:,} rows, {result['total_bytes'] / 2**20:,.1f} MiB, "
              f"{result['bytes_per_point']} bytes per data point{extra}")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
