"""Per equipment model: the limits the rules use. Data, versioned with the code."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class OilTemperatureLimits:
    raise_above_c: float
    clear_below_c: float
    # Above the limit this long before it is a fault; a passing spike is not.
    sustain_s: float
    # Below the clear level this long before the fault is over.
    clear_sustain_s: float


@dataclass(frozen=True, slots=True)
class ModelLimits:
    oil_temperature: OilTemperatureLimits


DEFAULT_LIMITS = ModelLimits(OilTemperatureLimits(raise_above_c=105.0, clear_below_c=98.0,
                                                  sustain_s=60.0, clear_sustain_s=60.0))

MODEL_LIMITS: dict[str, ModelLimits] = {
    # Large excavators run hotter hydraulic oil by design.
    "EX350": ModelLimits(OilTemperatureLimits(raise_above_c=108.0, clear_below_c=100.0,
                                              sustain_s=60.0, clear_sustain_s=60.0)),
}


def limits_for(model: str) -> ModelLimits:
    return MODEL_LIMITS.get(model, DEFAULT_LIMITS)
