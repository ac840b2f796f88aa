"""Which rules run on which equipment model, with their limits. Data, versioned with the code.

A change here bumps ``RULEBOOK_VERSION``; every fault records the version of the rule that raised it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from core.vocabulary import ENGINE_ON_RPM, FULL_LOAD_RPM
from diagnostics.rules import (
    Curfew,
    Dtc,
    Geofence,
    Missing,
    ModelResidual,
    Offline,
    Plausible,
    RateOfChange,
    Repeated,
    Rule,
    ServiceDue,
    Stuck,
    Threshold,
    When,
)

RULEBOOK_VERSION = 5
WORKING = When("engine_rpm", ">", FULL_LOAD_RPM)
ENGINE_RUNNING = When("engine_rpm", ">", ENGINE_ON_RPM)


@dataclass(frozen=True, slots=True)
class Rulebook:
    model: str
    rules: tuple[Rule, ...]
    version: int = RULEBOOK_VERSION

    def rule(self, key: str) -> Rule:
        return next(r for r in self.rules if r.key == key)


def _standard(oil_limit_c: float = 105.0, coolant_limit_c: float = 105.0, pressure_low_bar: float = 170.0,
              pressure_spike_bar: float = 380.0) -> tuple[Rule, ...]:
    return (
        Threshold("oil_overheat", "OIL_OVERHEAT", signal="oil_temp_c", raise_at=oil_limit_c,
                  clear_at=oil_limit_c - 7.0, sustain_s=30.0, clear_sustain_s=60.0, severity="major",
                  severity_levels=((oil_limit_c + 10.0, "critical"),)),
        Threshold("coolant_overheat", "COOLANT_OVERHEAT", signal="coolant_temp_c", raise_at=coolant_limit_c,
                  clear_at=coolant_limit_c - 7.0, sustain_s=30.0, clear_sustain_s=60.0, severity="major",
                  severity_levels=((coolant_limit_c + 8.0, "critical"),)),
        ModelResidual("oil_temp_model", "OIL_TEMP_ABOVE_EXPECTED"),
        ModelResidual("coolant_temp_model", "COOLANT_TEMP_ABOVE_EXPECTED", model_kind="coolant_temp",
                      min_excess=3.0, bias_max=2.0),
        RateOfChange("oil_rising_fast", "OIL_TEMP_RISING_FAST", version=2, signal="oil_temp_c", max_per_min=3.0,
                     window_s=120.0, steady_signal="engine_rpm", steady_band=150.0, steady_s=420.0),
        Threshold("hydraulic_pressure_low", "HYDRAULIC_PRESSURE_LOW", signal="hydraulic_pressure_bar",
                  raise_at=pressure_low_bar, clear_at=pressure_low_bar + 20.0, direction="below",
                  sustain_s=15.0, clear_sustain_s=60.0, severity="major", when=WORKING, smooth_s=8.0),
        ModelResidual("hydraulic_pressure_model", "HYDRAULIC_PRESSURE_BELOW_EXPECTED", model_kind="hydraulic_pressure",
                      direction="below", min_excess=35.0, bias_max=5.0, sustain_s=60.0),
        Repeated("hydraulic_pressure_spikes", "HYDRAULIC_PRESSURE_SPIKES", signal="hydraulic_pressure_bar",
                 raise_at=pressure_spike_bar, count=3, window_s=600.0),
        Stuck("oil_temp_stuck", "SENSOR_STUCK", signal="oil_temp_c", tolerance=0.001, window_s=45.0,
              when=ENGINE_RUNNING),
        Stuck("coolant_temp_stuck", "SENSOR_STUCK", signal="coolant_temp_c", tolerance=0.001, window_s=45.0,
              when=ENGINE_RUNNING),
        Plausible("oil_temp_plausible", "SENSOR_IMPLAUSIBLE", signal="oil_temp_c", low=-40.0, high=160.0),
        Plausible("coolant_temp_plausible", "SENSOR_IMPLAUSIBLE", signal="coolant_temp_c", low=-40.0, high=140.0),
        Missing("gps_lost", "GPS_LOST", signals=("lat", "lon"), sustain_s=30.0),
        Geofence("geofence", "GEOFENCE_EXIT", sustain_s=10.0),
        Curfew("curfew", "CURFEW_VIOLATION"),
        Dtc("dtc", "J1939"),
        ServiceDue("service_due", "SERVICE_DUE", interval_h=250.0, major_every_h=(500.0, 1000.0), warn_before_h=10.0),
        Offline("offline", "OFFLINE", after_s=120.0),
    )


DEFAULT = Rulebook("default", _standard())
RULEBOOKS: dict[str, Rulebook] = {
    "EX210": replace(DEFAULT, model="EX210"),
    # Large excavators run hotter hydraulic oil by design.
    "EX350": Rulebook("EX350", _standard(oil_limit_c=108.0)),
    "TC500": replace(DEFAULT, model="TC500"),
    # Concrete pumps work at higher pressure; spikes start higher.
    "CP42": Rulebook("CP42", _standard(pressure_spike_bar=420.0)),
}


def rulebook_for(model: str) -> Rulebook:
    return RULEBOOKS.get(model) or replace(DEFAULT, model=model)
