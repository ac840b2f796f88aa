"""Rules: pure, stateful per equipment, fed one reading at a time in time order.

A rule's state is a small dict so that it can be persisted as JSON and survive restarts.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from diagnostics.catalogue import OilTemperatureLimits

OIL_OVERHEAT = "OIL_OVERHEAT"


@dataclass(frozen=True, slots=True)
class FaultChange:
    """A fault starting (``raised``) or ending (``cleared``) at ``at``."""

    kind: str  # "raised" | "cleared"
    fault_code: str
    severity: str
    at: datetime
    evidence: dict[str, Any]


class OilOverheatRule:
    """Oil temperature above the model's limit for a sustained time; clears with hysteresis."""

    name = "oil_overheat"
    version = 1

    def __init__(self, limits: OilTemperatureLimits) -> None:
        self.limits = limits

    def evaluate(self, state: dict[str, Any], ts: datetime, oil_temp_c: float | None) -> FaultChange | None:
        if oil_temp_c is None:
            return None
        limits = self.limits
        if not state.get("active"):
            if oil_temp_c <= limits.raise_above_c:
                state.pop("above_since", None)
                state.pop("peak_c", None)
                return None
            above_since = state.setdefault("above_since", ts.isoformat())
            state["peak_c"] = max(state.get("peak_c", oil_temp_c), oil_temp_c)
            since = datetime.fromisoformat(above_since)
            if (ts - since).total_seconds() < limits.sustain_s:
                return None
            state.clear()
            state.update(active=True, raised_at=ts.isoformat())
            return FaultChange("raised", OIL_OVERHEAT, "major", since, {
                "signal": "oil_temp_c", "value": oil_temp_c, "limit": limits.raise_above_c,
                "above_since": above_since, "sustain_s": limits.sustain_s,
            })
        if oil_temp_c >= limits.clear_below_c:
            state.pop("below_since", None)
            return None
        below_since = state.setdefault("below_since", ts.isoformat())
        if (ts - datetime.fromisoformat(below_since)).total_seconds() < limits.clear_sustain_s:
            return None
        state.clear()
        return FaultChange("cleared", OIL_OVERHEAT, "major", datetime.fromisoformat(below_since), {
            "signal": "oil_temp_c", "value": oil_temp_c, "clear_below": limits.clear_below_c,
        })
