import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from core.telemetry import Reading
from device_sim.faults import INJECTABLE_FAULTS
from device_sim.machine import MachineSpec, SimulatedMachine
from device_sim.simulated_fleet import SITES, build_fleet

START = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
FAULT_AT_S = 60.0
WORKING_RPM = 1600.0


@dataclass(frozen=True, slots=True)
class Step:
    elapsed_s: float
    reading: Reading
    mode: str


def run(machine: SimulatedMachine, seconds: int) -> list[Step]:
    steps = []
    for _ in range(seconds):
        machine.advance(1.0)
        steps.append(Step(machine.elapsed_s, machine.reading(START + timedelta(seconds=machine.elapsed_s)),
                          machine.mode))
    return steps


def distance_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Haversine distance, independent of the simulator's own flat-earth arithmetic."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    a = (math.sin((p2 - p1) / 2) ** 2
         + math.cos(p1) * math.cos(p2) * math.sin(math.radians(lon2 - lon1) / 2) ** 2)
    return 2 * 6_371_000 * math.asin(math.sqrt(a))


def from_site_m(spec: MachineSpec, r: Reading) -> float:
    assert r.lat is not None and r.lon is not None
    return distance_m(spec.site_lat, spec.site_lon, r.lat, r.lon)


def noise_sd(values: list[float]) -> float:
    """Reading-to-reading noise (σ of successive differences / √2): blind to slow trends."""
    return statistics.pstdev([b - a for a, b in zip(values, values[1:], strict=False)]) / math.sqrt(2)


def working_pressures(steps: list[Step]) -> list[float]:
    return [s.reading.hydraulic_pressure_bar for s in steps
            if s.mode == "working" and s.reading.engine_rpm > WORKING_RPM]


# --- the fleet ---

def test_build_fleet_marks_the_requested_share_as_faulty_cycling_through_the_faults():
    fleet = build_fleet(200, fault_share=0.05, seed=3)
    assert len({s.equipment_id for s in fleet}) == 200
    faulty = [s for s in fleet if s.fault is not None]
    assert len(faulty) == 10
    assert [s.fault for s in faulty] == ["radiator_clogged", "oil_cooler_clogged", "low_coolant"] * 3 + [
        "radiator_clogged"]
    assert all(20.0 <= s.fault_after_s <= 60.0 for s in faulty)
    assert all(s.fault_after_s is None for s in fleet if s.fault is None)
    assert build_fleet(200, fault_share=0.05, seed=3) == fleet  # deterministic with the seed

    every = tuple(INJECTABLE_FAULTS)
    fleet = build_fleet(30, fault_share=1.0, seed=4, faults=every, fault_after_s=(5.0, 5.0))
    assert [s.fault for s in fleet] == list(every) * 3
    assert {s.fault_after_s for s in fleet} == {5.0}
    with pytest.raises(ValueError):
        build_fleet(3, fault_share=1.0, faults=("flat_tyre",))
    with pytest.raises(ValueError):
        replace(fleet[0], fault="flat_tyre")


def test_sites_carry_a_geofence_radius_and_a_time_zone():
    assert len({site.name for site in SITES}) == len(SITES)
    for site in SITES:
        assert site.radius_m == 1000.0
        assert ZoneInfo(site.timezone).key == site.timezone
    assert {s.site for s in build_fleet(12, fault_share=0.0)} == {site.name for site in SITES}


def test_the_catalogue_names_what_the_engine_should_find():
    assert set(INJECTABLE_FAULTS) == set(SIGNATURES)
    for kind, fault in INJECTABLE_FAULTS.items():
        assert fault.kind == kind and fault.description and fault.expected_cause
        assert isinstance(fault.expected_fault_codes, frozenset) and fault.expected_fault_codes
    assert INJECTABLE_FAULTS["radiator_clogged"].expected_fault_codes == {
        "OIL_OVERHEAT", "COOLANT_OVERHEAT", "OIL_TEMP_ABOVE_EXPECTED", "COOLANT_TEMP_ABOVE_EXPECTED"}
    assert INJECTABLE_FAULTS["oil_temp_sensor_stuck"].expected_cause == "sensor_failure"


# --- healthy machines ---

def test_healthy_machines_stay_in_range_and_on_site_for_hours():
    for index, spec in enumerate(build_fleet(20, fault_share=0.0, seed=5)):
        machine = SimulatedMachine(spec, START, seed=1000 + index)
        steps = run(machine, 3 * 3600)
        readings = [s.reading for s in steps]
        assert max(r.oil_temp_c for r in readings) < 100.0, spec.equipment_id
        assert max(r.coolant_temp_c for r in readings) < 95.0, spec.equipment_id
        assert min(r.coolant_temp_c for r in readings) > 75.0, spec.equipment_id
        pressures = working_pressures(steps)
        assert len(pressures) > 1000 and min(pressures) >= 200.0, spec.equipment_id
        assert max(from_site_m(spec, r) for r in readings) < 800.0, spec.equipment_id
        assert not any(r.fault_codes for r in readings)
        assert machine.fault_started_at is None and not machine.fault_active()


def test_machines_work_idle_and_accumulate_hours_and_burn_fuel():
    spec = build_fleet(1, fault_share=0.0, seed=9)[0]
    machine = SimulatedMachine(spec, START, seed=9)
    hours_before = machine.engine_hours
    readings = [s.reading for s in run(machine, 3600)]
    rpms = [r.engine_rpm for r in readings]
    assert min(rpms) < 900 and max(rpms) > 1600  # both idle and work
    assert abs(machine.engine_hours - hours_before - 1.0) < 1e-6
    assert readings[-1].fuel_level_pct != readings[0].fuel_level_pct


# --- injected faults: each one's signature in the readings, against a healthy twin ---

def _radiator_clogged(spec, after, healthy):
    oil = [s.reading.oil_temp_c for s in after]
    coolant = [s.reading.coolant_temp_c for s in after]
    assert max(oil) > 115.0 and max(coolant) > 105.0
    assert noise_sd(coolant) < 0.6  # smooth: the sensor's normal noise
    assert any(c.spn == 175 for s in after for c in s.reading.fault_codes)  # the controller's own DTC


def _oil_cooler_clogged(spec, after, healthy):
    assert max(s.reading.oil_temp_c for s in after) > 105.0
    coolant = [s.reading.coolant_temp_c for s in after]
    assert 75.0 < min(coolant) and max(coolant) < 95.0


def _low_coolant(spec, after, healthy):
    coolant = [s.reading.coolant_temp_c for s in after]
    oil = [s.reading.oil_temp_c for s in after]
    assert max(coolant) > 105.0 and max(oil) > 105.0
    assert noise_sd(coolant[60:]) > 2.0  # air pockets
    # The coolant gets there first; the oil follows.
    assert next(i for i, c in enumerate(coolant) if c > 105) < next(i for i, o in enumerate(oil) if o > 105)


def _hydraulic_pump_wear(spec, after, healthy):
    pressures = working_pressures(after[30:])
    assert len(pressures) > 300
    assert 130.0 < statistics.median(pressures) < 170.0 and statistics.pstdev(pressures) < 8.0
    assert statistics.median(working_pressures(healthy)) >= 230.0


def _hydraulic_leak(spec, after, healthy):
    pressures = working_pressures(after[30:])
    assert len(pressures) > 300
    assert statistics.median(pressures) < 170.0 and statistics.pstdev(pressures) > 10.0


def _oil_temp_sensor_stuck(spec, after, healthy):
    assert len({s.reading.oil_temp_c for s in after}) == 1
    assert abs(after[0].reading.oil_temp_c - healthy[0].reading.oil_temp_c) < 2.0  # frozen where it was
    healthy_oil = [s.reading.oil_temp_c for s in healthy]
    assert max(healthy_oil) - min(healthy_oil) > 5.0  # the machine itself goes on as before
    assert [s.reading.coolant_temp_c for s in after] == [s.reading.coolant_temp_c for s in healthy]


def _gps_loss(spec, after, healthy):
    assert all(s.reading.lat is None and s.reading.lon is None and s.reading.speed_kmh is None for s in after)
    assert all(s.reading.oil_temp_c is not None for s in after)


def _geofence_exit(spec, after, healthy):
    within_2_min = [s.reading for s in after if s.elapsed_s <= FAULT_AT_S + 120]
    assert max(from_site_m(spec, r) for r in within_2_min) > 1000.0
    assert all(r.speed_kmh == 60.0 for r in within_2_min)
    distances = [from_site_m(spec, s.reading) for s in after]
    assert all(b > a for a, b in zip(distances, distances[1:600], strict=False))  # straight away
    assert all(s.reading.engine_rpm > 600 for s in after)  # the controller keeps reporting


def _dtc_oil_pressure(spec, after, healthy):
    counts = []
    for s in after:
        codes = [c for c in s.reading.fault_codes if (c.spn, c.fmi) == (100, 1)]
        assert len(codes) == 1
        counts.append(codes[0].oc)
    assert counts[0] >= 1 and counts == sorted(counts) and counts[-1] > counts[0]


def _service_due(spec, after, healthy):
    hours = [s.reading.engine_hours for s in after]
    assert 0.0 < 500.0 - hours[0] % 500.0 <= 2.0
    assert hours == sorted(hours) and hours[-1] - hours[0] > 0.45


SIGNATURES: dict[str, Callable[[MachineSpec, list[Step], list[Step]], None]] = {
    "radiator_clogged": _radiator_clogged,
    "oil_cooler_clogged": _oil_cooler_clogged,
    "low_coolant": _low_coolant,
    "hydraulic_pump_wear": _hydraulic_pump_wear,
    "hydraulic_leak": _hydraulic_leak,
    "oil_temp_sensor_stuck": _oil_temp_sensor_stuck,
    "gps_loss": _gps_loss,
    "geofence_exit": _geofence_exit,
    "dtc_oil_pressure": _dtc_oil_pressure,
    "service_due": _service_due,
}


@pytest.mark.parametrize("kind", list(INJECTABLE_FAULTS))
def test_an_injected_fault_shows_its_signature_from_onset_and_not_before(kind):
    healthy_spec = build_fleet(1, fault_share=0.0, seed=5)[0]
    spec = replace(healthy_spec, fault=kind, fault_after_s=FAULT_AT_S)
    machine = SimulatedMachine(spec, START, seed=42)
    faulty = run(machine, 1800)
    healthy = run(SimulatedMachine(healthy_spec, START, seed=42), 1800)

    # Ground truth for a benchmark: when the fault began.
    assert machine.fault_started_at == START + timedelta(seconds=FAULT_AT_S)
    assert machine.injected_fault is INJECTABLE_FAULTS[kind]
    assert not machine.fault_active(FAULT_AT_S - 1) and machine.fault_active(FAULT_AT_S) and machine.fault_active()
    # Until then it is its healthy twin, reading for reading.
    onset = next(i for i, s in enumerate(faulty) if s.elapsed_s >= FAULT_AT_S)
    assert [s.reading for s in faulty[:onset]] == [s.reading for s in healthy[:onset]]

    after, healthy_after = faulty[onset:], healthy[onset:]
    assert max(s.reading.oil_temp_c for s in healthy) < 100.0
    assert max(s.reading.coolant_temp_c for s in healthy) < 95.0
    SIGNATURES[kind](spec, after, healthy_after)


@pytest.mark.parametrize("kind", ["hydraulic_pump_wear", "radiator_clogged", "geofence_exit"])
def test_a_repaired_machine_is_healthy_again(kind):
    spec = replace(build_fleet(1, fault_share=0.0, seed=5)[0], fault=kind, fault_after_s=FAULT_AT_S)
    machine = SimulatedMachine(spec, START, seed=42)
    broken = run(machine, 1800)
    machine.repair()
    assert not machine.fault_active() and machine.injected_fault is None
    mended = run(machine, 1800)
    late = mended[len(mended) // 2:]  # temperatures take a while to come down
    assert max(s.reading.oil_temp_c for s in late) < 100.0
    assert max(s.reading.coolant_temp_c for s in late) < 95.0
    assert all(from_site_m(spec, s.reading) < 1000.0 for s in mended)
    if kind == "hydraulic_pump_wear":
        assert statistics.mean(working_pressures(late)) > 1.3 * statistics.mean(working_pressures(broken[-300:]))
