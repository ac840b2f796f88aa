"""Running statistics per equipment that probable-cause ranking reads as evidence.

For each channel: ``mean`` (exponentially weighted, time constant ``EVIDENCE_TIME_CONSTANT_S``) and
``jitter``, the sample-to-sample noise (the RMS of first differences over √2, which equals the
standard deviation of white noise and ignores slow trends). Some channels only mean something in
one operating state: hydraulic pressure is tracked while working (engine above ``WORKING_RPM``).
The state is a small JSON-able dict so that it persists with the rules' state.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

EVIDENCE_TIME_CONSTANT_S = 120.0
WORKING_RPM = 1600.0
TRACKED = ("oil_temp_c", "coolant_temp_c", "hydraulic_pressure_bar", "engine_rpm")
# Samples further apart than this start the jitter afresh: a difference across a gap is not noise.
MAX_STEP_S = 120.0


def _gate_open(channel: str, values: dict[str, float | None]) -> bool:
    if channel == "hydraulic_pressure_bar":
        rpm = values.get("engine_rpm")
        return rpm is not None and rpm > WORKING_RPM
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
            state[channel] = {"t": now, "mean": value, "diff2": None, "prev": value}
            continue
        dt = max(0.0, now - slot["t"])
        alpha = 1.0 - math.exp(-dt / EVIDENCE_TIME_CONSTANT_S) if dt else 0.0
        slot["mean"] += alpha * (value - slot["mean"])
        if slot["prev"] is not None and dt <= MAX_STEP_S:
            diff2 = (value - slot["prev"]) ** 2
            slot["diff2"] = diff2 if slot["diff2"] is None else slot["diff2"] + alpha * (diff2 - slot["diff2"])
        slot["prev"] = value
        slot["t"] = now


def statistics(state: dict[str, Any]) -> dict[str, float]:
    stats: dict[str, float] = {}
    for channel, slot in state.items():
        stats[f"{channel}.mean"] = round(slot["mean"], 3)
        if slot.get("diff2") is not None:
            stats[f"{channel}.jitter"] = round(math.sqrt(slot["diff2"] / 2.0), 3)
    return stats
