"""The catalogue of faults the simulator can inject, with the diagnosis each one should produce.

This is the ground truth a benchmark scores the diagnostics engine against: for a machine whose
``MachineSpec.fault`` is ``kind``, the engine is expected to raise every code in
``expected_fault_codes`` and to rank ``expected_cause`` first among the probable causes. The codes
and cause ids are the diagnostics engine's names, kept here as plain strings because device_sim
may not import diagnostics. How each fault changes the readings lives in device_sim.machine.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class InjectedFault:
    kind: str
    description: str
    expected_fault_codes: frozenset[str]
    expected_cause: str


def _fault(kind: str, description: str, codes: tuple[str, ...], cause: str) -> tuple[str, InjectedFault]:
    return kind, InjectedFault(kind, description, frozenset(codes), cause)


INJECTABLE_FAULTS: dict[str, InjectedFault] = dict((
    _fault("radiator_clogged",
           "Radiator clogged: cooling of both engine coolant and oil drops to half over ~30 s; under load oil and "
           "coolant climb past 105 °C, coolant stays smooth.",
           ("OIL_OVERHEAT", "COOLANT_OVERHEAT", "OIL_TEMP_ABOVE_EXPECTED", "COOLANT_TEMP_ABOVE_EXPECTED"),
           "radiator_clogged"),
    _fault("oil_cooler_clogged",
           "Oil cooler clogged: only oil cooling drops to half over ~30 s; oil climbs past 105 °C under load while "
           "coolant stays normal (80-95 °C).",
           ("OIL_OVERHEAT", "OIL_TEMP_ABOVE_EXPECTED"), "oil_cooler_clogged"),
    _fault("low_coolant",
           "Low coolant level: coolant rises fast past 105 °C and turns erratic (air pockets, extra noise ~3 °C); "
           "oil follows more slowly.",
           ("COOLANT_OVERHEAT", "OIL_OVERHEAT", "OIL_TEMP_ABOVE_EXPECTED", "COOLANT_TEMP_ABOVE_EXPECTED"),
           "low_coolant"),
    _fault("hydraulic_pump_wear",
           "Worn hydraulic pump: working pressure ramps down to ~60% of healthy over ~30 s, smoothly; idle and "
           "travel pressure slightly lower.",
           ("HYDRAULIC_PRESSURE_LOW", "HYDRAULIC_PRESSURE_BELOW_EXPECTED"), "hydraulic_pump_wear"),
    _fault("hydraulic_leak",
           "Hydraulic leak: working pressure drops to ~60% of healthy and fluctuates strongly (~15 bar).",
           ("HYDRAULIC_PRESSURE_LOW", "HYDRAULIC_PRESSURE_BELOW_EXPECTED"), "hydraulic_leak"),
    _fault("oil_temp_sensor_stuck",
           "Oil temperature sensor stuck: the reported oil temperature freezes at its value at fault time; the "
           "machine itself is fine.",
           ("SENSOR_STUCK",), "sensor_failure"),
    _fault("gps_loss",
           "GPS antenna failure: position and speed are no longer reported.",
           ("GPS_LOST",), "gps_antenna"),
    _fault("geofence_exit",
           "Machine loaded on a truck and driven away from its site in a straight line at 60 km/h, engine idling, "
           "controller still reporting.",
           ("GEOFENCE_EXIT",), "unauthorized_relocation"),
    _fault("dtc_oil_pressure",
           "The controller reports J1939 DM1 SPN 100 FMI 1 (engine oil pressure below normal, most severe) in every "
           "reading, its occurrence count rising.",
           ("ENGINE_OIL_PRESSURE_LOW",), "low_engine_oil"),
    _fault("service_due",
           "Service interval reached: engine hours jump to 2 h before the next multiple of 500 h and keep "
           "accumulating.",
           ("SERVICE_DUE",), "scheduled_service"),
))

COOLING_FAULTS: tuple[str, ...] = ("radiator_clogged", "oil_cooler_clogged", "low_coolant")
