"""ShardEngine against the reference: the same readings through one EquipmentEngine per machine and
through one ShardEngine for all machines must give identical changes, late rows and state."""

from __future__ import annotations

import copy
import io
import json
import math
import random
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest

from core.telemetry import CHANNELS
from device_sim.faults import INJECTABLE_FAULTS
from device_sim.machine import SimulatedMachine
from device_sim.simulated_fleet import SITES, build_fleet
from diagnostics.catalogue import FAULTS
from diagnostics.causes import rank_causes
from diagnostics.engine import EquipmentEngine
from diagnostics.models import MODEL_SPECS, fit_models
from diagnostics.rulebook import DEFAULT, Rulebook, rulebook_for
from diagnostics.rules import (
    Curfew,
    Dtc,
    EquipmentContext,
    FaultChange,
    Geofence,
    Missing,
    ModelResidual,
    Offline,
    Plausible,
    RateOfChange,
    Repeated,
    Rule,
    Sample,
    ServiceDue,
    Site,
    Stuck,
    Threshold,
    When,
)
from diagnostics.shard_engine import FORMAT_VERSION, ShardEngine, at_least_us, local_hours, top_cause

START = datetime(2026, 6, 1, 6, 0, tzinfo=UTC)
MODELS = ("EX210", "EX350", "TC500", "CP42", "ZX999")  # ZX999: a model without its own rulebook
# Local permitted hours chosen so that, between 06:00 and 07:00 UTC, curfews start and end on the
# sites' clocks (Amsterdam and Berlin +2, Kolkata +5:30, Lord Howe +10:30).
PERMITTED = (None, (9, 17), (6, 12), (17, 6), (8, 20), (0, 24))
ZONES = ("Europe/Amsterdam", "Asia/Kolkata", "Australia/Lord_Howe", "America/New_York", "UTC")

# A rulebook exercising the parameters the production rulebooks leave at one setting: smoothing
# above, a "<" condition, several severity levels, Stuck without a condition, fast rates, short windows.
CUSTOM = Rulebook("CUSTOM", (
    Threshold("oil_hot", "OIL_OVERHEAT", signal="oil_temp_c", raise_at=60.0, clear_at=58.0, sustain_s=20.0,
              clear_sustain_s=10.0, severity="minor", smooth_s=30.0, when=When("engine_rpm", "<", 1900.0),
              severity_levels=((65.0, "major"), (75.0, "critical"))),
    Threshold("pressure_low", "HYDRAULIC_PRESSURE_LOW", version=3, signal="hydraulic_pressure_bar", raise_at=150.0,
              clear_at=170.0, direction="below", sustain_s=6.0, clear_sustain_s=6.0),
    Repeated("spikes", "HYDRAULIC_PRESSURE_SPIKES", signal="hydraulic_pressure_bar", raise_at=300.0, count=2,
             window_s=60.0),
    RateOfChange("oil_rate", "OIL_TEMP_RISING_FAST", signal="oil_temp_c", max_per_min=0.4, window_s=40.0,
                 steady_signal="engine_rpm", steady_band=600.0, steady_s=30.0),
    Stuck("coolant_stuck", "SENSOR_STUCK", signal="coolant_temp_c", tolerance=0.3, window_s=20.0),
    Plausible("rpm_plausible", "SENSOR_IMPLAUSIBLE", signal="engine_rpm", low=100.0, high=2100.0, sustain_s=4.0),
    Missing("speed_missing", "GPS_LOST", signals=("speed_kmh",), sustain_s=8.0),
    Geofence("fence", "GEOFENCE_EXIT", sustain_s=0.0, margin_m=0.0),
    Curfew("curfew", "CURFEW_VIOLATION", running_rpm=1000.0, sustain_s=0.0),
    Dtc("dtc", "J1939", clear_after_s=5.0),
    ServiceDue("service", "SERVICE_DUE", interval_h=0.25, major_every_h=(0.5, 1.0), warn_before_h=0.05),
    ModelResidual("oil_model", "OIL_TEMP_ABOVE_EXPECTED", raise_sigmas=2.0, clear_sigmas=1.0, min_excess=1.0,
                    sustain_s=4.0, clear_sustain_s=4.0),
    # Hair-trigger: the models' judgement of averages, noise and direction change state often here.
    ModelResidual("pressure_model", "HYDRAULIC_PRESSURE_BELOW_EXPECTED", model_kind="hydraulic_pressure",
                  direction="below", raise_sigmas=1.0, clear_sigmas=0.5, min_excess=2.0, sustain_s=4.0,
                  clear_sustain_s=4.0, bias_time_constant_s=600.0, restart_after_s=25.0, relearn_s=30.0,
                  relearn_time_constant_s=10.0),
    ModelResidual("coolant_model", "COOLANT_TEMP_ABOVE_EXPECTED", model_kind="coolant_temp", raise_sigmas=1.5,
                  clear_sigmas=0.5, min_excess=0.3, sustain_s=4.0, clear_sustain_s=4.0),
    Offline("offline", "OFFLINE", after_s=30.0),
))


def custom_rulebook_for(model: str) -> Rulebook:
    return CUSTOM if model == "CUSTOM" else rulebook_for(model)


# --- comparing ----------------------------------------------------------------------------------


def assert_same(actual: Any, expected: Any, path: str = "") -> None:
    """Equal, with floats allowed to differ in their last bits (numpy's exp is not libm's)."""
    if isinstance(expected, float) and isinstance(actual, float | int) and not isinstance(actual, bool):
        assert math.isclose(actual, expected, rel_tol=1e-9, abs_tol=1e-9), f"{path}: {actual!r} != {expected!r}"
    elif isinstance(expected, dict):
        assert isinstance(actual, dict) and actual.keys() == expected.keys(), (
            f"{path}: keys {sorted(actual) if isinstance(actual, dict) else actual!r} != {sorted(expected)}")
        for key in expected:
            assert_same(actual[key], expected[key], f"{path}.{key}")
    elif isinstance(expected, list | tuple):
        assert isinstance(actual, list | tuple) and len(actual) == len(expected), f"{path}: {actual!r} != {expected!r}"
        for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
            assert_same(a, e, f"{path}[{i}]")
    else:
        assert type(actual) is type(expected) or isinstance(expected, int | float), (
            f"{path}: {actual!r} != {expected!r}")
        assert actual == expected, f"{path}: {actual!r} != {expected!r}"


def change_dict(eid: str, change: FaultChange) -> dict[str, Any]:
    return {"equipment_id": eid, "kind": change.kind, "fault_code": change.fault_code, "severity": change.severity,
            "at": change.at, "rule": change.rule, "rule_version": change.rule_version, "evidence": change.evidence,
            "diagnosis": change.diagnosis}


def assert_same_changes(actual: list[tuple[str, FaultChange]], expected: list[tuple[str, FaultChange]],
                        where: str) -> None:
    got = [change_dict(e, c) for e, c in actual]
    want = [change_dict(e, c) for e, c in expected]
    assert [(c["equipment_id"], c["kind"], c["fault_code"], c["at"]) for c in got] == [
        (c["equipment_id"], c["kind"], c["fault_code"], c["at"]) for c in want], where
    for g, w in zip(got, want, strict=True):
        assert g["at"].utcoffset() == timedelta(0)
        assert_same(g, w, where)
        if w["diagnosis"]:  # stored as JSON: the statistics in the same order too
            assert list(g["diagnosis"]["evidence"]) == list(w["diagnosis"]["evidence"]), where


# --- the reference: one EquipmentEngine per machine, fed as diagnostics/worker.py feeds it ----------


class Reference:
    def __init__(self, rulebooks=rulebook_for) -> None:
        self.rulebooks = rulebooks
        self.engines: dict[str, EquipmentEngine] = {}

    def add(self, ctx: EquipmentContext, state: dict | None = None) -> None:
        self.engines[ctx.equipment_id] = EquipmentEngine(self.rulebooks(ctx.model), ctx, state)

    def set_context(self, ctx: EquipmentContext) -> None:
        # The worker builds the engine afresh from the stored state with the current context.
        state = json.loads(json.dumps(self.engines[ctx.equipment_id].state()))
        self.add(ctx, state)

    def feed(self, rows: list[Row]) -> tuple[list[tuple[str, FaultChange]], list[int]]:
        changes, late = [], []
        for i, row in enumerate(rows):
            engine = self.engines[row.eid]
            if engine.last_ts is not None and row.ts <= engine.last_ts:
                late.append(i)
                if row.arrived is not None:
                    engine.last_arrival = max(engine.last_arrival or row.arrived, row.arrived)
                continue
            sample = Sample(row.ts, dict(row.values), row.codes)
            changes += [(row.eid, c) for c in engine.feed(sample, row.arrived)]
        return changes, late

    def tick(self, now: datetime) -> list[tuple[str, FaultChange]]:
        return [(eid, c) for eid, engine in self.engines.items() for c in engine.tick(now)]


@dataclass
class Row:
    eid: str
    ts: datetime
    values: dict[str, float | None]
    codes: tuple[tuple[int, int, int], ...] = ()
    arrived: datetime | None = None


def shard_feed(shard: ShardEngine, rows: list[Row]) -> tuple[list[tuple[str, FaultChange]], list[int]]:
    n = len(rows)
    values = {c: np.array([np.nan if r.values.get(c) is None else r.values[c] for r in rows], dtype=np.float64)
              for c in CHANNELS}
    codes = {i: r.codes for i, r in enumerate(rows) if r.codes}
    arrived = np.array([np.nan if r.arrived is None else r.arrived.timestamp() for r in rows])
    changes, late = shard.feed([r.eid for r in rows], np.array([r.ts.timestamp() for r in rows]), values,
                               codes or None, arrived if n else None)
    return changes, late.tolist()


def by_machine(changes: list[tuple[str, FaultChange]]) -> list[tuple[str, FaultChange]]:
    return sorted(changes, key=lambda item: item[0])


def assert_same_state(shard: ShardEngine, reference: Reference, where: str) -> None:
    for eid, engine in reference.engines.items():
        assert_same(shard.state(eid), json.loads(json.dumps(engine.state())), f"{where} state of {eid}")


# --- simulated fleet with faults and disturbances -----------------------------------------------


@dataclass
class Machine:
    ctx: EquipmentContext
    sim: SimulatedMachine
    step_s: float
    rng: random.Random
    elapsed_s: float = 0.0
    sent: list[Row] = field(default_factory=list)
    silent_until_s: float = -1.0
    extra_codes: tuple = ()
    extra_codes_until_s: float = -1.0
    implausible_until_s: float = -1.0
    gps_lost_until_s: float = -1.0
    away_until_s: float = -1.0

    def readings(self, until_s: float) -> list[Row]:
        """The readings from the machine's clock up to ``until_s``, with the disturbances a fleet shows."""
        rows = []
        while self.elapsed_s + self.step_s <= until_s + 1e-9:
            self.elapsed_s += self.step_s
            self.sim.advance(self.step_s)
            ts = START + timedelta(seconds=self.elapsed_s)
            reading = self.sim.reading(ts)
            rng = self.rng
            if self.elapsed_s < self.silent_until_s:
                continue  # no coverage: the machine works on, nothing arrives
            if rng.random() < 0.0015:
                self.silent_until_s = self.elapsed_s + rng.choice((60.0, 200.0, 1000.0))
            values = {c: getattr(reading, c) for c in CHANNELS}
            if rng.random() < 0.002:
                self.gps_lost_until_s = self.elapsed_s + rng.uniform(5.0, 80.0)
            if self.elapsed_s < self.gps_lost_until_s:
                values.update(lat=None, lon=None, speed_kmh=None)
            if rng.random() < 0.002:  # taken off site for a while (or a GPS fix far off)
                self.away_until_s = self.elapsed_s + rng.uniform(5.0, 90.0)
            if self.elapsed_s < self.away_until_s and values["lat"] is not None:
                values["lat"] += 0.012
            if rng.random() < 0.03:
                values[rng.choice(CHANNELS)] = None
            if rng.random() < 0.01:
                values["hydraulic_pressure_bar"] = 450.0 + rng.random()
            if rng.random() < 0.003:
                self.implausible_until_s = self.elapsed_s + rng.uniform(5.0, 40.0)
            if self.elapsed_s < self.implausible_until_s:
                values["oil_temp_c"] = 170.0
            codes = tuple((c.spn, c.fmi, c.oc) for c in reading.fault_codes)
            if rng.random() < 0.004:
                self.extra_codes = rng.choice((((110, 16, 2),), ((9999, 3, 1),), ((110, 16, 1), (523000, 31, 4))))
                self.extra_codes_until_s = self.elapsed_s + rng.uniform(10.0, 120.0)
            if self.elapsed_s < self.extra_codes_until_s and rng.random() < 0.7:
                codes += self.extra_codes
            arrived = None if rng.random() < 0.1 else ts + timedelta(seconds=rng.uniform(0.05, 3.0))
            rows.append(Row(self.ctx.equipment_id, ts, values, codes, arrived))
        # Now and then a reading arrives twice, or one already seen arrives again (late).
        if rows and self.rng.random() < 0.05:
            rows.append(replace(rows[-1], arrived=rows[-1].ts + timedelta(seconds=5)))
        if self.sent and self.rng.random() < 0.05:
            old = self.rng.choice(self.sent[-30:])
            rows.insert(0, replace(old, arrived=START + timedelta(seconds=self.elapsed_s, microseconds=1)))
        self.sent += rows[-30:]
        self.sent = self.sent[-30:]
        return rows


_MODELS: dict[int, Any] = {}


def trained_models(seed: int = 5):
    """Every kind of model, trained on two hours of a healthy simulated machine as `ironsight train` does."""
    if seed not in _MODELS:
        spec = build_fleet(1, fault_share=0.0, seed=seed + 6)[0]
        sim = SimulatedMachine(spec, START - timedelta(hours=2), seed=seed)
        history = []
        for i in range(3600):
            sim.advance(2.0)
            reading = sim.reading(START - timedelta(hours=2) + timedelta(seconds=2 * (i + 1)))
            history.append((reading.ts, {c: getattr(reading, c) for c in CHANNELS}))
        _MODELS[seed] = fit_models([history])
        assert set(_MODELS[seed]) == set(MODEL_SPECS)
    return _MODELS[seed]


def build_machines(count: int, seed: int, steps: tuple[float, ...], custom: bool = False) -> list[Machine]:
    rng = random.Random(seed)
    specs = build_fleet(count, fault_share=0.8, seed=seed, faults=tuple(INJECTABLE_FAULTS),
                        fault_after_s=(200.0, 1500.0))
    machines = []
    for i, spec in enumerate(specs):
        model = "CUSTOM" if custom and i % 2 == 0 else MODELS[i % len(MODELS)]
        site = None
        if i % 7 != 3:
            home = SITES[i % len(SITES)]
            site = Site(home.lat, home.lon, home.radius_m if i % 5 else 450.0, ZONES[i % len(ZONES)],
                        PERMITTED[i % len(PERMITTED)])
        sim = SimulatedMachine(spec, START, seed=seed * 1000 + i)
        service = None
        if i % 3 == 0:
            service = math.floor(sim.engine_hours / 250.0) * 250.0 + rng.choice((0.0, 5.0, 245.0))
        models = trained_models(5 if i % 4 == 0 else 6) if i % 2 == 0 else {}
        ctx = EquipmentContext(spec.equipment_id, model, site, service, models)
        machines.append(Machine(ctx, sim, steps[i % len(steps)], random.Random(seed * 7 + i)))
    return machines


def run_fleet(machines: list[Machine], *, rounds: int, span_s: float, rulebooks=rulebook_for,
              migrate_at: int | None = None, checkpoint_at: int | None = None, context_at: int | None = None,
              tick_every: int = 3, compare_state_every: int = 0) -> dict[str, int]:
    """Feed both engines round by round (each round: every machine's readings of ``span_s`` seconds,
    in one feed call), with offline ticks, migrations and a checkpoint mid-stream; compare all."""
    reference, shard = Reference(rulebooks), ShardEngine(rulebooks)
    for m in machines:
        reference.add(m.ctx)
        shard.add(m.ctx)
    counts: dict[str, int] = {"rows": 0, "late": 0, "ticks": 0}
    for r in range(rounds):
        rows = []
        for m in sorted(machines, key=lambda m: m.ctx.equipment_id):
            rows += sorted(m.readings((r + 1) * span_s), key=lambda row: row.ts)
        expected, expected_late = reference.feed(rows)
        actual, actual_late = shard_feed(shard, rows)
        assert actual_late == expected_late, f"round {r}: late rows"
        assert_same_changes(actual, expected, f"round {r}")
        counts["rows"] += len(rows)
        counts["late"] += len(expected_late)
        for _, change in expected:
            key = f"{change.kind}:{change.fault_code}"
            counts[key] = counts.get(key, 0) + 1
        if r % tick_every == tick_every - 1:
            now = START + timedelta(seconds=(r + 1) * span_s + 1.5)
            expected = reference.tick(now)
            assert_same_changes(by_machine(shard.tick(now.timestamp())), by_machine(expected), f"tick {r}")
            counts["ticks"] += len(expected)
            for _, change in expected:
                key = f"tick {change.kind}:{change.fault_code}"
                counts[key] = counts.get(key, 0) + 1
        if r == migrate_at:
            # Machines arriving with the state the old engine stored.
            for m in machines[::4]:
                shard.remove([m.ctx.equipment_id])
                shard.add(m.ctx, json.loads(json.dumps(reference.engines[m.ctx.equipment_id].state())))
        if r == checkpoint_at:
            ids = [m.ctx.equipment_id for m in machines]
            first, second = ids[: len(ids) // 2], ids[len(ids) // 2:]
            blob_first, blob_second = shard.export(first), shard.export(second)
            shard = ShardEngine(rulebooks)
            contexts = {m.ctx.equipment_id: m.ctx for m in machines}
            shard.restore(blob_second, contexts)
            shard.restore(blob_first, contexts)
            assert len(shard) == len(ids)
        if r == context_at:
            for i, m in enumerate(machines):
                if i % 3 == 1:  # a service recorded; a changed site
                    site = m.ctx.site and replace(m.ctx.site, radius_m=m.ctx.site.radius_m * 0.9)
                    m.ctx = replace(m.ctx, last_service_hours=m.sim.engine_hours, site=site)
                elif i % 5 == 2:  # the machine's model corrected: another rulebook
                    m.ctx = replace(m.ctx, model="EX350" if m.ctx.model != "EX350" else "CP42")
                elif i % 5 == 4:  # a model trained for it
                    m.ctx = replace(m.ctx, models=trained_models() if not m.ctx.models else {})
                else:
                    continue
                reference.set_context(m.ctx)
                shard.set_context(m.ctx)
        if compare_state_every and r % compare_state_every == 0:
            assert_same_state(shard, reference, f"round {r}")
    assert_same_state(shard, reference, "end")
    return counts


# --- the equality tests -------------------------------------------------------------------------


def test_one_reading_per_machine_per_feed_equals_the_reference():
    machines = build_machines(30, seed=3, steps=(2.0,))
    counts = run_fleet(machines, rounds=1500, span_s=2.0, migrate_at=400, checkpoint_at=700, context_at=1000,
                       compare_state_every=250)
    raised = {key.split(":", 1)[1] for key in counts if key.startswith("raised:")}
    # Every production rule kind has raised at least once.
    assert {"OIL_OVERHEAT", "COOLANT_OVERHEAT", "HYDRAULIC_PRESSURE_LOW", "HYDRAULIC_PRESSURE_SPIKES",
            "SENSOR_STUCK", "SENSOR_IMPLAUSIBLE", "GPS_LOST", "GEOFENCE_EXIT", "CURFEW_VIOLATION",
            "ENGINE_OIL_PRESSURE_LOW", "SERVICE_DUE", "OIL_TEMP_ABOVE_EXPECTED"} <= raised, counts
    assert any(k.startswith("raised:J1939_") for k in counts), counts
    assert counts.get("cleared:OFFLINE") and counts.get("tick raised:OFFLINE"), counts
    cleared = {key.split(":", 1)[1] for key in counts if key.startswith("cleared:")}
    assert {"OIL_OVERHEAT", "HYDRAULIC_PRESSURE_SPIKES", "SENSOR_STUCK", "SENSOR_IMPLAUSIBLE", "GPS_LOST",
            "GEOFENCE_EXIT", "CURFEW_VIOLATION", "OIL_TEMP_RISING_FAST"} <= cleared, counts
    assert counts.get("updated:OIL_OVERHEAT") or any(k.startswith("updated:") for k in counts), counts
    assert counts["late"] > 10


def test_runs_of_up_to_ten_readings_per_machine_equal_the_reference():
    # Machines reporting every 2, 4, 5, 10 and 20 s: 10, 5, 4, 2 and 1 readings per 20 s feed call.
    machines = build_machines(30, seed=4, steps=(2.0, 4.0, 5.0, 10.0, 20.0))
    counts = run_fleet(machines, rounds=150, span_s=20.0, migrate_at=40, checkpoint_at=70, context_at=100,
                       tick_every=1, compare_state_every=30)
    assert counts.get("raised:OIL_OVERHEAT") and counts.get("raised:GEOFENCE_EXIT"), counts
    assert counts["late"] > 10


def test_a_custom_rulebook_with_other_parameters_equals_the_reference():
    machines = build_machines(24, seed=5, steps=(2.0, 1.0, 3.0, 0.7), custom=True)
    counts = run_fleet(machines, rounds=300, span_s=6.0, rulebooks=custom_rulebook_for, migrate_at=100,
                       checkpoint_at=150, context_at=200, tick_every=4, compare_state_every=50)
    for code in ("OIL_TEMP_RISING_FAST", "SENSOR_STUCK", "SERVICE_DUE", "HYDRAULIC_PRESSURE_SPIKES",
                 "HYDRAULIC_PRESSURE_LOW", "OIL_TEMP_ABOVE_EXPECTED", "GPS_LOST"):
        assert counts.get(f"raised:{code}") and counts.get(f"cleared:{code}"), (code, counts)


def test_a_machine_migrated_with_its_engine_state_continues_identically():
    machines = build_machines(6, seed=6, steps=(2.0,))
    reference, shard = Reference(), ShardEngine()
    for m in machines:
        reference.add(m.ctx)
    for r in range(900):
        rows = [row for m in machines for row in sorted(m.readings((r + 1) * 2.0), key=lambda row: row.ts)]
        if r == 600:
            for m in machines:
                shard.add(m.ctx, copy.deepcopy(reference.engines[m.ctx.equipment_id].state()))
        expected, late = reference.feed(rows)
        if r >= 600:
            actual, actual_late = shard_feed(shard, rows)
            assert actual_late == late
            assert_same_changes(actual, expected, f"round {r}")
    assert_same_state(shard, reference, "end")


def test_checkpoint_is_compact_and_versioned():
    machines = build_machines(12, seed=7, steps=(2.0,))
    shard = ShardEngine()
    for m in machines:
        shard.add(m.ctx)
    for r in range(200):
        rows = [row for m in machines for row in sorted(m.readings((r + 1) * 2.0), key=lambda row: row.ts)]
        shard_feed(shard, rows)
    ids = [m.ctx.equipment_id for m in machines]
    blob = shard.export(ids)
    assert len(blob) < 30_000  # mostly fixed overhead; ~470 bytes per machine at 10,000 machines
    restored = ShardEngine()
    restored.restore(blob, {m.ctx.equipment_id: m.ctx for m in machines})
    for eid in ids:
        assert_same(restored.state(eid), shard.state(eid), eid)
    np.testing.assert_array_equal(restored.last_ts(ids), shard.last_ts(ids))
    with pytest.raises(ValueError, match="already"):
        restored.restore(blob, {m.ctx.equipment_id: m.ctx for m in machines})
    # A checkpoint of another format is refused, not misread.
    other = ShardEngine()
    with np.load(io.BytesIO(blob), allow_pickle=False) as npz:
        arrays = {name: npz[name] for name in npz.files}
    meta = json.loads(arrays["meta"].tobytes())
    assert meta["format"] == FORMAT_VERSION
    meta["format"] += 1
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    tampered = buffer.getvalue()
    with pytest.raises(ValueError, match="format"):
        other.restore(tampered, {m.ctx.equipment_id: m.ctx for m in machines})


# --- interface and edge cases -------------------------------------------------------------------


def test_interface_membership_last_ts_and_removal():
    shard = ShardEngine()
    ctx = EquipmentContext("EX-1", "EX210")
    shard.add(ctx)
    assert "EX-1" in shard and len(shard) == 1
    assert np.isnan(shard.last_ts(["EX-1"])[0])
    with pytest.raises(ValueError, match="already"):
        shard.add(ctx)
    values = {c: np.array([np.nan, np.nan]) for c in CHANNELS}
    t0 = START.timestamp()
    changes, late = shard.feed(["EX-1", "EX-1"], np.array([t0, t0 + 1.5]), values)
    assert changes == [] and late.tolist() == []
    assert shard.last_ts(["EX-1"])[0] == t0 + 1.5
    _, late = shard.feed(["EX-1", "EX-1"], np.array([t0 + 1.5, t0 + 2.0]), values)
    assert late.tolist() == [0]
    with pytest.raises(KeyError, match="EX-2"):
        shard.feed(["EX-1", "EX-2"], np.array([t0 + 3, t0 + 3]), values)
    with pytest.raises(ValueError, match="sorted"):
        shard.feed(["EX-1", "EX-1"], np.array([t0 + 9, t0 + 8]), values)
    shard.remove(["EX-1"])
    assert "EX-1" not in shard and len(shard) == 0
    assert shard.feed([], np.array([]), {})[0] == []


def test_an_unknown_rule_kind_is_refused_when_the_machine_is_added():
    class Vibration(Rule):
        def evaluate(self, state, sample, ctx):
            return []

    class MyThreshold(Threshold):  # a subclass may evaluate differently: not assumed equal
        pass

    books = {"V1": Rulebook("V1", (*DEFAULT.rules, Vibration("vibration", "VIBRATION"))),
             "T1": Rulebook("T1", (MyThreshold("x", "X", signal="oil_temp_c"),))}
    shard = ShardEngine(lambda model: books.get(model) or rulebook_for(model))
    for model, kind in (("V1", "Vibration"), ("T1", "MyThreshold")):
        with pytest.raises(ValueError, match=kind):
            shard.add(EquipmentContext(f"{model}-1", model))
        assert f"{model}-1" not in shard
    shard.add(EquipmentContext("EX-1", "EX210"))


def test_local_hours_follow_every_zone_through_its_transitions():
    zones = ("Europe/Amsterdam", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata", "Asia/Kathmandu",
             "America/St_Johns", "Pacific/Chatham", "UTC")
    from zoneinfo import ZoneInfo

    from diagnostics.shard_engine import _tz_index

    rng = np.random.default_rng(1)
    # Around this year's and next year's transitions (March/April, October/November) and at random.
    anchors = [datetime(2026, m, d, tzinfo=UTC).timestamp() for m, d in ((3, 8), (3, 29), (4, 5), (9, 27),
                                                                         (10, 25), (11, 1))]
    t = np.concatenate([a + rng.uniform(-2 * 86400, 2 * 86400, 4000) for a in anchors]
                       + [rng.uniform(1.7e9, 1.9e9, 4000)])
    t_us = np.rint(t * 1e6).astype(np.int64)
    for zone in zones:
        tz = np.full(len(t_us), _tz_index(zone), dtype=np.int32)
        expected = [datetime.fromtimestamp(u / 1e6, UTC).astimezone(ZoneInfo(zone)).hour for u in t_us.tolist()]
        assert local_hours(tz, t_us).tolist() == expected, zone


def test_at_least_us_decides_like_timedelta():
    for seconds in (0.0, 1.0, 30.0, 0.1, 2.5e-6, 45.000001, 1 / 3, 120.0):
        need = at_least_us(seconds)
        assert timedelta(microseconds=need).total_seconds() >= seconds
        assert not timedelta(microseconds=need - 1).total_seconds() >= seconds


def test_diagnosis_is_revised_and_states_round_trip_as_in_the_reference():
    # tests/test_models.py's scenario: the diagnosis moves from the oil cooler to the radiator.
    reference, shard = Reference(), ShardEngine()
    ctx = EquipmentContext("EX-1", "EX210")
    reference.add(ctx)
    shard.add(ctx)
    for i in range(60):
        coolant = 86.0 if i < 12 else 104.0
        values = {"oil_temp_c": 112.0 + (i % 3) * 0.1, "coolant_temp_c": coolant + (i % 2) * 0.2,
                  "engine_rpm": 1800.0 + (i % 4), "lat": 51.9, "lon": 4.1}
        rows = [Row("EX-1", START + timedelta(seconds=5 * i), values, arrived=START + timedelta(seconds=5 * i + 1))]
        expected, _ = reference.feed(rows)
        actual, _ = shard_feed(shard, rows)
        assert_same_changes(actual, expected, f"sample {i}")
    kinds = [c.kind for _, c in shard_feed(shard, [])[0]]
    assert kinds == []
    assert_same_state(shard, reference, "end")
    now = START + timedelta(minutes=30)
    assert_same_changes(by_machine(shard.tick(now.timestamp())), by_machine(reference.tick(now)), "tick")


def test_top_cause_is_the_first_of_the_ranked_causes():
    rng = random.Random(2)
    statistics = [f"{c}.{s}" for c in ("oil_temp_c", "coolant_temp_c", "hydraulic_pressure_bar", "engine_rpm")
                  for s in ("mean", "now", "rise", "jitter")]
    for _ in range(3000):
        stats = {name: round(rng.uniform(-10, 120) if rng.random() < 0.5 else rng.uniform(-5, 5), 3)
                 for name in statistics if rng.random() < 0.8}
        for code in (*FAULTS, "J1939_77_3"):
            ranked = rank_causes(code, stats)
            assert top_cause(code, stats) == (ranked[0].cause.id if ranked else None), (code, stats)


def test_restoring_under_another_model_carries_state_over_as_the_reference_does():
    machines = build_machines(10, seed=8, steps=(2.0,), custom=True)
    shard = ShardEngine(custom_rulebook_for)
    for m in machines:
        shard.add(m.ctx)
    for r in range(400):
        rows = [row for m in machines for row in sorted(m.readings((r + 1) * 2.0), key=lambda row: row.ts)]
        shard_feed(shard, rows)
    ids = [m.ctx.equipment_id for m in machines]
    blob = shard.export(ids)
    # Every machine changes rulebook: CUSTOM <-> standard ones (other rule keys) and EX210 -> EX350 (same keys).
    changed = {m.ctx.equipment_id: replace(m.ctx, model="EX350" if m.ctx.model != "EX350" else "CUSTOM")
               for m in machines}
    restored, via_state = ShardEngine(custom_rulebook_for), ShardEngine(custom_rulebook_for)
    restored.restore(blob, changed)
    for eid, ctx in changed.items():
        via_state.add(ctx, shard.state(eid))
        assert_same(restored.state(eid), via_state.state(eid), eid)


def test_evidence_keeps_its_order_across_a_checkpoint():
    # Idle at first (hydraulic pressure is tracked only while working), then working and overheating:
    # the diagnosis lists the statistics in the order the channels were first seen, as the reference does.
    reference, shard = Reference(), ShardEngine()
    ctx = EquipmentContext("EX-1", "EX210")
    reference.add(ctx)
    shard.add(ctx)
    # The shard has evaluated a while before this machine reports: its clock is ahead of a fresh one's.
    shard.add(EquipmentContext("EX-0", "EX210"))
    for i in range(100):
        shard_feed(shard, [Row("EX-0", START - timedelta(hours=1) + timedelta(seconds=i), {"engine_rpm": 800.0})])
    for i in range(120):
        working = i >= 60
        values = {"oil_temp_c": 90.0 + (30.0 if i >= 80 else 0.0) + (i % 3) * 0.1, "coolant_temp_c": 85.0 + (i % 2),
                  "engine_rpm": 1800.0 if working else 800.0, "hydraulic_pressure_bar": 250.0 + i % 5}
        rows = [Row("EX-1", START + timedelta(seconds=2 * i), values)]
        if i == 40:
            blob = shard.export(["EX-1"])
            shard = ShardEngine()
            shard.restore(blob, {"EX-1": ctx})
        expected, _ = reference.feed(rows)
        actual, _ = shard_feed(shard, rows)
        assert_same_changes(actual, expected, f"sample {i}")
    raised = [c for _, c in expected + actual if c.kind == "raised"]
    assert list(reference.engines["EX-1"].state()["evidence"]) == list(shard.state("EX-1")["evidence"])
    assert list(shard.state("EX-1")["evidence"])[-1] == "hydraulic_pressure_bar", raised
