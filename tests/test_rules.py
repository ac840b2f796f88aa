"""Every rule kind, fed samples in time order, as the engine does."""

from datetime import UTC, datetime, timedelta

import pytest

from diagnostics import evidence
from diagnostics.causes import diagnosis, rank_causes
from diagnostics.engine import EquipmentEngine
from diagnostics.rulebook import DEFAULT, rulebook_for
from diagnostics.rules import (
    Curfew,
    Dtc,
    EquipmentContext,
    Geofence,
    Missing,
    Offline,
    Plausible,
    RateOfChange,
    Repeated,
    Sample,
    ServiceDue,
    Site,
    Stuck,
    Threshold,
    When,
    distance_m,
)

T0 = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
CTX = EquipmentContext("EX-1", "EX210", Site(51.95, 4.14, 1000.0, "Europe/Amsterdam", (6, 20)))


def run(rule, series, step_s=10.0, start=T0, ctx=CTX, state=None):
    """Feed {channel: value} dicts (or (values, codes)) one per step; return [(seconds, change)]."""
    state = {} if state is None else state
    out = []
    for i, item in enumerate(series):
        values, codes = item if isinstance(item, tuple) else (item, ())
        ts = start + timedelta(seconds=i * step_s)
        out.extend(((ts - T0).total_seconds(), c) for c in rule.evaluate(state, Sample(ts, values, codes), ctx))
    return out


def kinds(changes):
    return [(t, c.kind, c.fault_code) for t, c in changes]


OIL = Threshold("oil", "OIL_OVERHEAT", signal="oil_temp_c", raise_at=105, clear_at=98, sustain_s=60,
                clear_sustain_s=30, severity="major", severity_levels=((115, "critical"),))


def oil(*temps):
    return [{"oil_temp_c": t} for t in temps]


def test_threshold_raises_after_the_sustain_time_with_the_start_time_and_evidence():
    changes = run(OIL, oil(100, 106, 107, 108, 109, 110, 111, 112))
    assert kinds(changes) == [(70, "raised", "OIL_OVERHEAT")]
    raised = changes[0][1]
    assert raised.at == T0 + timedelta(seconds=10) and raised.severity == "major"
    assert raised.evidence["limit"] == 105 and raised.evidence["value"] == 112
    assert raised.rule == "oil" and raised.rule_version == 1


def test_threshold_ignores_spikes_and_clears_only_with_hysteresis():
    assert run(OIL, oil(100, 110, 112, 111, 104, 110, 111, 100)) == []
    state = {}
    run(OIL, oil(*[110] * 8), state=state)
    assert run(OIL, oil(*[100] * 10), start=T0 + timedelta(seconds=100), state=state) == []  # above clear level
    assert kinds(run(OIL, oil(97, 96, 95, 94), start=T0 + timedelta(seconds=300), state=state)) == [
        (330, "cleared", "OIL_OVERHEAT")]


def test_threshold_severity_escalates_with_how_far_the_value_went():
    changes = run(OIL, oil(*[118] * 8))
    assert changes[0][1].severity == "critical"


def test_threshold_below_direction_counts_only_while_the_condition_holds():
    rule = Threshold("p", "HYDRAULIC_PRESSURE_LOW", signal="hydraulic_pressure_bar", raise_at=170, clear_at=190,
                     direction="below", sustain_s=20, when=When("engine_rpm", ">", 1600))
    idle_low = [{"hydraulic_pressure_bar": 25, "engine_rpm": 800}] * 10
    assert run(rule, idle_low) == []  # low pressure at idle is normal
    working_low = [{"hydraulic_pressure_bar": 150, "engine_rpm": 1800}] * 4
    assert kinds(run(rule, working_low)) == [(20, "raised", "HYDRAULIC_PRESSURE_LOW")]
    # An idle pause resets a pending (not yet raised) episode.
    interrupted = [{"hydraulic_pressure_bar": 150, "engine_rpm": 1800}] * 2 + idle_low[:1] + working_low[:2]
    assert run(rule, interrupted) == []


def test_repeated_excursions_within_a_window():
    rule = Repeated("spikes", "HYDRAULIC_PRESSURE_SPIKES", signal="hydraulic_pressure_bar", raise_at=380, count=3,
                    window_s=600)
    spiky = [{"hydraulic_pressure_bar": p} for p in (250, 390, 395, 250, 400, 250, 250, 385)]
    assert kinds(run(rule, spiky, step_s=30)) == [(210, "raised", "HYDRAULIC_PRESSURE_SPIKES")]
    two_only = [{"hydraulic_pressure_bar": p} for p in (250, 390, 250, 250, 390, 250)]
    assert run(rule, two_only, step_s=30) == []
    state = {}
    run(rule, spiky, step_s=30, state=state)
    quiet = [{"hydraulic_pressure_bar": 250}] * 25
    assert kinds(run(rule, quiet, step_s=30, start=T0 + timedelta(seconds=240), state=state))[-1][1] == "cleared"


def test_rate_of_change_only_at_steady_load():
    rule = RateOfChange("rise", "OIL_TEMP_RISING_FAST", signal="oil_temp_c", max_per_min=3.0, window_s=120,
                        steady_signal="engine_rpm", steady_band=150, steady_s=300)
    warm_up = [{"oil_temp_c": 60 + i * 0.8, "engine_rpm": 1800} for i in range(30)]  # 4.8 °C/min, not steady yet
    assert run(rule, warm_up) == []
    steady_then_rising = [{"oil_temp_c": 88.0, "engine_rpm": 1800}] * 36 + [
        {"oil_temp_c": 88 + i * 1.0, "engine_rpm": 1800} for i in range(1, 20)]  # 6 °C/min after 6 min steady
    changes = run(rule, steady_then_rising)
    assert kinds(changes)[:1] == [(changes[0][0], "raised", "OIL_TEMP_RISING_FAST")]
    assert changes[0][1].evidence["rate_per_min"] > 3.0


def test_stuck_sensor_while_the_engine_runs_and_clears_when_it_moves():
    rule = Stuck("stuck", "SENSOR_STUCK", signal="oil_temp_c", tolerance=0.001, window_s=45,
                 when=When("engine_rpm", ">", 300))
    frozen = [{"oil_temp_c": 88.42, "engine_rpm": 1800}] * 7
    assert kinds(run(rule, frozen)) == [(50, "raised", "SENSOR_STUCK")]
    engine_off = [{"oil_temp_c": 20.0, "engine_rpm": 0}] * 10  # a cold engine off reads constant: fine
    assert run(rule, engine_off) == []
    noisy = [{"oil_temp_c": 88 + (i % 3) * 0.2, "engine_rpm": 1800} for i in range(20)]
    assert run(rule, noisy) == []
    state = {}
    run(rule, frozen, state=state)
    assert kinds(run(rule, [{"oil_temp_c": 90.0, "engine_rpm": 1800}], start=T0 + timedelta(seconds=80),
                     state=state)) == [(80, "cleared", "SENSOR_STUCK")]


def test_implausible_value_is_a_sensor_fault():
    rule = Plausible("plaus", "SENSOR_IMPLAUSIBLE", signal="oil_temp_c", low=-40, high=160, sustain_s=10)
    assert kinds(run(rule, oil(90, 200, 200, 200, 90))) == [(20, "raised", "SENSOR_IMPLAUSIBLE"),
                                                            (40, "cleared", "SENSOR_IMPLAUSIBLE")]


def test_missing_gps_fix():
    rule = Missing("gps", "GPS_LOST", signals=("lat", "lon"), sustain_s=30)
    series = [{"lat": 51.9, "lon": 4.1}] + [{"oil_temp_c": 80}] * 5 + [{"lat": 51.9, "lon": 4.1}]
    assert kinds(run(rule, series)) == [(40, "raised", "GPS_LOST"), (60, "cleared", "GPS_LOST")]


def test_geofence_exit_needs_a_sustained_exit_and_clears_inside_with_margin():
    rule = Geofence("fence", "GEOFENCE_EXIT", sustain_s=10, margin_m=50)
    inside = {"lat": 51.95, "lon": 4.14}
    outlier = {"lat": 51.98, "lon": 4.14}  # 3.3 km north
    assert run(rule, [inside, outlier, inside]) == []  # one GPS outlier
    series = [inside, outlier, outlier, outlier, {"lat": 51.95 + 0.0088, "lon": 4.14}, inside]
    assert distance_m(51.95, 4.14, 51.9588, 4.14) == pytest.approx(978, abs=5)  # inside, but within the margin
    assert kinds(run(rule, series)) == [(20, "raised", "GEOFENCE_EXIT"), (50, "cleared", "GEOFENCE_EXIT")]


def test_curfew_uses_the_sites_local_hours():
    rule = Curfew("curfew", "CURFEW_VIOLATION", running_rpm=300, sustain_s=60)
    night = datetime(2026, 11, 23, 22, 30, tzinfo=UTC)  # 23:30 in Amsterdam
    changes = run(rule, [{"engine_rpm": 1500}] * 8, start=night)
    assert kinds(changes) == [(37_860, "raised", "CURFEW_VIOLATION")]  # sustained 60 s
    assert changes[0][1].at == night and changes[0][1].evidence["local_hour"] == 23
    assert run(rule, [{"engine_rpm": 0}] * 8, start=night) == []  # parked at night: fine
    assert run(rule, [{"engine_rpm": 1500}] * 8) == []  # 13:00 local
    no_curfew = EquipmentContext("EX-1", "EX210", Site(51.95, 4.14, 1000.0))
    assert run(rule, [{"engine_rpm": 1500}] * 8, start=night, ctx=no_curfew) == []


def test_dtc_mapped_and_unknown_codes_raise_and_clear_when_absent():
    rule = Dtc("dtc", "J1939", clear_after_s=30)
    series = [({"engine_rpm": 800}, ((100, 1, 1), (520001, 3, 2)))] * 3 + [({"engine_rpm": 800}, ())] * 5
    changes = run(rule, series)
    assert kinds(changes) == [(0, "raised", "ENGINE_OIL_PRESSURE_LOW"), (0, "raised", "J1939_520001_3"),
                              (50, "cleared", "ENGINE_OIL_PRESSURE_LOW"), (50, "cleared", "J1939_520001_3")]
    assert changes[0][1].severity == "critical" and changes[0][1].evidence["spn"] == 100


def test_service_due_by_engine_hours_and_cleared_by_a_recorded_service():
    rule = ServiceDue("svc", "SERVICE_DUE", interval_h=250, major_every_h=(500, 1000), warn_before_h=10)
    state = {}
    assert run(rule, [{"engine_hours": 1212.0}, {"engine_hours": 1230.0}], state=state) == []
    changes = run(rule, [{"engine_hours": 1240.5}], state=state)
    assert kinds(changes) == [(0, "raised", "SERVICE_DUE")]
    assert changes[0][1].evidence["due_at_hours"] == 1250 and changes[0][1].evidence["service"] == "250 h service"
    serviced = EquipmentContext("EX-1", "EX210", last_service_hours=1245.0)
    assert kinds(run(rule, [{"engine_hours": 1246.0}], state=state, ctx=serviced)) == [(0, "cleared", "SERVICE_DUE")]
    assert run(ServiceDue("s", "SERVICE_DUE"), [{"engine_hours": 1495.0}])[0][1].evidence["service"] == "500 h service"


def test_offline_raised_by_the_clock_and_cleared_by_the_next_sample():
    rule = Offline("offline", "OFFLINE", after_s=120)
    state = {}
    assert rule.tick(state, T0, T0 + timedelta(seconds=60)) == []
    changes = rule.tick(state, T0, T0 + timedelta(seconds=130))
    assert [(c.kind, c.at) for c in changes] == [("raised", T0 + timedelta(seconds=120))]
    assert rule.tick(state, T0, T0 + timedelta(seconds=200)) == []  # once
    assert kinds(run(rule, [{"engine_rpm": 800}], start=T0 + timedelta(seconds=300), state=state)) == [
        (300, "cleared", "OFFLINE")]


def test_causes_are_ranked_by_the_evidence():
    coolant_normal = {"coolant_temp_c.now": 88.0, "coolant_temp_c.jitter": 0.4}
    coolant_hot_smooth = {"coolant_temp_c.now": 108.0, "coolant_temp_c.jitter": 0.4}
    coolant_erratic = {"coolant_temp_c.now": 110.0, "coolant_temp_c.jitter": 3.5}
    coolant_climbing_in_band = {**coolant_normal, "coolant_temp_c.rise": 5.0}
    assert rank_causes("OIL_OVERHEAT", coolant_normal)[0].cause.id == "oil_cooler_clogged"
    assert rank_causes("OIL_OVERHEAT", {**coolant_normal, "coolant_temp_c.rise": 0.8})[0].cause.id == (
        "oil_cooler_clogged")
    assert rank_causes("OIL_TEMP_ABOVE_EXPECTED", coolant_climbing_in_band)[0].cause.id == "radiator_clogged"
    assert rank_causes("OIL_OVERHEAT", coolant_hot_smooth)[0].cause.id == "radiator_clogged"
    assert rank_causes("OIL_OVERHEAT", coolant_erratic)[0].cause.id == "low_coolant"
    assert rank_causes("HYDRAULIC_PRESSURE_LOW", {"hydraulic_pressure_bar.jitter": 20})[0].cause.id == "hydraulic_leak"
    # Raised while the jitter estimate is still on its way up from healthy (4-6 bar) to a leak's ~15.
    assert rank_causes("HYDRAULIC_PRESSURE_LOW", {"hydraulic_pressure_bar.jitter": 9})[0].cause.id == "hydraulic_leak"
    assert rank_causes("HYDRAULIC_PRESSURE_LOW", {"hydraulic_pressure_bar.jitter": 4})[0].cause.id == (
        "hydraulic_pump_wear")
    probabilities = [c.probability for c in rank_causes("OIL_OVERHEAT", coolant_normal)]
    assert probabilities == sorted(probabilities, reverse=True) and sum(probabilities) == pytest.approx(1.0)
    unknown = diagnosis("J1939_520001_3", {})
    assert unknown["causes"][0]["id"] == "see_code" and unknown["remote_resolvable"] is False


def test_evidence_rise_is_how_far_a_channel_climbed_recently():
    state: dict = {}
    for i in range(120):  # ten minutes steady at 85 °C
        evidence.update(state, T0 + timedelta(seconds=5 * i), {"coolant_temp_c": 85.0 + (i % 2) * 0.2})
    assert abs(evidence.statistics(state)["coolant_temp_c.rise"]) < 0.2
    for i in range(120, 132):  # one minute climbing 0.5 °C every 5 s
        evidence.update(state, T0 + timedelta(seconds=5 * i), {"coolant_temp_c": 85.0 + 0.5 * (i - 119)})
    stats = evidence.statistics(state)
    assert stats["coolant_temp_c.rise"] > 3.0
    assert stats["coolant_temp_c.rise"] == pytest.approx(stats["coolant_temp_c.now"] - stats["coolant_temp_c.mean"],
                                                         abs=0.002)


def test_engine_attaches_a_diagnosis_and_its_state_survives_a_restart():
    ctx = EquipmentContext("EX-1", "EX210", Site(51.95, 4.14, 1000.0))
    engine = EquipmentEngine(rulebook_for("EX210"), ctx)
    values = {"oil_temp_c": 112.0, "coolant_temp_c": 88.0, "engine_rpm": 1800.0, "lat": 51.95, "lon": 4.14,
              "hydraulic_pressure_bar": 250.0, "engine_hours": 1100.0}
    raised = []
    for i in range(3):
        raised += engine.feed(Sample(T0 + timedelta(seconds=i * 10), dict(values, oil_temp_c=112.0 + i * 0.1)))
    # Restarted from its saved state, the engine completes the sustained condition where it left off.
    restarted = EquipmentEngine(rulebook_for("EX210"), ctx, engine.state())
    for i in range(3, 5):
        raised += restarted.feed(Sample(T0 + timedelta(seconds=i * 10), dict(values, oil_temp_c=112.0 + i * 0.1)))
    assert [c.fault_code for c in raised] == ["OIL_OVERHEAT"]
    top = raised[0].diagnosis["causes"][0]
    assert top["id"] == "oil_cooler_clogged" and "coolant stays normal" in top["because"]
    assert restarted.active_faults() == ["oil_overheat"]


def test_every_rulebook_rule_has_a_catalogue_entry_and_a_unique_key():
    from diagnostics.catalogue import FAULTS

    for model in ("EX210", "EX350", "TC500", "CP42", "unknown-model"):
        book = rulebook_for(model)
        keys = [r.key for r in book.rules]
        assert len(keys) == len(set(keys))
        for rule in book.rules:
            assert rule.fault_code in FAULTS or rule.fault_code == "J1939", rule.fault_code
    assert rulebook_for("EX350").rule("oil_overheat").raise_at == 108.0
    assert DEFAULT.rule("oil_overheat").raise_at == 105.0
