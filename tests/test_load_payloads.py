"""The load generator's payloads: readable by IronSight's own decoders, varying like a working
machine's (so the rulebook stays quiet on healthy machines), and carrying injected faults from the
planned moment, with the moment each became due."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest

from core.telemetry import CHANNELS, decode_message
from core.telemetry_binary import decode_binary
from device_sim.load import DTC, OIL_OVERHEAT, InjectedFault, Payloads, fault_plan, storm_plan
from diagnostics.engine import EquipmentEngine
from diagnostics.rulebook import rulebook_for
from diagnostics.rules import EquipmentContext, Sample

IDS = tuple(f"E{i}" for i in range(6))
FAULTS = (InjectedFault("E1", DTC, 60.0, 100, 17), InjectedFault("E2", OIL_OVERHEAT, 120.0),
          InjectedFault("E3", DTC, 30.0, 97, 0))


def _decode(codec: str, payload: bytes):
    decode = decode_binary if codec == "binary" else decode_message
    decoded = decode(payload, now=datetime.now(UTC), future_tolerance_s=60)
    assert not decoded.rejected
    return decoded


def _run(codec: str, seconds: int, gap_ms: int, per_msg: int) -> tuple[Payloads, list[tuple[int, list]]]:
    """Every controller's messages over ``seconds`` from an hour ago: the payload maker, and
    (controller index, decoded readings) per message in publishing order."""
    start = int(time.time() * 1000) - 3_600_000
    payloads = Payloads(IDS, codec, start, FAULTS)
    messages = []
    seq, ts = 0, start
    while ts < start + seconds * 1000:
        seq += 1
        stamps = [ts + k * gap_ms for k in range(per_msg)]
        ts = stamps[-1] + gap_ms
        for i in range(len(IDS)):
            messages.append((i, _decode(codec, payloads.payload(i, seq, stamps)).readings))
    return payloads, messages


@pytest.mark.parametrize(("codec", "per_msg"), [("json", 1), ("binary", 1), ("json", 10), ("binary", 10)])
def test_payloads_decode_vary_and_carry_the_planned_faults_from_their_moment(codec, per_msg):
    payloads, messages = _run(codec, 200, 1000, per_msg)
    start = payloads.start_ms
    seen: dict[int, list] = {i: [] for i in range(len(IDS))}
    for i, readings in messages:
        assert len(readings) == per_msg and readings[0].ts.timestamp() * 1000 >= start
        seen[i].extend(readings)
    healthy = seen[0]
    for name in ("oil_temp_c", "coolant_temp_c", "engine_rpm", "hydraulic_pressure_bar"):
        values = [getattr(r, name) for r in healthy]
        assert all(a != b for a, b in zip(values, values[1:], strict=False)), name  # neighbours differ
        assert len(set(values)) > 50
    assert all(r.oil_temp_c < 100 and r.coolant_temp_c < 100 for r in healthy)
    hours = [r.engine_hours for r in healthy]
    assert hours == sorted(hours) and hours[-1] > hours[0]
    assert [r.oil_temp_c for r in seen[1]] != [r.oil_temp_c for r in healthy]  # controllers differ too

    def offset_s(reading) -> float:
        return reading.ts.timestamp() - start / 1000

    for reading in seen[1]:
        assert bool(reading.fault_codes) == (offset_s(reading) >= 60.0)
        assert all((c.spn, c.fmi) == (100, 17) for c in reading.fault_codes)
    for reading in seen[2]:
        assert (reading.oil_temp_c > 105.0) == (offset_s(reading) >= 120.0) and not reading.fault_codes
    due = {d["equipment_id"]: d for d in payloads.due}
    assert set(due) == {"E1", "E2", "E3"} and payloads.planned == 3
    assert (due["E1"]["due_ts_ms"] - start) / 1000 == 60.0 and (due["E3"]["due_ts_ms"] - start) / 1000 == 30.0
    # An overheat is due when the rule has seen 30 s of it: 30 s after the first overheated reading.
    assert (due["E2"]["due_ts_ms"] - start) / 1000 == 150.0


@pytest.mark.parametrize(("gap_ms", "per_msg", "minutes"), [(1000, 1, 12), (100, 10, 6), (20_000, 1, 45)])
def test_the_rulebook_raises_exactly_the_injected_faults_once(gap_ms, per_msg, minutes):
    engines = {i: EquipmentEngine(rulebook_for("EX210"), EquipmentContext(e, "EX210")) for i, e in enumerate(IDS)}
    raised: dict[int, list[tuple[str, str]]] = {i: [] for i in engines}
    for i, readings in _run("binary", minutes * 60, gap_ms, per_msg)[1]:
        for r in readings:
            sample = Sample(r.ts, dict(zip(CHANNELS, r[1:1 + len(CHANNELS)], strict=True)),
                            tuple((c.spn, c.fmi, c.oc) for c in r.fault_codes))
            raised[i].extend((c.kind, c.fault_code) for c in engines[i].feed(sample, r.ts))
    expected_e2 = [("raised", "OIL_OVERHEAT")] if minutes * 60 > 150 else []
    assert raised == {0: [], 1: [("raised", "ENGINE_OIL_PRESSURE_LOW")], 2: expected_e2,
                      3: [("raised", "FUEL_WATER_DETECTED")], 4: [], 5: []}


def test_fault_plans():
    ids = [f"E{i:04d}" for i in range(1000)]
    plan = fault_plan(ids, 0.03, (5.0, 50.0), kinds=((DTC, 100, 17), (OIL_OVERHEAT, 0, 0)))
    assert len(plan) == 30 and len({f.equipment_id for f in plan}) == 30
    assert plan[0].at_s == 5.0 and plan[-1].at_s == 50.0
    assert [f.kind for f in plan[:3]] == [DTC, OIL_OVERHEAT, DTC]
    assert fault_plan(ids, 0.03, (5.0, 50.0)) == fault_plan(ids, 0.03, (5.0, 50.0))  # reproducible
    storm = storm_plan(ids, 30.0)
    assert len(storm) == 1000 and {(f.kind, f.at_s, f.spn, f.fmi) for f in storm} == {(DTC, 30.0, 97, 0)}
