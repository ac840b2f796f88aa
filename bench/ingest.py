"""Ingest benchmark: broker, ingest workers, database and load generator on this machine.

A fleet of simulated controllers (device_sim.load) publishes at a fixed rate for ``--duration``
seconds through the broker to ``--workers`` ingest processes (MQTT 5 shared subscription) that
write to a fresh database. Measured:
- msg_per_s / readings_per_s: stored during the load window (from the moment every controller's
  session is connected, for ``--duration`` seconds), per second; offered_msg_per_s beside them;
- p50_ms / p99_ms: publish → committed row, from probe controllers whose newest stored reading is
  polled every ``PROBE_POLL_S`` (the figures include up to that much polling delay);
- published / acked / stored / duplicates / lost: every acknowledged reading must be stored once;
- max_rss_mb per process kind, and its growth from the first to the last quarter of the run;
- cores_under_load: CPU time per process kind (PostgreSQL: the backends serving the run's database)
  during the load window, in cores. The rest of the machine's time goes to the kernel's network
  stack (every controller is its own TCP connection) and to this script.
Uses IRONSIGHT_DATABASE_URL / IRONSIGHT_MQTT_URL when set, embedded services otherwise. The last
line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import ProcessSampler, fresh_database, quantile, services  # noqa: E402
from core.register import EquipmentRecord, register_equipment  # noqa: E402
from device_sim.load import LoadSpec, run_slice  # noqa: E402

PROBE_POLL_S = 0.05
PROBES = 20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load")
    parser.add_argument("--controllers", type=int, default=10_000)
    parser.add_argument("--readings-per-msg", type=int, default=1)
    parser.add_argument("--msg-rate", type=float, default=None, help="messages/s (default 20000, or 10000 batched)")
    parser.add_argument("--codec", choices=("json", "binary"), default="json")
    parser.add_argument("--workers", type=int, default=2, help="ingest processes")
    parser.add_argument("--load-processes", type=int, default=2)
    parser.add_argument("--connections", type=int, default=None,
                        help="MQTT connections in all (default: one per controller, as on a real fleet)")
    parser.add_argument("--keep-database", action="store_true")
    args = parser.parse_args()
    rate = args.msg_rate or (20_000.0 if args.readings_per_msg == 1 else 10_000.0)

    run_id = uuid.uuid4().hex[:8]
    dbname = f"ironsight_bench_{run_id}"
    with (services(Path(".ironsight-bench").resolve()) as (server_url, mqtt_url, broker_pid),
          fresh_database(server_url, dbname, keep=args.keep_database) as database_url):
        workers: list[subprocess.Popen] = []
        try:
            ids = [f"B{i:06d}" for i in range(args.controllers)]
            with psycopg.connect(database_url) as conn:
                register_equipment(conn, [EquipmentRecord(e, f"S{e}", "EX210", "excavator", "bench") for e in ids])
            topic_root = f"bench-{run_id}"
            env = {**os.environ, "IRONSIGHT_DATABASE_URL": database_url, "IRONSIGHT_MQTT_URL": mqtt_url,
                   "IRONSIGHT_TOPIC_ROOT": topic_root, "IRONSIGHT_LOG_LEVEL": "WARNING"}
            for w in range(args.workers):
                workers.append(subprocess.Popen(
                    [sys.executable, "-m", "ironsight", "ingest", "--name", f"bench-{w + 1}"],
                    env=env, stdout=subprocess.DEVNULL))
            time.sleep(3.0)  # connected and subscribed

            kinds = {"ingest": [w.pid for w in workers]} | ({"broker": [broker_pid]} if broker_pid else {})
            processes = ProcessSampler(kinds, dbname)
            probes = ids[:PROBES]
            latency = LatencyProbe(database_url, probes)
            results: mp.Queue = mp.Queue()
            # The load window starts once every load process has connected its sessions.
            start_together = mp.Barrier(args.load_processes + 1)
            slices = [tuple(ids[i::args.load_processes]) for i in range(args.load_processes)]
            connections = None if args.connections is None else max(1, args.connections // args.load_processes)
            loaders = [mp.Process(target=run_slice, args=(LoadSpec(
                mqtt_url, topic_root, s, rate / args.load_processes, args.readings_per_msg, args.duration,
                codec=args.codec, client_id_prefix=f"{topic_root}-load",
                connections=connections), results, start_together))
                for s in slices]
            for p in loaders:
                p.start()
            processes.add("load", [p.pid for p in loaders])
            start_together.wait(timeout=120)
            started = time.monotonic()
            with psycopg.connect(database_url, autocommit=True) as conn:
                stored_at_start_of_load = _stored(conn)
            processes.start()
            latency.start()
            stored_in_load_window = _wait_and_count(database_url, started + args.duration) - stored_at_start_of_load
            cores_under_load = processes.cores()
            counts = [results.get(timeout=120) for _ in loaders]
            failed = [c["error"] for c in counts if "error" in c]
            if failed:
                raise RuntimeError(f"load generator failed: {failed[0]}")
            for p in loaders:
                p.join()
            acked_readings = sum(c["readings_acked"] for c in counts)
            drain_started = time.monotonic()
            stored = _drain(database_url, acked_readings)
            drain_s = time.monotonic() - drain_started
            latency.stop()
            processes.stop()
            with psycopg.connect(database_url) as conn:
                # The primary key (equipment_id, ts) makes a stored duplicate impossible; what is checked is
                # that the rows in the table are the rows the workers counted as newly inserted.
                rows = conn.execute("SELECT count(*) FROM readings").fetchone()[0]
                redelivered = conn.execute(
                    "SELECT coalesce(sum(readings_duplicate), 0) FROM ingest_stats").fetchone()[0]
            samples = sorted(latency.samples_ms)
            by_minute: dict[int, list[float]] = {}
            for at, ms in zip(latency.seen_at, latency.samples_ms, strict=True):
                if at < started + args.duration:
                    by_minute.setdefault(int((at - started) // 60), []).append(ms)
            result = {
                "msg_per_s": round(stored_in_load_window / args.readings_per_msg / args.duration, 1),
                "readings_per_s": round(stored_in_load_window / args.duration, 1),
                "p50_ms": round(statistics.median(samples), 1) if samples else None,
                "p99_ms": round(quantile(samples, 0.99), 1) if samples else None,
                "latency_samples": len(samples),
                "p99_ms_by_minute": [round(quantile(sorted(v), 0.99), 1) for _, v in sorted(by_minute.items())],
                "published": sum(c["readings_published"] for c in counts),
                "acked": acked_readings,
                "stored": stored,
                "duplicates": stored - rows,
                "redelivered": int(redelivered),
                "lost": max(0, acked_readings - stored),
                "drain_s": round(drain_s, 1),
                "offered_msg_per_s": round(sum(c["achieved_msg_per_s"] for c in counts), 1),
                "refused": sum(c["refused"] for c in counts), "unacked": sum(c["unacked"] for c in counts),
                "throttled": sum(c["throttled"] for c in counts),
                "connections": sum(c["connections"] for c in counts),
                "max_rss_mb": processes.max_mb(),
                "rss_growth_mb": processes.growth_mb(),
                "cores_under_load": cores_under_load,
                "controllers": args.controllers, "readings_per_msg": args.readings_per_msg, "codec": args.codec,
                "workers": args.workers, "duration_s": args.duration, "target_msg_per_s": rate,
                "load_processes": args.load_processes, "broker": mqtt_url, "at": datetime.now(UTC).isoformat(),
            }
            print(json.dumps(result))
        finally:
            for w in workers:
                w.terminate()
            for w in workers:
                w.wait(15)


def _stored(conn: psycopg.Connection) -> int:
    return conn.execute("SELECT coalesce(sum(readings_stored), 0)::bigint FROM ingest_stats").fetchone()[0]


def _wait_and_count(database_url: str, until: float) -> int:
    with psycopg.connect(database_url, autocommit=True) as conn:
        while time.monotonic() < until:
            time.sleep(min(1.0, max(0.0, until - time.monotonic())))
        return _stored(conn)


def _drain(database_url: str, expected: int, timeout_s: float = 120.0) -> int:
    """Wait until everything acknowledged is stored, or the count stops moving."""
    deadline = time.monotonic() + timeout_s
    last, still_since = -1, time.monotonic()
    with psycopg.connect(database_url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            stored = _stored(conn)
            if stored >= expected:
                return stored
            if stored != last:
                last, still_since = stored, time.monotonic()
            elif time.monotonic() - still_since > 10:
                return stored
            time.sleep(0.5)
    return last


class LatencyProbe(threading.Thread):
    """Polls the newest stored reading of a few controllers; each newly seen one gives a latency."""

    def __init__(self, database_url: str, equipment_ids: list[str]) -> None:
        super().__init__(daemon=True)
        self.database_url = database_url
        self.ids = equipment_ids
        self.samples_ms: list[float] = []
        self.seen_at: list[float] = []  # monotonic time of each sample
        self._stop_event = threading.Event()

    def run(self) -> None:
        newest: dict[str, datetime] = {}
        with psycopg.connect(self.database_url, autocommit=True) as conn:
            while not self._stop_event.is_set():
                rows = conn.execute("SELECT equipment_id, max(ts) FROM readings WHERE equipment_id = ANY(%s) "
                                    "GROUP BY 1", (self.ids,)).fetchall()
                seen_at = datetime.now(UTC)
                for equipment_id, ts in rows:
                    if ts is not None and ts != newest.get(equipment_id):
                        if equipment_id in newest:  # the first sighting may be of an old row
                            self.samples_ms.append((seen_at - ts).total_seconds() * 1000)
                            self.seen_at.append(time.monotonic())
                        newest[equipment_id] = ts
                time.sleep(PROBE_POLL_S)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(5)


if __name__ == "__main__":
    main()
