"""Whole-path benchmark: broker, ingest, diagnostics, alarms and the tickets API on this machine.

The load generator (device_sim.load) plays a fleet of controllers, each its own MQTT session,
whose readings vary like working machines' (healthy machines raise nothing), and injects faults
into a share of them at known moments: a J1939 DTC from then on, or oil above the overheat limit.
It reports when it published the reading that made each fault due: that is the ground truth every
latency below is measured from. The system runs as it would in production, one process per worker
(``ironsight ingest --workers 2``, ``diagnostics``, ``alarms``, ``api``), on a fresh database.

Modes:
- default: ``--msg-rate`` messages/s of ``--readings-per-msg`` readings from ``--controllers`` for
  ``--duration`` s, ``--fault-share`` of the controllers with an injected fault (in turn: DTC
  100/17, a major fault that opens a ticket; oil overheat, raised after 30 s sustained; DTC 97/0,
  a minor fault that raises an alarm but opens no ticket);
- ``--storm``: every controller starts sending the same minor DTC at ``--storm-at`` s; reported
  besides: how long until every storm fault was stored and alarmed, and until the diagnosis lag was
  back under 2 s for good;
- ``--backlog``: readings written straight to the database the way the ingest writer does
  (ingest.writer.BatchWriter), diagnostics stopped; then 1 diagnostics worker is timed until it
  has consumed every batch, its cursors, state and faults are reset, and the same with 2 workers.

Measured (live modes):
- readings_per_s_stored / _diagnosed: over the load window, from ``ingest_stats`` and from the
  batches behind the diagnostics cursors;
- diagnosis_lag_*: once a second, now − accepted_at of the oldest accepted batch diagnostics has not
  consumed yet (0 when none), see ``diagnostics_progress``;
- fault/alarm/ticket latency: reading published → row visible. The three tables are polled every
  ``ROW_POLL_S`` for new rows (``faults`` has no creation time), so each latency is late by up to
  that much plus a query;
- faults_expected (due during the run) / raised / missed / duplicated (more than one row for one
  injected fault), false_faults on healthy machines and collateral_faults (other codes on machines
  with an injected fault), with their codes;
- cores_under_load: CPU time per process kind during the load window, in cores.
Uses IRONSIGHT_DATABASE_URL / IRONSIGHT_MQTT_URL when set, embedded services otherwise (the broker
then with IronSight's configuration). A short summary, then the last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import secrets
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter, deque
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from alarms.worker import TICKET_SEVERITIES  # noqa: E402
from bench._common import ProcessSampler, fresh_database, quantile, services  # noqa: E402
from core.register import EquipmentRecord, register_equipment  # noqa: E402
from core.telemetry import FaultCode  # noqa: E402
from device_sim.load import (  # noqa: E402
    DTC,
    OIL_OVERHEAT,
    InjectedFault,
    LoadSpec,
    fault_plan,
    reading_values,
    run_slice,
    storm_plan,
)
from diagnostics.catalogue import DTC_TABLE  # noqa: E402
from diagnostics.rulebook import rulebook_for  # noqa: E402

MODEL = "EX210"
ROW_POLL_S = 0.2
LAG_SAMPLE_S = 1.0
# New rows are looked for above the highest id seen this long ago: ids are taken before commit, so a
# row can become visible after rows with higher ids (another worker's transaction committing later).
ROW_ID_WINDOW_S = 15.0
# Live faults, taken in turn: a major DTC (opens a ticket), an overheat, a minor DTC (alarm only).
LIVE_FAULT_KINDS = ((DTC, 100, 17), (OIL_OVERHEAT, 0, 0), (DTC, 97, 0))
STORM_DTC = (97, 0)
LAG_GOAL_S = 2.0


def expected_fault(kind: str, spn: int, fmi: int) -> tuple[str, str]:
    """The fault code and severity an injected fault must raise (as diagnostics.rules.Dtc and the
    rulebook's overheat rule do)."""
    if kind == OIL_OVERHEAT:
        rule = rulebook_for(MODEL).rule("oil_overheat")
        return rule.fault_code, rule.severity
    mapping = DTC_TABLE.get((spn, fmi))
    return (mapping.fault_code, mapping.severity) if mapping else (f"J1939_{spn}_{fmi}", "major")


# --- how far diagnostics has got ---

@dataclass(frozen=True, slots=True)
class Progress:
    diagnosed_readings: int  # readings of the batches every diagnostics consumer has passed
    lag_s: float  # now − accepted_at of the oldest batch not yet consumed by all; 0 when none
    waiting_batches: int
    source: str


def diagnostics_progress(conn: psycopg.Connection) -> Progress:
    """Where diagnostics is: the slowest shard's progress (written by its owner every round).

    A batch counts as diagnosed once the slowest shard has passed it (every worker reads every
    batch for its own machines). Before every shard has a row, the missing ones count as not
    started.
    """
    from core.shards import SHARD_COUNT

    rows = conn.execute(
        """SELECT coalesce(progress_xid, last_xid)::text, coalesce(progress_id, last_id)
           FROM shard_checkpoints WHERE consumer = 'diagnostics'""").fetchall()
    cursors = [(int(x), i) for x, i in rows]
    xid, last_id = min(cursors) if len(cursors) == SHARD_COUNT else (0, 0)
    diagnosed, oldest_waiting_s, waiting = conn.execute(
        """SELECT coalesce(sum(readings) FILTER (WHERE (xid, id) <= (%(x)s::text::xid8, %(i)s)), 0)::bigint,
                  extract(epoch FROM clock_timestamp()
                          - min(accepted_at) FILTER (WHERE (xid, id) > (%(x)s::text::xid8, %(i)s)))::float8,
                  count(*) FILTER (WHERE (xid, id) > (%(x)s::text::xid8, %(i)s))
           FROM accepted_batches""", {"x": str(xid), "i": last_id}).fetchone()
    return Progress(int(diagnosed), max(0.0, oldest_waiting_s or 0.0), int(waiting), "shard_checkpoints")


def stored_readings(conn: psycopg.Connection) -> int:
    return conn.execute("SELECT coalesce(sum(readings_stored), 0)::bigint FROM ingest_stats").fetchone()[0]


# --- watching the tables ---

class NewRows:
    """Finds rows of ``table`` as they become visible and notes when each was first seen."""

    def __init__(self, table: str, columns: str) -> None:
        self.table, self.columns = table, columns
        self.seen: dict[int, tuple[tuple, float]] = {}  # id -> (row, wall clock first seen)
        self._max_ids: deque[tuple[float, int]] = deque()

    def poll(self, conn: psycopg.Connection) -> None:
        now = time.time()  # the query's snapshot follows: every row it shows committed before about now
        while len(self._max_ids) > 1 and self._max_ids[1][0] <= now - ROW_ID_WINDOW_S:
            self._max_ids.popleft()
        floor = self._max_ids[0][1] if self._max_ids and self._max_ids[0][0] <= now - ROW_ID_WINDOW_S else 0
        ids = [row[0] for row in conn.execute(f"SELECT id FROM {self.table} WHERE id > %s", (floor,))]
        new = [i for i in ids if i not in self.seen]
        if new:
            for row in conn.execute(f"SELECT id, {self.columns} FROM {self.table} WHERE id = ANY(%s)", (new,)):
                self.seen[row[0]] = (tuple(row[1:]), now)
        self._max_ids.append((now, max(ids, default=floor)))


class Monitor(threading.Thread):
    """Samples diagnosis progress every LAG_SAMPLE_S and polls faults, alarms and tickets every ROW_POLL_S."""

    def __init__(self, database_url: str) -> None:
        super().__init__(daemon=True, name="monitor")
        self.database_url = database_url
        self.faults = NewRows("faults", "equipment_id, fault_code")
        self.alarms = NewRows("alarms", "equipment_id, fault_code")
        self.tickets = NewRows("tickets", "source_alarm_id")
        self.samples: list[tuple[float, float, int, int, int]] = []  # (wall, lag, diagnosed, stored, waiting)
        self.source = ""
        self.error: BaseException | None = None
        self._stop_event = threading.Event()

    def run(self) -> None:
        try:
            with psycopg.connect(self.database_url, autocommit=True) as conn:
                next_sample = 0.0
                while not self._stop_event.is_set():
                    for rows in (self.faults, self.alarms, self.tickets):
                        rows.poll(conn)
                    if time.monotonic() >= next_sample:
                        next_sample = time.monotonic() + LAG_SAMPLE_S
                        progress = diagnostics_progress(conn)
                        self.source = progress.source
                        self.samples.append((time.time(), progress.lag_s, progress.diagnosed_readings,
                                             stored_readings(conn), progress.waiting_batches))
                    self._stop_event.wait(ROW_POLL_S)
        except BaseException as exc:  # reported by the main thread, which would otherwise wait in vain
            self.error = exc
            raise

    def latest(self) -> tuple[float, float, int, int, int] | None:
        return self.samples[-1] if self.samples else None

    def stop(self) -> None:
        self._stop_event.set()
        self.join(10)


# --- the system's processes ---

class Workers:
    """The IronSight processes of the run, by kind."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.by_kind: dict[str, list[subprocess.Popen]] = {}
        self._supports_workers: dict[str, bool] = {}

    def start(self, kind: str, *args: str) -> None:
        process = subprocess.Popen([sys.executable, "-m", "ironsight", kind, *args], env=self.env,
                                   stdout=subprocess.DEVNULL)
        self.by_kind.setdefault(kind, []).append(process)

    def start_many(self, kind: str, count: int) -> str:
        """``count`` workers of ``kind``: one ``--workers N`` command when the CLI has that option,
        otherwise N separate processes. Returns which."""
        if count > 1 and self.supports_workers(kind):
            self.start(kind, "--workers", str(count))
            return f"{kind} --workers {count}"
        for _ in range(count):
            self.start(kind)
        return f"{count} × {kind}"

    def supports_workers(self, kind: str) -> bool:
        if kind not in self._supports_workers:
            shown = subprocess.run([sys.executable, "-m", "ironsight", kind, "--help"], env=self.env,
                                   capture_output=True, text=True, timeout=60).stdout
            self._supports_workers[kind] = "--workers" in shown
        return self._supports_workers[kind]

    def pids(self, kind: str) -> list[int]:
        return [p.pid for p in self.by_kind.get(kind, [])]

    def exited(self) -> list[str]:
        return [f"{kind} (exit {p.returncode})" for kind, ps in self.by_kind.items() for p in ps
                if p.poll() is not None]

    def stop(self, kind: str | None = None) -> None:
        kinds = [kind] if kind else list(self.by_kind)
        for k in kinds:
            for process in self.by_kind.get(k, []):
                if process.poll() is None:
                    process.terminate()
        for k in kinds:
            for process in self.by_kind.pop(k, []):
                try:
                    process.wait(20)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(5)


def _wait_for_api(port: int, workers: Workers, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/v1/health", timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        if workers.exited():
            raise RuntimeError(f"a process exited while starting: {workers.exited()}")
        time.sleep(0.3)
    raise TimeoutError(f"the API did not answer on port {port} within {timeout_s:.0f}s")


def _environment(database_url: str, mqtt_url: str, topic_root: str, api_port: int) -> dict[str, str]:
    return {**os.environ, "IRONSIGHT_DATABASE_URL": database_url, "IRONSIGHT_MQTT_URL": mqtt_url,
            "IRONSIGHT_TOPIC_ROOT": topic_root, "IRONSIGHT_LOG_LEVEL": os.environ.get("BENCH_LOG_LEVEL", "WARNING"),
            "IRONSIGHT_API_PORT": str(api_port), "IRONSIGHT_API_HOST": "127.0.0.1",
            "IRONSIGHT_ADMIN_PASSWORD": secrets.token_urlsafe(18),
            "IRONSIGHT_ALARMS_API_KEY": "isk_" + secrets.token_urlsafe(24)}


# --- live runs ---

@dataclass
class Outcome:
    """What happened to one injected fault that became due."""

    due: dict[str, Any]
    code: str
    ticket_expected: bool
    fault_seen_at: float | None = None
    fault_rows: int = 0
    alarm_seen_at: float | None = None
    ticket_seen_at: float | None = None

    @classmethod
    def of(cls, due: dict[str, Any]) -> Outcome:
        code, severity = expected_fault(due["kind"], due["spn"], due["fmi"])
        return cls(due, code, severity in TICKET_SEVERITIES)


def run_live(args: argparse.Namespace, database_url: str, mqtt_url: str, broker_pid: int | None,
             dbname: str) -> dict[str, Any]:
    from ironsight.processes import free_tcp_port

    ids = [f"P{i:06d}" for i in range(args.controllers)]
    with psycopg.connect(database_url) as conn:
        register_equipment(conn, [EquipmentRecord(e, f"S{e}", MODEL, "excavator", "bench") for e in ids])
    if args.storm:
        plan = storm_plan(ids, args.storm_at, *STORM_DTC)
    else:
        kinds = LIVE_FAULT_KINDS if args.duration >= 60 else tuple(k for k in LIVE_FAULT_KINDS if k[0] == DTC)
        # Late enough that every controller is reporting, early enough that an overheat is due (30 s
        # after it starts) well before the end.
        last = max(5.0, args.duration - (45.0 if args.duration >= 60 else args.duration * 0.4))
        plan = fault_plan(ids, args.fault_share, (min(5.0, last), last), kinds=kinds, seed=args.seed)
    sustain_s = rulebook_for(MODEL).rule("oil_overheat").sustain_s

    topic_root = f"bench-{uuid.uuid4().hex[:8]}"
    api_port = free_tcp_port()
    workers = Workers(_environment(database_url, mqtt_url, topic_root, api_port))
    monitor = Monitor(database_url)
    loaders: list[mp.Process] = []
    try:
        workers.start("api", "--port", str(api_port))
        _wait_for_api(api_port, workers)
        workers.start("ingest", "--workers", str(args.ingest_workers), "--name", "bench")
        launched = {"diagnostics": workers.start_many("diagnostics", args.diagnostics_workers),
                    "alarms": workers.start_many("alarms", args.alarms_workers)}
        time.sleep(3.0)  # connected and subscribed
        if workers.exited():
            raise RuntimeError(f"a process exited while starting: {workers.exited()}")

        kinds_pids = {k: workers.pids(k) for k in ("ingest", "diagnostics", "alarms", "api")}
        sampler = ProcessSampler(kinds_pids | ({"broker": [broker_pid]} if broker_pid else {}), dbname)
        results: mp.Queue = mp.Queue()
        start_together = mp.Barrier(args.load_processes + 1)
        slices = [tuple(ids[i::args.load_processes]) for i in range(args.load_processes)]
        for s in slices:
            mine = set(s)
            spec = LoadSpec(mqtt_url, topic_root, s, args.msg_rate / args.load_processes, args.readings_per_msg,
                            args.duration, codec=args.codec, client_id_prefix=f"{topic_root}-load",
                            faults=tuple(f for f in plan if f.equipment_id in mine), overheat_sustain_s=sustain_s)
            loaders.append(mp.Process(target=run_slice, args=(spec, results, start_together)))
        for p in loaders:
            p.start()
        sampler.add("load", [p.pid for p in loaders])
        monitor.start()
        start_together.wait(timeout=180)
        started, started_wall = time.monotonic(), time.time()
        sampler.start()
        with psycopg.connect(database_url, autocommit=True) as conn:
            stored_at_start = stored_readings(conn)
            diagnosed_at_start = diagnostics_progress(conn).diagnosed_readings
        kill: dict[str, Any] = {}
        if args.kill_at is not None:
            _sleep_until(started + args.kill_at, workers, monitor)
            kill = _kill_a_diagnostics_worker(database_url, workers)
        _sleep_until(started + args.duration, workers, monitor)
        cores = sampler.cores()
        with psycopg.connect(database_url, autocommit=True) as conn:
            stored_in_window = stored_readings(conn) - stored_at_start
            diagnosed_in_window = diagnostics_progress(conn).diagnosed_readings - diagnosed_at_start
        ended_wall = time.time()
        counts = [results.get(timeout=180) for _ in loaders]
        failed = [c["error"] for c in counts if "error" in c]
        if failed:
            raise RuntimeError(f"load generator failed: {failed[0]}")
        for p in loaders:
            p.join()
        sampler.stop()
        due = [d for c in counts for d in c["faults_due"]]
        outcomes = [Outcome.of(d) for d in due]
        acked = sum(c["readings_acked"] for c in counts)
        drain_s = _drain(database_url, monitor, workers, acked, outcomes, args.drain_timeout)
        monitor.stop()
        with psycopg.connect(database_url) as conn:
            report = _reconcile(conn, monitor, plan, outcomes, ended_wall)
            rows = conn.execute("SELECT count(*) FROM readings").fetchone()[0]
        lag_window = [s for s in monitor.samples if started_wall <= s[0] <= ended_wall]
        lags = sorted(s[1] for s in lag_window)
        result: dict[str, Any] = {
            "mode": "storm" if args.storm else "live",
            "readings_per_s_stored": round(stored_in_window / args.duration, 1),
            "readings_per_s_diagnosed": round(diagnosed_in_window / args.duration, 1),
            "diagnosis_lag_p50_s": _q(lags, 0.5), "diagnosis_lag_p99_s": _q(lags, 0.99),
            "diagnosis_lag_max_s": round(max(lags), 2) if lags else None,
            "diagnosis_lag_samples": len(lags),
            "diagnosis_lag_at_end_s": round(monitor.samples[-1][1], 2) if monitor.samples else None,
            **report,
            "cores_under_load": cores,
            "readings_published": sum(c["readings_published"] for c in counts), "readings_acked": acked,
            "readings_stored": rows, "readings_lost": max(0, acked - rows),
            "offered_msg_per_s": round(sum(c["achieved_msg_per_s"] for c in counts), 1),
            "throttled": sum(c["throttled"] for c in counts), "refused": sum(c["refused"] for c in counts),
            "drain_s": round(drain_s, 1),
            "msg_rate": args.msg_rate, "readings_per_msg": args.readings_per_msg, "controllers": args.controllers,
            "diagnostics_workers": args.diagnostics_workers, "alarms_workers": args.alarms_workers,
            "ingest_workers": args.ingest_workers, "duration_s": args.duration, "codec": args.codec,
            "fault_share": 1.0 if args.storm else args.fault_share, "launched": launched,
            "progress_source": monitor.source, "latency_resolution_s": ROW_POLL_S,
            "broker": mqtt_url, "at": datetime.now(UTC).isoformat(),
        }
        if args.storm:
            result.update(_storm_report(outcomes, monitor.samples, args.storm_at, started_wall, ended_wall))
        result.update(kill)
        return result
    finally:
        if monitor.is_alive():
            monitor.stop()
        for p in loaders:
            if p.is_alive():
                p.terminate()
        workers.stop()


def _kill_a_diagnostics_worker(database_url: str, workers: Workers) -> dict[str, Any]:
    """SIGKILL one diagnostics process (a child of ``diagnostics --workers N``, or one of N) and time
    until every shard is owned again by a live session."""
    import signal

    import psutil

    from core.shards import SHARD_COUNT, shard_owners

    candidates = [c.pid for pid in workers.pids("diagnostics") for c in psutil.Process(pid).children()]
    victim = (candidates or workers.pids("diagnostics"))[0]
    with psycopg.connect(database_url, autocommit=True) as conn:
        backends = {r[0] for r in conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND application_name = "
            "'ironsight-diagnostics'")}
        owners_before = shard_owners(conn, "diagnostics")
        os.kill(victim, signal.SIGKILL)
        killed_at = time.monotonic()
        # The victim's backend is the one whose session ends now; its shards are those it held.
        while True:
            owners = shard_owners(conn, "diagnostics")
            alive = {r[0] for r in conn.execute("SELECT pid FROM pg_stat_activity WHERE datname = current_database()")}
            gone = backends - alive
            if gone and len(owners) == SHARD_COUNT and not set(owners.values()) & gone:
                taken_over_s = time.monotonic() - killed_at
                break
            if time.monotonic() - killed_at > 60:
                taken_over_s = None
                break
            time.sleep(0.05)
    orphaned = sum(1 for pid in owners_before.values() if pid in gone)
    return {"killed_worker_pid": victim, "killed_shards": orphaned,
            "takeover_s": round(taken_over_s, 2) if taken_over_s is not None else None}


def _sleep_until(until: float, workers: Workers, monitor: Monitor) -> None:
    while (left := until - time.monotonic()) > 0:
        if workers.exited():
            raise RuntimeError(f"a process exited during the run: {workers.exited()}")
        if monitor.error is not None:
            raise RuntimeError(f"the monitor failed: {monitor.error!r}")
        time.sleep(min(1.0, left))


def _drain(database_url: str, monitor: Monitor, workers: Workers, acked: int, outcomes: list[Outcome],
           timeout_s: float) -> float:
    """After the load: until every acknowledged reading is stored and diagnosed and every due fault
    has its fault, alarm and (for major and critical ones) ticket, or ``timeout_s``."""
    started = time.monotonic()
    with psycopg.connect(database_url, autocommit=True) as conn:
        while time.monotonic() - started < timeout_s:
            if workers.exited():
                raise RuntimeError(f"a process exited after the run: {workers.exited()}")
            progress = diagnostics_progress(conn)
            _match(monitor, outcomes)
            complete = all(o.fault_seen_at and o.alarm_seen_at and (o.ticket_seen_at or not o.ticket_expected)
                           for o in outcomes)
            if stored_readings(conn) >= acked and progress.waiting_batches == 0 and complete:
                break
            time.sleep(0.5)
    return time.monotonic() - started


def _match(monitor: Monitor, outcomes: list[Outcome]) -> None:
    """Fill in when each due fault's first fault row, alarm and ticket were seen."""
    faults: dict[tuple[str, str], float] = {}
    for _, (key, seen_at) in sorted(monitor.faults.seen.items()):
        faults.setdefault(key, seen_at)
    alarms: dict[tuple[str, str], tuple[int, float]] = {}
    for alarm_id, (key, seen_at) in sorted(monitor.alarms.seen.items()):
        alarms.setdefault(key, (alarm_id, seen_at))
    tickets = {row[0]: seen_at for row, seen_at in monitor.tickets.seen.values()}
    for o in outcomes:
        key = (o.due["equipment_id"], o.code)
        o.fault_seen_at = faults.get(key)
        if key in alarms:
            o.alarm_seen_at = alarms[key][1]
            o.ticket_seen_at = tickets.get(alarms[key][0])


def _reconcile(conn: psycopg.Connection, monitor: Monitor, plan: tuple[InjectedFault, ...],
               outcomes: list[Outcome], ended_wall: float) -> dict[str, Any]:
    """Every fault row against the plan, and the latencies of the due faults."""
    _match(monitor, outcomes)
    planned_keys = {(f.equipment_id, expected_fault(f.kind, f.spn, f.fmi)[0]) for f in plan}
    planned_machines = {f.equipment_id for f in plan}
    rows: Counter[tuple[str, str]] = Counter()
    false_codes: Counter[str] = Counter()
    collateral_codes: Counter[str] = Counter()
    silent_after_end = 0
    for equipment_id, code, started_at in conn.execute("SELECT equipment_id, fault_code, started_at FROM faults"):
        key = (equipment_id, code)
        rows[key] += 1
        if key in planned_keys:
            continue
        if code == "OFFLINE" and started_at.timestamp() > ended_wall:
            silent_after_end += 1  # the load stopped, the machines fell silent: as it should be
        elif equipment_id in planned_machines:
            collateral_codes[code] += 1
        else:
            false_codes[code] += 1
    alarms = Counter((e, c) for e, c in conn.execute("SELECT equipment_id, fault_code FROM alarms"))
    tickets = {a for (a,) in conn.execute("SELECT source_alarm_id FROM tickets WHERE source_alarm_id IS NOT NULL")}
    # The first alarm of each machine and code (later ids are overwritten by earlier ones).
    alarm_ids = {(e, c): i for i, e, c in conn.execute(
        "SELECT id, equipment_id, fault_code FROM alarms ORDER BY id DESC")}
    for o in outcomes:
        o.fault_rows = rows[(o.due["equipment_id"], o.code)]

    def latencies(attr: str, which: list[Outcome]) -> list[float]:
        return sorted(getattr(o, attr) - o.due["published_at"] for o in which if getattr(o, attr) is not None)

    fault_lat = latencies("fault_seen_at", outcomes)
    alarm_lat = latencies("alarm_seen_at", outcomes)
    with_tickets = [o for o in outcomes if o.ticket_expected]
    ticket_lat = latencies("ticket_seen_at", with_tickets)
    raised = [o for o in outcomes if o.fault_rows]
    alarmed = [o for o in outcomes if alarms[(o.due["equipment_id"], o.code)]]
    ticketed = [o for o in with_tickets if alarm_ids.get((o.due["equipment_id"], o.code)) in tickets]
    return {
        "fault_latency_p50_s": _q(fault_lat, 0.5), "fault_latency_p99_s": _q(fault_lat, 0.99),
        "fault_latency_max_s": _q(fault_lat, 1.0),
        "alarm_latency_p50_s": _q(alarm_lat, 0.5), "alarm_latency_p99_s": _q(alarm_lat, 0.99),
        "alarm_latency_max_s": _q(alarm_lat, 1.0),
        "ticket_latency_p50_s": _q(ticket_lat, 0.5), "ticket_latency_p99_s": _q(ticket_lat, 0.99),
        "faults_planned": len(plan), "faults_expected": len(outcomes), "faults_not_due": len(plan) - len(outcomes),
        "faults_raised": len(raised), "faults_missed": len(outcomes) - len(raised),
        "faults_duplicated": sum(1 for o in outcomes if o.fault_rows > 1),
        "faults_by_kind": dict(Counter(o.due["kind"] for o in outcomes)),
        "false_faults": sum(false_codes.values()), "false_fault_codes": dict(false_codes),
        "collateral_faults": sum(collateral_codes.values()), "collateral_fault_codes": dict(collateral_codes),
        "offline_after_load": silent_after_end,
        "alarms_expected": len(outcomes), "alarms_raised": len(alarmed), "alarms_missed": len(outcomes) - len(alarmed),
        "tickets_expected": len(with_tickets), "tickets_opened": len(ticketed),
        "tickets_missed": len(with_tickets) - len(ticketed),
        # Rows the poller never saw appear (committed more than ROW_ID_WINDOW_S after a higher id):
        # counted above, but without a latency.
        "latency_unmeasured": sum(1 for o in raised if o.fault_seen_at is None) + sum(
            1 for o in alarmed if o.alarm_seen_at is None) + sum(1 for o in ticketed if o.ticket_seen_at is None),
        "due_in_window": _due_before(outcomes, ended_wall),
    }


def _due_before(outcomes: list[Outcome], ended_wall: float) -> int:
    return sum(1 for o in outcomes if o.due["published_at"] <= ended_wall)


def _storm_report(outcomes: list[Outcome], samples: list[tuple], storm_at_s: float, started_wall: float,
                  ended_wall: float) -> dict[str, Any]:
    """From the storm's moment (the first storm reading published): until the last storm fault and
    alarm were seen, and until the diagnosis lag was back under LAG_GOAL_S for the rest of the load."""
    moment = min((o.due["published_at"] for o in outcomes), default=started_wall + storm_at_s)
    faults = [o.fault_seen_at for o in outcomes]
    alarms = [o.alarm_seen_at for o in outcomes]
    after = [s for s in samples if moment <= s[0] <= ended_wall]
    high = [k for k, s in enumerate(after) if s[1] >= LAG_GOAL_S]
    if not high:
        back_after = 0.0
    elif high[-1] + 1 < len(after):
        back_after = round(after[high[-1] + 1][0] - moment, 1)
    else:
        back_after = None  # still behind when the load ended
    return {
        "storm_faults": len(outcomes),
        "storm_faults_stored_within_s": round(max(faults) - moment, 2) if outcomes and None not in faults else None,
        "storm_alarms_within_s": round(max(alarms) - moment, 2) if outcomes and None not in alarms else None,
        "storm_lag_max_s": round(max((s[1] for s in after), default=0.0), 2),
        "lag_back_under_2s_after_s": back_after,
        "storm_at_s": storm_at_s,
    }


def _q(ordered: list[float], q: float) -> float | None:
    return round(quantile(ordered, q), 2) if ordered else None


# --- backlog ---

def run_backlog(args: argparse.Namespace, database_url: str, dbname: str) -> dict[str, Any]:
    """Write a backlog, then time diagnostics through it with each worker count in turn."""
    ids = [f"P{i:06d}" for i in range(args.controllers)]
    with psycopg.connect(database_url) as conn:
        register_equipment(conn, [EquipmentRecord(e, f"S{e}", MODEL, "excavator", "bench") for e in ids])
    faulty = set(fault_plan(ids, args.fault_share, (0.0, 0.0), seed=args.seed))
    faulty_ids = {f.equipment_id for f in faulty}
    code = FaultCode(100, 17, 1)
    expected = {(e, expected_fault(DTC, 100, 17)[0]) for e in faulty_ids}
    per_machine = args.backlog_readings
    written_s = _write_backlog(database_url, ids, per_machine, args.readings_per_msg, args.backlog_batch,
                               faulty_ids, code)
    total = len(ids) * per_machine
    env = _environment(database_url, "mqtt://127.0.0.1:1", "bench-backlog", 1)
    phases = []
    for count in args.backlog_workers:
        with psycopg.connect(database_url, autocommit=True) as conn:
            _reset_diagnostics(conn)
        workers = Workers(env)
        sampler = None
        try:
            launched_at = time.time()
            how = workers.start_many("diagnostics", count)
            # Timed from the first worker's database connection: the interpreter's start and imports
            # are not diagnosis (and CPU is counted from then on too).
            began = _first_connection(database_url, launched_at, workers)
            sampler = ProcessSampler({"diagnostics": workers.pids("diagnostics")}, dbname)
            sampler.start()
            done_at, diagnosed = _wait_consumed(database_url, workers, total, args.drain_timeout + total / 5000)
            cores = sampler.cores()
            cpu_s = cores.get("diagnostics", 0.0) * sampler.wall_s
        finally:
            if sampler is not None:
                sampler.stop()
            workers.stop()
        with psycopg.connect(database_url, autocommit=True) as conn:
            found = Counter((e, c) for e, c in conn.execute("SELECT equipment_id, fault_code FROM faults"))
        elapsed = (done_at - began) if done_at else None
        rate = diagnosed / elapsed if elapsed else None
        phases.append({
            "workers": count, "launched": how, "readings": diagnosed, "seconds": round(elapsed, 2) if elapsed else None,
            "readings_per_s": round(rate, 1) if rate else None,
            "readings_per_s_per_worker": round(rate / count, 1) if rate else None,
            # Readings per CPU second of the diagnostics processes: per core, whatever the idle time.
            "readings_per_s_per_core": round(diagnosed / cpu_s, 1) if cpu_s else None,
            "cores": cores,
            "faults_expected": len(expected), "faults_raised": sum(1 for k in expected if found[k]),
            "faults_missed": sum(1 for k in expected if not found[k]),
            "faults_duplicated": sum(1 for k in expected if found[k] > 1),
            "false_faults": sum(n for k, n in found.items() if k not in expected),
        })
    result: dict[str, Any] = {
        "mode": "backlog", "backlog_readings": total, "backlog_write_s": round(written_s, 1),
        "backlog_written_readings_per_s": round(total / written_s, 1), "phases": phases,
        "controllers": args.controllers, "readings_per_machine": per_machine,
        "readings_per_msg": args.readings_per_msg, "batch_readings": args.backlog_batch,
        "progress_source": _progress_source(database_url), "at": datetime.now(UTC).isoformat(),
    }
    for phase in phases:
        result[f"readings_per_s_{phase['workers']}w"] = phase["readings_per_s"]
        result[f"readings_per_s_per_worker_{phase['workers']}w"] = phase["readings_per_s_per_worker"]
    rates = {p["workers"]: p["readings_per_s"] for p in phases}
    if rates.get(1) and rates.get(2):
        result["speedup_2w_over_1w"] = round(rates[2] / rates[1], 2)
    return result


def _progress_source(database_url: str) -> str:
    with psycopg.connect(database_url, autocommit=True) as conn:
        return diagnostics_progress(conn).source


def _write_backlog(database_url: str, ids: list[str], per_machine: int, readings_per_msg: int, batch_readings: int,
                   faulty: set[str], code: FaultCode) -> float:
    """Readings of the fleet, ``per_machine`` each a second apart ending a minute ago, committed in
    batches as ingest commits them (a slice of the fleet, ``readings_per_msg`` consecutive readings
    per machine); the machines in ``faulty`` carry ``code`` from their middle reading on."""
    from ingest.writer import Batch, BatchWriter

    started = time.monotonic()
    machines_per_batch = max(1, batch_readings // readings_per_msg)
    end_ms = int(time.time() * 1000) - 60_000
    first_ms = end_ms - per_machine * 1000
    codes = (code,)
    with psycopg.connect(database_url) as conn:
        writer = BatchWriter(conn, "bench-backlog", datetime.now(UTC))
        for r0 in range(0, per_machine, readings_per_msg):
            span = range(r0, min(per_machine, r0 + readings_per_msg))
            for m0 in range(0, len(ids), machines_per_batch):
                batch = Batch(messages=0)
                for i in range(m0, min(len(ids), m0 + machines_per_batch)):
                    equipment_id = ids[i]
                    carries = equipment_id in faulty
                    for r in span:
                        ts_ms = first_ms + r * 1000 + i % 1000
                        batch.readings.append((equipment_id, reading_values(
                            i, r, ts_ms, first_ms, codes=codes if carries and r >= per_machine // 2 else ())))
                    batch.messages += 1
                    batch.add_sequence(equipment_id, r0 // readings_per_msg + 1)
                writer.write(batch)
            print(f"backlog: {min(per_machine, r0 + readings_per_msg) * len(ids):,} readings written",
                  file=sys.stderr, flush=True)
    return time.monotonic() - started


def _reset_diagnostics(conn: psycopg.Connection) -> None:
    """Back to before diagnostics ran: no faults, no state, no cursors."""
    conn.execute("DELETE FROM fault_events")
    conn.execute("DELETE FROM faults")
    conn.execute("DELETE FROM shard_checkpoints WHERE consumer = 'diagnostics'")


def _first_connection(database_url: str, since: float, workers: Workers, timeout_s: float = 60.0) -> float:
    """When the first backend opened after ``since`` connected to the database (epoch seconds)."""
    deadline = time.monotonic() + timeout_s
    with psycopg.connect(database_url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            began = conn.execute(
                """SELECT extract(epoch FROM min(backend_start))::float8 FROM pg_stat_activity
                   WHERE datname = current_database() AND backend_start >= to_timestamp(%s)
                     AND pid <> pg_backend_pid()""", (since,)).fetchone()[0]
            if began is not None:
                return began
            if workers.exited():
                raise RuntimeError(f"diagnostics exited: {workers.exited()}")
            time.sleep(0.05)
    raise TimeoutError("diagnostics did not connect to the database")


def _wait_consumed(database_url: str, workers: Workers, total: int, timeout_s: float) -> tuple[float | None, int]:
    """Until diagnostics has consumed every batch: (wall clock then or None, readings diagnosed)."""
    deadline = time.monotonic() + timeout_s
    diagnosed = 0
    with psycopg.connect(database_url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            if workers.exited():
                raise RuntimeError(f"diagnostics exited: {workers.exited()}")
            now = time.time()
            progress = diagnostics_progress(conn)
            diagnosed = progress.diagnosed_readings
            if progress.waiting_batches == 0 and diagnosed >= total:
                return now, diagnosed
            time.sleep(0.1)
    return None, diagnosed


# --- output ---

def _summary(result: dict[str, Any]) -> list[str]:
    if result["mode"] == "backlog":
        lines = [f"backlog of {result['backlog_readings']:,} readings (written at "
                 f"{result['backlog_written_readings_per_s']:,.0f}/s)"]
        for p in result["phases"]:
            lines.append(f"  {p['launched']}: {p['readings_per_s'] or 0:,.0f} readings/s in {p['seconds']} s, "
                         f"{p['readings_per_s_per_worker'] or 0:,.0f} per worker, "
                         f"{p['readings_per_s_per_core'] or 0:,.0f} per diagnostics core; faults "
                         f"{p['faults_raised']}/{p['faults_expected']}, duplicated {p['faults_duplicated']}, "
                         f"false {p['false_faults']}")
        if "speedup_2w_over_1w" in result:
            lines.append(f"  2 workers / 1 worker: {result['speedup_2w_over_1w']}×")
        return lines
    lines = [
        f"{result['mode']}: {result['controllers']:,} controllers, {result['msg_rate']:,.0f} msg/s × "
        f"{result['readings_per_msg']} readings for {result['duration_s']:.0f} s; diagnostics: {result['launched']}",
        f"  stored {result['readings_per_s_stored']:,.0f} readings/s, diagnosed "
        f"{result['readings_per_s_diagnosed']:,.0f}/s; lag p50 {result['diagnosis_lag_p50_s']} s, "
        f"p99 {result['diagnosis_lag_p99_s']} s, "
        f"max {result['diagnosis_lag_max_s']} s ({result['progress_source']})",
        f"  faults: {result['faults_raised']}/{result['faults_expected']} raised, {result['faults_missed']} missed, "
        f"{result['faults_duplicated']} duplicated, {result['false_faults']} false {result['false_fault_codes']}, "
        f"{result['collateral_faults']} collateral {result['collateral_fault_codes']}",
        f"  latency published → fault p50/p99 {result['fault_latency_p50_s']}/{result['fault_latency_p99_s']} s, "
        f"→ alarm {result['alarm_latency_p50_s']}/{result['alarm_latency_p99_s']} s, → ticket p99 "
        f"{result['ticket_latency_p99_s']} s (polled every {ROW_POLL_S} s); tickets "
        f"{result['tickets_opened']}/{result['tickets_expected']}",
        f"  cores: {result['cores_under_load']}",
    ]
    if result["mode"] == "storm":
        lines.append(f"  storm of {result['storm_faults']}: all stored within {result['storm_faults_stored_within_s']}"
                     f" s, alarmed within {result['storm_alarms_within_s']} s, lag max {result['storm_lag_max_s']} s, "
                     f"back under 2 s after {result['lag_back_under_2s_after_s']} s")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=None, help="seconds of load (default 60; storm 120)")
    parser.add_argument("--controllers", type=int, default=10_000)
    parser.add_argument("--msg-rate", type=float, default=10_000.0, help="messages/s from the whole fleet")
    parser.add_argument("--readings-per-msg", type=int, default=1)
    parser.add_argument("--codec", choices=("json", "binary"), default="json")
    parser.add_argument("--fault-share", type=float, default=0.01, help="share of controllers with an injected fault")
    parser.add_argument("--diagnostics-workers", type=int, default=2)
    parser.add_argument("--alarms-workers", type=int, default=1)
    parser.add_argument("--ingest-workers", type=int, default=2)
    parser.add_argument("--load-processes", type=int, default=2)
    parser.add_argument("--storm", action="store_true", help="every controller trips a minor DTC at --storm-at")
    parser.add_argument("--storm-at", type=float, default=30.0, help="seconds into the load window")
    parser.add_argument("--backlog", action="store_true", help="time diagnostics through a stored backlog")
    parser.add_argument("--backlog-readings", type=int, default=120, help="readings per machine in the backlog")
    parser.add_argument("--backlog-batch", type=int, default=1000, help="readings per accepted batch")
    parser.add_argument("--backlog-workers", type=lambda s: [int(x) for x in s.split(",")], default=[1, 2],
                        help="worker counts to time, in turn (default 1,2)")
    parser.add_argument("--drain-timeout", type=float, default=90.0,
                        help="seconds to wait after the load for the last faults, alarms and tickets")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--kill-at", type=float, default=None,
                        help="SIGKILL one diagnostics worker this many seconds into the load; reports takeover_s")
    parser.add_argument("--keep-database", action="store_true")
    args = parser.parse_args()
    if args.duration is None:
        args.duration = args.storm_at + 90.0 if args.storm else 60.0
    if args.storm and args.duration < args.storm_at + 30:
        parser.error("--duration must leave at least 30 s after --storm-at")

    run_id = uuid.uuid4().hex[:8]
    with services(Path(".ironsight-bench-pipeline").resolve()) as (server_url, mqtt_url, broker_pid):
        dbname = f"ironsight_pipeline_{run_id}"
        with fresh_database(server_url, dbname, keep=args.keep_database) as database_url:
            if args.backlog:
                result = run_backlog(args, database_url, dbname)
            else:
                result = run_live(args, database_url, mqtt_url, broker_pid, dbname)
    for line in _summary(result):
        print(line)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
