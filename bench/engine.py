"""Throughput of the diagnostics engine (diagnostics.shard_engine.ShardEngine) without the database.

A shard of ``--machines`` machines (every equipment model, an unknown one too, most with a site, some
with permitted hours in several time zones, half with trained oil, coolant and pressure models) is fed
synthetic readings that vary as a working fleet's do: engines switching between idle and work, oil
and coolant following the load, pressure noise with occasional spikes, GPS dropouts, now and then a
DTC, and a few machines overheating, so that faults are raised and cleared and causes re-ranked
while the clock runs. The readings are built before timing; only ``ShardEngine.feed`` is timed.

Two modes: one reading per machine per ``feed`` call (the live case), and runs of ten readings per
machine per call (a controller that batches). Also timed: ``export`` and ``restore`` of the shard.

Last line: one JSON object with readings per second for both modes, checkpoint times and size.
Pin it to one core to measure per-core throughput: ``taskset -c 0 .venv/bin/python bench/engine.py``.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.telemetry import CHANNELS  # noqa: E402
from device_sim.machine import SimulatedMachine  # noqa: E402
from device_sim.simulated_fleet import SITES, build_fleet  # noqa: E402
from diagnostics.models import fit_models  # noqa: E402
from diagnostics.rules import EquipmentContext, Site  # noqa: E402
from diagnostics.shard_engine import ShardEngine  # noqa: E402

START = datetime(2026, 6, 1, 6, 0, tzinfo=UTC)
MODELS = ("EX210", "EX350", "TC500", "CP42", "ZX999")
ZONES = ("Europe/Amsterdam", "Europe/Berlin", "Asia/Kolkata", "America/New_York")
PERMITTED = (None, None, (6, 20), (7, 19), (20, 6))


def train_models():
    """Every kind of model, fitted on two hours of a healthy machine (the pressure model needs the
    working time of that)."""
    spec = build_fleet(1, fault_share=0.0, seed=11)[0]
    sim = SimulatedMachine(spec, START, seed=5)
    history = []
    for i in range(3600):
        sim.advance(2.0)
        reading = sim.reading(START + timedelta(seconds=2 * (i + 1)))
        history.append((reading.ts, {c: getattr(reading, c) for c in CHANNELS}))
    return fit_models([history])


def contexts(count: int) -> list[EquipmentContext]:
    models = train_models()
    result = []
    for i in range(count):
        site = None
        if i % 10:
            home = SITES[i % len(SITES)]
            site = Site(home.lat, home.lon, home.radius_m, ZONES[i % len(ZONES)], PERMITTED[i % len(PERMITTED)])
        result.append(EquipmentContext(f"EQ-{i:06d}", MODELS[i % len(MODELS)], site,
                                       1000.0 if i % 3 == 0 else None, models if i % 2 else {}))
    return result


class Fleet:
    """Synthetic readings for all machines at once, one row per machine per call."""

    def __init__(self, ctxs: list[EquipmentContext], seed: int = 1) -> None:
        n = len(ctxs)
        self.n = n
        self.rng = np.random.default_rng(seed)
        self.working = self.rng.random(n) < 0.5
        self.load = np.where(self.working, 0.7, 0.1)
        self.oil = 70.0 + self.rng.normal(0, 5, n)
        self.coolant = 84.0 + self.rng.normal(0, 2, n)
        self.hours = self.rng.uniform(100.0, 8000.0, n)
        self.fuel = self.rng.uniform(30.0, 95.0, n)
        lat = np.array([c.site.lat if c.site else 50.0 for c in ctxs])
        lon = np.array([c.site.lon if c.site else 8.0 for c in ctxs])
        self.lat = lat + self.rng.normal(0, 0.002, n)
        self.lon = lon + self.rng.normal(0, 0.002, n)
        # A few machines whose cooling fails: they run hot and raise faults during the run.
        self.hot = self.rng.random(n) < 0.02
        self.gps_lost = np.zeros(n, dtype=bool)

    def step(self, dt: float) -> dict[str, np.ndarray]:
        rng, n = self.rng, self.n
        switch = rng.random(n) < dt / 60.0  # a mode change about once a minute
        self.working ^= switch
        target = np.where(self.working, 0.65 + 0.25 * rng.random(n), 0.05)
        blend = 1.0 - np.exp(-dt / 5.0)
        self.load += (target - self.load) * blend
        rpm = np.where(self.working, 1900.0, 800.0) * (0.9 + 0.1 * self.load) + rng.normal(0, 15, n)
        oil_target = 25.0 + 60.0 * self.load + np.where(self.hot, 45.0, 0.0)
        self.oil += (oil_target - self.oil) * (1.0 - np.exp(-dt / 300.0))
        self.coolant += (82.0 + 8.0 * self.load - self.coolant) * (1.0 - np.exp(-dt / 120.0))
        pressure = np.where(self.working, 220.0 + 80.0 * self.load, 30.0) + rng.normal(0, 4, n)
        pressure = np.where(rng.random(n) < 0.002, 450.0, pressure)
        self.hours += dt / 3600.0
        self.fuel -= dt * 0.001
        self.lat += rng.normal(0, 2e-6, n)
        self.lon += rng.normal(0, 2e-6, n)
        self.gps_lost ^= rng.random(n) < 0.0005
        values = {
            "oil_temp_c": np.round(self.oil + rng.normal(0, 0.3, n), 2),
            "engine_rpm": np.round(np.maximum(rpm, 0.0), 1),
            "hydraulic_pressure_bar": np.round(np.maximum(pressure, 0.0), 1),
            "coolant_temp_c": np.round(self.coolant + rng.normal(0, 0.3, n), 2),
            "fuel_level_pct": np.round(self.fuel, 2),
            "engine_hours": np.round(self.hours, 4),
            "lat": np.where(self.gps_lost, np.nan, np.round(self.lat, 6)),
            "lon": np.where(self.gps_lost, np.nan, np.round(self.lon, 6)),
            "speed_kmh": np.where(self.gps_lost, np.nan, 0.0),
            "ambient_temp_c": np.round(18.0 + rng.normal(0, 0.1, n), 2),
        }
        dropped = rng.random(n) < 0.01  # a channel missing from a reading now and then
        values["coolant_temp_c"] = np.where(dropped, np.nan, values["coolant_temp_c"])
        return values


def batches(fleet: Fleet, ids: np.ndarray, start_s: float, rounds: int, per_round: int, step_s: float):
    """Pre-built feed arguments: ``per_round`` readings per machine per call, sorted by (id, ts)."""
    out = []
    t = start_s
    n = len(ids)
    for _ in range(rounds):
        columns = []
        times = []
        for _ in range(per_round):
            t += step_s
            columns.append(fleet.step(step_s))
            times.append(t)
        # Row order (machine, k): machine-major, as the worker's ORDER BY equipment_id, ts gives.
        ts = np.repeat(np.array([[x for x in times]]), n, axis=0).ravel()
        values = {c: np.stack([col[c] for col in columns], axis=1).ravel() for c in CHANNELS}
        codes = {}
        for i in np.flatnonzero(fleet.rng.random(n * per_round) < 0.0005):
            codes[int(i)] = ((110, 16, 1),) if i % 2 else ((9999, 3, 2),)
        arrived = ts + 0.5
        out.append((np.repeat(ids, per_round), ts, values, codes, arrived))
    return out, t


def run(shard: ShardEngine, feeds) -> tuple[int, float, int]:
    rows = changes = 0
    started = time.perf_counter()
    for ids, ts, values, codes, arrived in feeds:
        result, _ = shard.feed(ids, ts, values, codes, arrived)
        rows += len(ts)
        changes += len(result)
    return rows, time.perf_counter() - started, changes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--machines", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=40, help="feed calls of one reading per machine")
    parser.add_argument("--rounds-10", type=int, default=8, help="feed calls of ten readings per machine")
    parser.add_argument("--profile", action="store_true", help="print a cProfile of the timed feeds")
    args = parser.parse_args()

    ctxs = contexts(args.machines)
    shard = ShardEngine()
    for ctx in ctxs:
        shard.add(ctx)
    ids = np.array([c.equipment_id for c in ctxs])
    fleet = Fleet(ctxs)
    t0 = START.timestamp()
    # Warm-up: 20 minutes of history, so that the oil model judges (after 15 minutes of load history).
    warm, t = batches(fleet, ids, t0, 12, 10, 10.0)
    run(shard, warm)
    one, t = batches(fleet, ids, t, args.rounds, 1, 1.0)
    ten, t = batches(fleet, ids, t, args.rounds_10, 10, 1.0)

    profiler = cProfile.Profile() if args.profile else None
    if profiler:
        profiler.enable()
    rows_1, seconds_1, changes_1 = run(shard, one)
    rows_10, seconds_10, changes_10 = run(shard, ten)
    ticked = time.perf_counter()
    shard.tick(t + 1.0)
    tick_ms = (time.perf_counter() - ticked) * 1e3
    if profiler:
        profiler.disable()
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(30)

    # Checkpoints: the median of three, since a full garbage collection of the process's heap may land
    # in any one of them (it costs what the heap holds, not what the engine does).
    export_ms, restore_ms = [], []
    for _ in range(3):
        started = time.perf_counter()
        blob = shard.export(ids.tolist())
        export_ms.append((time.perf_counter() - started) * 1e3)
        restored = ShardEngine()
        started = time.perf_counter()
        restored.restore(blob, {c.equipment_id: c for c in ctxs})
        restore_ms.append((time.perf_counter() - started) * 1e3)

    print(f"1 per round:  {rows_1} readings in {seconds_1:.2f} s, {changes_1} changes")
    print(f"10 per round: {rows_10} readings in {seconds_10:.2f} s, {changes_10} changes")
    print(json.dumps({
        "readings_per_s_1_per_round": round(rows_1 / seconds_1),
        "readings_per_s_10_per_round": round(rows_10 / seconds_10),
        "tick_ms": round(tick_ms, 1),
        "export_ms": round(statistics.median(export_ms), 1),
        "restore_ms": round(statistics.median(restore_ms), 1),
        "checkpoint_bytes": len(blob),
        "machines": args.machines,
    }))


if __name__ == "__main__":
    main()
