from dataclasses import replace
from datetime import UTC, datetime, timedelta

from device_sim.fleet import build_fleet
from device_sim.machine import SimulatedMachine

START = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)


def run(machine: SimulatedMachine, seconds: int) -> list:
    readings = []
    for s in range(seconds):
        machine.advance(1.0)
        readings.append(machine.reading(START + timedelta(seconds=s)))
    return readings


def test_build_fleet_marks_the_requested_share_as_faulty():
    fleet = build_fleet(200, fault_share=0.05, seed=3)
    assert len({s.equipment_id for s in fleet}) == 200
    assert sum(s.cooling_fault_after_s is not None for s in fleet) == 10


def test_healthy_machines_stay_below_every_oil_limit_for_hours():
    for spec in build_fleet(20, fault_share=0.0, seed=5):
        readings = run(SimulatedMachine(spec, START, seed=hash(spec.equipment_id) % 1000), 3 * 3600)
        assert max(r.oil_temp_c for r in readings) < 100.0, spec.equipment_id


def test_a_cooling_fault_drives_oil_temperature_past_the_limit_under_the_same_duty():
    spec = build_fleet(1, fault_share=1.0, seed=5, fault_after_s=(60.0, 60.0))[0]
    faulty = run(SimulatedMachine(spec, START, seed=42), 1800)
    healthy = run(SimulatedMachine(replace(spec, cooling_fault_after_s=None), START, seed=42), 1800)
    assert max(r.oil_temp_c for r in faulty) > 115.0
    assert max(r.oil_temp_c for r in healthy) < 100.0
    assert any(r.fault_codes for r in faulty)


def test_machines_work_idle_and_accumulate_hours_and_burn_fuel():
    spec = build_fleet(1, fault_share=0.0, seed=9)[0]
    machine = SimulatedMachine(spec, START, seed=9)
    hours_before = machine.engine_hours
    readings = run(machine, 3600)
    rpms = [r.engine_rpm for r in readings]
    assert min(rpms) < 900 and max(rpms) > 1600  # both idle and work
    assert abs(machine.engine_hours - hours_before - 1.0) < 1e-6
    assert readings[-1].fuel_level_pct != readings[0].fuel_level_pct
    assert all(abs(r.lat - spec.site_lat) < 0.05 for r in readings)
