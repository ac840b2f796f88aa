"""Running statistics per equipment that probable-cause ranking reads as evidence.

For each channel: ``mean`` (exponentially weighted over ``MEAN_TIME_CONSTANT_S``), ``now`` (the same
over ``NOW_TIME_CONSTANT_S``: the present level without single-sample noise), ``rise`` (``now`` minus
``mean``: how far the channel has climbed in the last minutes, e.g. coolant heating up while the
thermostat still holds it in its normal band) and ``jitter``, the
sample-to-sample noise (the RMS of first differences over √2, which equals the standard deviation
of white noise and ignores slow trends, averaged over ``JITTER_TIME_CONSTANT_S``). Some channels only mean something in
one operating state: hydraulic pressure is tracked at working load (engine above ``FULL_LOAD_RPM``).
The state is a small JSON-able dict so that it persists with the rules' state.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

from core.vocabulary import FULL_LOAD_RPM

MEAN_TIME_CONSTANT_S = 120.0
NOW_TIME_CONSTANT_S = 15.0
JITTER_TIME_CONSTANT_S = 30.0
TRACKED = ("oil_temp_c", "coolant_temp_c", "hydraulic_pressure_bar", "engine_rpm")
# One jump (a step change of level, a mode change) must not read as erratic noise: each squared
# difference counts at most this many times the current estimate (or the floor, in squared units).
JITTER_STEP_CAP = 9.0
JITTER_FLOOR_SQ = 1.0
# Samples further apart than this start the jitter afresh: a difference across a gap is not noise.
MAX_STEP_S = 120.0


def _gate_open(channel: str, values: dict[str, float | None]) -> bool:
    if channel == "hydraulic_pressure_bar":
        rpm = values.get("engine_rpm")
        return rpm is not None and rpm > FULL_LOAD_RPM
    return True


def update(state: dict[str, Any], ts: datetime, values: dict[str, float | None]) -> None:
    now = ts.timestamp()
    for channel in TRACKED:
        value = values.get(channel)
        slot = state.get(channel)
        if value is None or not _gate_open(channel, values):
            if slot is not None:
                slot["prev"] = None  # the next difference would span a gap or a mode change
            continue
        if slot is None:
            state[channel] = {"t": now, "mean": value, "now": value, "diff2": None, "prev": value}
            continue
        dt = max(0.0, now - slot["t"])
        slot["mean"] += _alpha(dt, MEAN_TIME_CONSTANT_S) * (value - slot["mean"])
        slot["now"] += _alpha(dt, NOW_TIME_CONSTANT_S) * (value - slot["now"])
        if slot["prev"] is not None and dt <= MAX_STEP_S:
            diff2 = (value - slot["prev"]) ** 2
            previous = slot["diff2"]
            if previous is None:
                slot["diff2"] = min(diff2, JITTER_FLOOR_SQ)
            else:
                diff2 = min(diff2, max(previous * JITTER_STEP_CAP, JITTER_FLOOR_SQ))
                slot["diff2"] = previous + _alpha(dt, JITTER_TIME_CONSTANT_S) * (diff2 - previous)
        slot["prev"] = value
        slot["t"] = now


def _alpha(dt: float, time_constant_s: float) -> float:
    return 1.0 - math.exp(-dt / time_constant_s) if dt > 0 else 0.0


def statistics(state: dict[str, Any]) -> dict[str, float]:
    stats: dict[str, float] = {}
    for channel, slot in state.items():
        stats[f"{channel}.mean"] = round(slot["mean"], 3)
        now = slot.get("now", slot["mean"])
        stats[f"{channel}.now"] = round(now, 3)
        stats[f"{channel}.rise"] = round(now - slot["mean"], 3)
        if slot.get("diff2") is not None:
            stats[f"{channel}.jitter"] = round(math.sqrt(slot["diff2"] / 2.0), 3)
    return stats
