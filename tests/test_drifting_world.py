"""The simulated world drifts: seasons and days at each site, machines unlike their siblings, sensors
that wander, duty that changes by the week; and the physics follows the air."""

import statistics
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from core.telemetry import CHANNELS
from device_sim.climate import SiteClimate
from device_sim.machine import MachineSpec, SimulatedMachine
from device_sim.simulated_fleet import SITES, SITES_BY_NAME, build_fleet
from device_sim.variation import (
    ACTIVITIES,
    COOLING_CAPACITY_SPREAD,
    PUMP_EFFICIENCY_SPREAD,
    SENSOR_DRIFT_PER_MONTH,
    SENSOR_OFFSET,
    DutyMix,
    MachineTraits,
)
from diagnostics.engine import EquipmentEngine
from diagnostics.rulebook import rulebook_for
from diagnostics.rules import EquipmentContext, Sample

JANUARY = datetime(2026, 1, 1, tzinfo=UTC)
JULY = datetime(2026, 7, 1, tzinfo=UTC)
HOUR = timedelta(hours=1)


def climate(site_name: str) -> SiteClimate:
    site = SITES_BY_NAME[site_name]
    return SiteClimate(site.name, site.lat, site.timezone, site.annual_mean_c)


def hourly(c: SiteClimate, start: datetime, days: int) -> list[float]:
    return [c.ambient_c(start + i * HOUR) for i in range(days * 24)]


def healthy_at(site_name: str, index: int = 0) -> MachineSpec:
    spec = next(s for s in build_fleet(24, fault_share=0.0, seed=11) if s.site == site_name)
    return replace(spec, equipment_id=f"{spec.equipment_id}-{index}")


def run(machine: SimulatedMachine, seconds: float, step_s: float = 5.0) -> list:
    out = []
    for _ in range(int(seconds / step_s)):
        machine.advance(step_s)
        out.append((machine.now, machine.mode, machine.activity, machine.ambient_c, machine.reading(machine.now)))
    return out


# --- the air ---

@pytest.mark.parametrize("site", [s.name for s in SITES])
def test_every_site_swings_more_than_25_degrees_from_january_to_july(site):
    c = climate(site)
    january, july = hourly(c, JANUARY, 31), hourly(c, JULY, 31)
    assert max(july) - min(january) >= 25.0
    assert statistics.mean(july) - statistics.mean(january) >= 15.0
    assert -25.0 < min(january) and max(july) < 45.0


def test_afternoons_are_warmer_than_nights_in_the_sites_own_time_zone():
    for site in ("madrid-metro", "warsaw-bridge"):
        c = climate(site)
        zone = ZoneInfo(c.timezone)
        by_local_hour: dict[int, list[float]] = {}
        for i in range(14 * 24):
            at = JULY + i * HOUR
            by_local_hour.setdefault(at.astimezone(zone).hour, []).append(c.ambient_c(at))
        means = {hour: statistics.mean(values) for hour, values in by_local_hour.items()}
        assert max(means, key=means.__getitem__) in (14, 15, 16)
        assert min(means, key=means.__getitem__) in (2, 3, 4)
        assert 8.0 <= means[15] - means[3] <= 14.0
        # No jump anywhere, midnight included: minute by minute the air moves by hundredths of a degree.
        minutes = [c.ambient_c(JULY + timedelta(minutes=m)) for m in range(3 * 24 * 60)]
        assert max(abs(b - a) for a, b in zip(minutes, minutes[1:], strict=False)) < 0.05


def test_the_weather_is_the_same_every_run_and_differs_from_day_to_day_and_site_to_site():
    rotterdam = climate("rotterdam-port")
    assert hourly(rotterdam, JULY, 3) == hourly(climate("rotterdam-port"), JULY, 3)
    noons = [rotterdam.ambient_c(JULY + timedelta(days=d, hours=10)) for d in range(20)]
    assert statistics.pstdev(noons) > 1.0  # warm spells and cool days, not one July day repeated
    assert hourly(rotterdam, JULY, 1) != hourly(replace(rotterdam, site="elsewhere"), JULY, 1)
    south = replace(rotterdam, lat=-rotterdam.lat)
    assert statistics.mean(hourly(south, JANUARY, 31)) > statistics.mean(hourly(south, JULY, 31)) + 15.0


# --- machines unlike their siblings ---

def test_each_machine_has_its_own_traits_the_same_in_every_run():
    ids = [f"EQ-{i:05d}" for i in range(300)]
    traits = [MachineTraits.of(e) for e in ids]
    assert traits == [MachineTraits.of(e) for e in ids]
    cooling = [t.cooling_capacity for t in traits]
    pump = [t.pump_efficiency for t in traits]
    assert all(abs(c - 1.0) <= COOLING_CAPACITY_SPREAD for c in cooling) and max(cooling) - min(cooling) > 0.15
    assert all(abs(p - 1.0) <= PUMP_EFFICIENCY_SPREAD for p in pump) and max(pump) - min(pump) > 0.08
    for sensor, largest in SENSOR_OFFSET.items():
        offsets = [t.sensors[sensor].offset for t in traits]
        assert all(abs(o) <= largest for o in offsets) and max(offsets) - min(offsets) > largest
    assert len({round(c, 6) for c in cooling}) == len(ids)

    # The same machine twice (same id, same seed): the same readings; another id: other readings.
    first, second = healthy_at("lyon-tunnel", 1), healthy_at("lyon-tunnel", 2)
    a = [x[4] for x in run(SimulatedMachine(first, JULY, seed=5), 1800)]
    assert a == [x[4] for x in run(SimulatedMachine(first, JULY, seed=5), 1800)]
    b = [x[4] for x in run(SimulatedMachine(second, JULY, seed=5), 1800)]
    assert a[-1].oil_temp_c != b[-1].oil_temp_c and a[0].hydraulic_pressure_bar != b[0].hydraulic_pressure_bar


def test_sensors_drift_a_few_tenths_a_month_and_are_set_right_at_the_yearly_inspection():
    traits = MachineTraits.of("EQ-00042")
    oil = traits.sensors["oil_temp_c"]
    low, high = SENSOR_DRIFT_PER_MONTH["oil_temp_c"]
    assert low <= abs(oil.drift_per_month) <= high
    calibrated = next(JANUARY + timedelta(days=d) for d in range(400)
                      if traits.months_since_calibration(JANUARY + timedelta(days=d)) < 1 / 30)
    three_months = calibrated + timedelta(days=91)
    drifted = traits.sensor_error("oil_temp_c", three_months) - traits.sensor_error("oil_temp_c", calibrated)
    assert drifted == pytest.approx(3.0 * oil.drift_per_month, rel=0.03)
    assert abs(traits.sensor_error("oil_temp_c", calibrated + timedelta(days=366)) - oil.offset) < 0.1

    # A machine's reading carries it: the same machine in the same air, three months apart.
    spec = healthy_at("munich-ring")
    machine = SimulatedMachine(spec, calibrated, seed=3)
    machine.advance(1.0)
    before = machine.reading(machine.now).oil_temp_c - machine.oil_temp_c
    machine.elapsed_s += 91 * 86400.0
    after = machine.reading(machine.now).oil_temp_c - machine.oil_temp_c
    assert after - before == pytest.approx(3.0 * machine.traits.sensors["oil_temp_c"].drift_per_month, abs=1.5)


# --- duty that changes by the week ---

def test_the_duty_mix_changes_from_week_to_week_and_the_machine_follows_it():
    spec = healthy_at("milan-tower")
    weeks = [DutyMix.of_week(spec.equipment_id, JULY + timedelta(weeks=w)) for w in range(8)]
    for mix in weeks:
        assert sum(mix.share(a) for a in ACTIVITIES) == pytest.approx(1.0)
    assert len({round(m.idle, 4) for m in weeks}) == 8 and len({round(m.digging, 4) for m in weeks}) == 8
    assert max(m.digging for m in weeks) - min(m.digging for m in weeks) > 0.15
    assert DutyMix.of_week(spec.equipment_id, JULY) == DutyMix.of_week(spec.equipment_id, JULY + timedelta(days=2))

    monday = datetime(2026, 7, 6, tzinfo=UTC)
    for week in range(2):
        start = monday + timedelta(weeks=week)
        mix = DutyMix.of_week(spec.equipment_id, start)
        steps = run(SimulatedMachine(spec, start, seed=8), 3 * 86400.0, step_s=10.0)
        for activity in ACTIVITIES:
            share = sum(s[2] == activity for s in steps) / len(steps)
            assert share == pytest.approx(mix.share(activity), abs=0.06), (week, activity)


# --- the physics follows the air ---

def test_a_hotter_day_raises_the_oil_by_as_much_as_the_air():
    spec = healthy_at("madrid-metro")
    warmer = replace(spec, site_annual_mean_c=spec.site_annual_mean_c + 15.0)
    mild = run(SimulatedMachine(spec, JULY, seed=4), 6 * 3600)
    hot = run(SimulatedMachine(warmer, JULY, seed=4), 6 * 3600)
    settled = slice(len(mild) // 3, None)  # after the engine's first hours of warming up
    oil_rise = [h[4].oil_temp_c - m[4].oil_temp_c for m, h in zip(mild[settled], hot[settled], strict=True)]
    assert statistics.mean(oil_rise) == pytest.approx(15.0, abs=1.0)
    # The thermostat holds the coolant in its band, opening a little further for the warmer air: a
    # healthy radiator has the capacity to spare.
    coolant_rise = [h[4].coolant_temp_c - m[4].coolant_temp_c for m, h in zip(mild[settled], hot[settled], strict=True)]
    assert 0.5 < statistics.mean(coolant_rise) < 3.0
    assert [h[4].ambient_temp_c - m[4].ambient_temp_c for m, h in zip(mild, hot, strict=True)] == pytest.approx(
        [15.0] * len(mild), abs=0.5)


def test_healthy_machines_follow_the_seasons_below_every_limit_while_a_clogged_radiator_stands_out():
    """The hottest site's hottest July days and its coldest January ones, through the production rulebook."""
    site = "madrid-metro"
    c = climate(site)
    hottest = max((JULY + timedelta(days=d) for d in range(31)), key=lambda d: c.ambient_c(d + 14 * HOUR))
    coldest = min((JANUARY + timedelta(days=d) for d in range(31)), key=lambda d: c.ambient_c(d + 14 * HOUR))
    assert c.ambient_c(hottest + 14 * HOUR) >= 33.0

    rises: dict[str, list[float]] = {}
    oil_means: dict[str, list[float]] = {}
    air_means: dict[str, list[float]] = {}
    for label, day in (("summer", hottest), ("winter", coldest)):
        for index in range(4):
            spec = healthy_at(site, index)
            rules = rulebook_for(spec.model)
            oil_limit, coolant_limit = rules.rule("oil_overheat").raise_at, rules.rule("coolant_overheat").raise_at
            engine = EquipmentEngine(rules, EquipmentContext(spec.equipment_id, spec.model))
            steps = run(SimulatedMachine(spec, day + 8 * HOUR, seed=20 + index), 10 * 3600)
            raised = [change.fault_code for *_, r in steps
                      for change in engine.feed(Sample(r.ts, {c: getattr(r, c) for c in CHANNELS}))
                      if change.kind == "raised"]
            assert not {"OIL_OVERHEAT", "COOLANT_OVERHEAT", "OIL_TEMP_RISING_FAST"} & set(raised), (label, raised)
            oil = [r.oil_temp_c for *_, r in steps]
            assert max(oil) < oil_limit - 8.0, (label, max(oil))
            assert max(r.coolant_temp_c for *_, r in steps) < coolant_limit - 10.0
            rises.setdefault(label, []).extend(r.oil_temp_c - ambient for _, mode, _, ambient, r in steps[720:]
                                               if mode == "working")
            oil_means.setdefault(label, []).append(statistics.mean(oil[720:]))
            air_means.setdefault(label, []).append(statistics.mean(ambient for *_, ambient, _ in steps[720:]))
    # Oil over the air is the same summer and winter: the oil follows the ambient, up by as much as it.
    assert statistics.median(rises["summer"]) == pytest.approx(statistics.median(rises["winter"]), abs=4.0)
    air_rise = statistics.mean(air_means["summer"]) - statistics.mean(air_means["winter"])
    assert air_rise > 20.0
    oil_rise = statistics.mean(oil_means["summer"]) - statistics.mean(oil_means["winter"])
    assert oil_rise == pytest.approx(air_rise, abs=4.0)

    # A clogged radiator on the coldest day: oil and coolant far above what that air explains.
    spec = replace(healthy_at(site), fault="radiator_clogged", fault_after_s=1800.0)
    steps = run(SimulatedMachine(spec, coldest + 8 * HOUR, seed=20), 3 * 3600)
    clogged_rise = [r.oil_temp_c - ambient for _, mode, _, ambient, r in steps[720:] if mode == "working"]
    assert statistics.median(clogged_rise) > max(rises["summer"]) + 15.0
    assert max(r.coolant_temp_c for *_, r in steps) > 105.0
