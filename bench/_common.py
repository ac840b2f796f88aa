"""What the benchmarks share: the services and a fresh database, CPU and memory per process kind,
quantiles.

Each benchmark runs the system's processes on the machine it measures, so what each kind of process
costs (workers, broker, PostgreSQL backends, the load generator) is part of every result.
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil
import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo


def quantile(ordered: list[float], q: float) -> float:
    """The ``q`` quantile of an ascending list (nearest rank below)."""
    return ordered[int(q * (len(ordered) - 1))]


class ProcessSampler(threading.Thread):
    """Once a second: the resident memory of each process kind, and the CPU time each kind used.

    PostgreSQL backends serving ``database`` are found by their process title, so the database's
    share of the CPU is measured too. A kind's processes include their descendants (a command that
    starts its workers as child processes, such as ``ironsight ingest --workers N``), found anew at
    every sample; memory is that of the largest of them.
    """

    def __init__(self, pids_by_kind: dict[str, list[int]], database: str) -> None:
        super().__init__(daemon=True)
        self.pids = dict(pids_by_kind)
        self.database = database
        self.series: dict[str, list[float]] = {}
        self.cpu_s: dict[str, dict[int, tuple[float, float]]] = {}  # kind -> pid -> (first, last)
        self._stop_event = threading.Event()
        self.wall_s = 0.0

    def add(self, kind: str, pids: list[int]) -> None:
        self.pids[kind] = pids

    def _postgres_backends(self) -> list[int]:
        found = []
        for process in psutil.process_iter(["name", "cmdline"]):
            cmdline = " ".join(process.info["cmdline"] or ())
            if process.info["name"] and "postgres" in process.info["name"] and self.database in cmdline:
                found.append(process.pid)
        return found

    def run(self) -> None:
        started = time.monotonic()
        while not self._stop_event.is_set():
            self.pids["postgres"] = self._postgres_backends()
            for kind, pids in list(self.pids.items()):
                total = []
                for pid in _with_descendants(pids) if kind != "postgres" else pids:
                    try:
                        process = psutil.Process(pid)
                        total.append(process.memory_info().rss / 2**20)
                        times = process.cpu_times()
                    except psutil.Error:
                        continue
                    used = times.user + times.system
                    first, _ = self.cpu_s.setdefault(kind, {}).get(pid, (used, used))
                    self.cpu_s[kind][pid] = (first, used)
                if total and kind != "postgres":
                    self.series.setdefault(kind, []).append(max(total))
            self.wall_s = time.monotonic() - started
            time.sleep(1.0)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(5)

    def max_mb(self) -> dict[str, float]:
        return {k: round(max(v), 1) for k, v in self.series.items() if v}

    def growth_mb(self) -> dict[str, float]:
        out = {}
        for kind, values in self.series.items():
            quarter = max(1, len(values) // 4)
            out[kind] = round(statistics.mean(values[-quarter:]) - statistics.mean(values[:quarter]), 1)
        return out

    def cores(self) -> dict[str, float]:
        """Average cores each kind kept busy while sampled (all its processes together)."""
        if self.wall_s <= 0:
            return {}
        return {kind: round(sum(last - first for first, last in by_pid.values()) / self.wall_s, 2)
                for kind, by_pid in self.cpu_s.items()}


def _with_descendants(pids: list[int]) -> list[int]:
    found = list(pids)
    for pid in pids:
        try:
            found.extend(child.pid for child in psutil.Process(pid).children(recursive=True))
        except psutil.Error:
            continue
    return found


@contextmanager
def services(data_dir: Path) -> Iterator[tuple[str, str, int | None]]:
    """The database server and broker to measure: IRONSIGHT_DATABASE_URL / IRONSIGHT_MQTT_URL when
    set, otherwise embedded ones (the broker with IronSight's own configuration, which keeps queued
    QoS 1 messages instead of dropping them past 1,000 per client). Yields (server URL, broker URL,
    broker pid when it is ours)."""
    started = []
    try:
        server_url = os.environ.get("IRONSIGHT_DATABASE_URL")
        if not server_url:
            from ironsight.embedded_postgres import start_embedded_postgres

            started.append(start_embedded_postgres(data_dir))
            server_url = started[-1].url
        mqtt_url = os.environ.get("IRONSIGHT_MQTT_URL")
        broker_pid = None
        if not mqtt_url:
            from ironsight.embedded_broker import start_embedded_broker

            started.append(start_embedded_broker(data_dir))
            mqtt_url, broker_pid = started[-1].url, started[-1].pid
        yield server_url, mqtt_url, broker_pid
    finally:
        for service in reversed(started):
            service.stop()


@contextmanager
def fresh_database(server_url: str, name: str, *, keep: bool = False) -> Iterator[str]:
    """A new, migrated database ``name`` on the server; dropped afterwards unless ``keep``."""
    from ironsight.schema import migrate

    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    database_url = make_conninfo(**{**conninfo_to_dict(server_url), "dbname": name})
    try:
        migrate(database_url)
        yield database_url
    finally:
        if not keep:
            with psycopg.connect(server_url, autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
