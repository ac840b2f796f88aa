from datetime import UTC, datetime, timedelta

from diagnostics.catalogue import OilTemperatureLimits
from diagnostics.rules import OilOverheatRule

T0 = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
LIMITS = OilTemperatureLimits(raise_above_c=105.0, clear_below_c=98.0, sustain_s=60.0, clear_sustain_s=30.0)


def feed(rule, state, temps, start_s=0, step_s=10):
    changes = []
    for i, temp in enumerate(temps):
        change = rule.evaluate(state, T0 + timedelta(seconds=start_s + i * step_s), temp)
        if change:
            changes.append((start_s + i * step_s, change))
    return changes


def test_raises_only_after_the_limit_is_exceeded_for_the_sustain_time():
    rule, state = OilOverheatRule(LIMITS), {}
    changes = feed(rule, state, [100, 106, 107, 108, 109, 110, 111, 112])
    # Above since t=10; sustained 60 s at t=70.
    assert [(t, c.kind) for t, c in changes] == [(70, "raised")]
    raised = changes[0][1]
    assert raised.at == T0 + timedelta(seconds=10)
    assert raised.evidence["limit"] == 105.0 and raised.evidence["value"] == 112


def test_a_short_spike_raises_nothing():
    rule, state = OilOverheatRule(LIMITS), {}
    assert feed(rule, state, [100, 110, 112, 111, 104, 110, 111, 100, 99]) == []


def test_clears_with_hysteresis_only_below_the_clear_level_for_the_clear_time():
    rule, state = OilOverheatRule(LIMITS), {}
    feed(rule, state, [110] * 8)
    assert state["active"]
    # 100 °C is below the raise limit but above the clear level: still a fault.
    assert feed(rule, state, [100] * 10, start_s=100) == []
    changes = feed(rule, state, [97, 96, 95, 94], start_s=300)
    assert [(t, c.kind) for t, c in changes] == [(330, "cleared")]
    assert not state


def test_missing_oil_temperature_leaves_the_state_alone():
    rule, state = OilOverheatRule(LIMITS), {}
    feed(rule, state, [110, 110])
    before = dict(state)
    assert rule.evaluate(state, T0 + timedelta(seconds=500), None) is None
    assert state == before
