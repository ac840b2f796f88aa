"""A machine that behaves like one: duty cycles, thermal lag, fuel burn, GPS at and between sites.

The model is deliberately simple physics, not noise: oil temperature relaxes toward an
equilibrium set by engine load and ambient temperature with a thermal time constant; a cooling
fault lowers the cooling system's effectiveness, so the same load settles at a higher temperature.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import datetime

from core.telemetry import FaultCode, Reading

IDLE_RPM = 800.0
WORK_RPM = 1800.0
TRAVEL_RPM = 1500.0
RPM_TIME_CONSTANT_S = 3.0
OIL_TIME_CONSTANT_S = 120.0
# Oil settles this far above ambient at idle, plus this much more at full load.
OIL_RISE_IDLE_C = 25.0
OIL_RISE_FULL_LOAD_C = 55.0
# A failed cooling circuit (clogged radiator, slipping fan belt) keeps this share of its capacity.
FAULTY_COOLING_EFFECTIVENESS = 0.5
COOLING_FAULT_RAMP_S = 60.0
TANK_LITRES = 400.0
FULL_LOAD_LITRES_PER_H = 30.0
IDLE_LITRES_PER_H = 4.0
TRAVEL_SPEED_KMH = 20.0
METRES_PER_DEG_LAT = 111_320.0
# J1939 SPN 175 "Engine Oil Temperature 1", FMI 0 "above normal, most severe".
SPN_ENGINE_OIL_TEMP = 175
FMI_ABOVE_NORMAL_MOST_SEVERE = 0
DTC_OIL_TEMP_C = 110.0

# (mode, min seconds, max seconds) — a working day compressed so that a demo shows every mode.
DUTY_CYCLE = {"working": (90.0, 400.0), "idle": (20.0, 90.0), "travel": (60.0, 180.0)}


@dataclass(frozen=True, slots=True)
class MachineSpec:
    equipment_id: str
    serial: str
    model: str
    kind: str
    customer: str
    site: str
    site_lat: float
    site_lon: float
    ambient_c: float = 15.0
    # Seconds after the simulation starts when the cooling circuit begins to fail; None = healthy.
    cooling_fault_after_s: float | None = None


class SimulatedMachine:
    def __init__(self, spec: MachineSpec, start: datetime, seed: int) -> None:
        self.spec = spec
        self.rng = random.Random(seed)
        self.start = start
        self.elapsed_s = 0.0
        self.mode = "idle"
        self.mode_left_s = self.rng.uniform(5.0, 60.0)
        self.rpm = IDLE_RPM
        self.load = 0.1
        self.oil_temp_c = spec.ambient_c + OIL_RISE_IDLE_C + self.rng.uniform(-3, 3)
        self.fuel_litres = TANK_LITRES * self.rng.uniform(0.3, 0.95)
        self.engine_hours = self.rng.uniform(100.0, 8000.0)
        self.lat, self.lon = self._near_site()
        self.destination: tuple[float, float] | None = None
        self.speed_kmh = 0.0

    # --- physics ---

    def cooling_effectiveness(self) -> float:
        fault_at = self.spec.cooling_fault_after_s
        if fault_at is None or self.elapsed_s < fault_at:
            return 1.0
        progress = min(1.0, (self.elapsed_s - fault_at) / COOLING_FAULT_RAMP_S)
        return 1.0 - progress * (1.0 - FAULTY_COOLING_EFFECTIVENESS)

    def advance(self, dt_s: float) -> None:
        self.elapsed_s += dt_s
        self.mode_left_s -= dt_s
        if self.mode_left_s <= 0:
            self._next_mode()
        target_rpm, target_load = {
            "working": (WORK_RPM + self.rng.gauss(0, 60), 0.65 + 0.25 * self.rng.random()),
            "idle": (IDLE_RPM, 0.05),
            "travel": (TRAVEL_RPM, 0.35),
        }[self.mode]
        blend = 1.0 - math.exp(-dt_s / RPM_TIME_CONSTANT_S)
        self.rpm += (target_rpm - self.rpm) * blend
        self.load += (target_load - self.load) * blend

        equilibrium = self.spec.ambient_c + (OIL_RISE_IDLE_C + OIL_RISE_FULL_LOAD_C * self.load) / (
            self.cooling_effectiveness())
        self.oil_temp_c += (equilibrium - self.oil_temp_c) * (1.0 - math.exp(-dt_s / OIL_TIME_CONSTANT_S))

        litres_per_h = IDLE_LITRES_PER_H + (FULL_LOAD_LITRES_PER_H - IDLE_LITRES_PER_H) * self.load
        self.fuel_litres -= litres_per_h * dt_s / 3600.0
        if self.fuel_litres < 0.08 * TANK_LITRES:
            self.fuel_litres = TANK_LITRES * 0.95  # the fuel bowser came by
        self.engine_hours += dt_s / 3600.0
        self._move(dt_s)

    def _next_mode(self) -> None:
        if self.mode == "travel":
            self.mode = "idle"
        elif self.mode == "working":
            self.mode = "travel" if self.rng.random() < 0.1 else "idle"
        else:
            self.mode = "working"
        if self.mode == "travel":
            bearing = self.rng.uniform(0, 2 * math.pi)
            distance_m = self.rng.uniform(300.0, 1500.0)
            self.destination = (
                self.spec.site_lat + distance_m * math.cos(bearing) / METRES_PER_DEG_LAT,
                self.spec.site_lon + distance_m * math.sin(bearing) / self._metres_per_deg_lon(),
            )
        low, high = DUTY_CYCLE[self.mode]
        self.mode_left_s = self.rng.uniform(low, high)

    def _move(self, dt_s: float) -> None:
        if self.mode != "travel" or self.destination is None:
            self.speed_kmh = 0.0
            return
        d_north = (self.destination[0] - self.lat) * METRES_PER_DEG_LAT
        d_east = (self.destination[1] - self.lon) * self._metres_per_deg_lon()
        remaining_m = math.hypot(d_north, d_east)
        step_m = TRAVEL_SPEED_KMH / 3.6 * dt_s
        if remaining_m <= step_m:
            self.lat, self.lon = self.destination
            self.destination = None
            self.speed_kmh = 0.0
            return
        self.lat += d_north / remaining_m * step_m / METRES_PER_DEG_LAT
        self.lon += d_east / remaining_m * step_m / self._metres_per_deg_lon()
        self.speed_kmh = TRAVEL_SPEED_KMH

    def _metres_per_deg_lon(self) -> float:
        return METRES_PER_DEG_LAT * max(0.1, math.cos(math.radians(self.spec.site_lat)))

    def _near_site(self) -> tuple[float, float]:
        return (self.spec.site_lat + self.rng.gauss(0, 50) / METRES_PER_DEG_LAT,
                self.spec.site_lon + self.rng.gauss(0, 50) / METRES_PER_DEG_LAT)

    # --- what the controller reports ---

    def reading(self, ts: datetime) -> Reading:
        noise = self.rng.gauss
        oil = self.oil_temp_c + noise(0, 0.3)
        codes = ()
        if oil > DTC_OIL_TEMP_C:
            codes = (FaultCode(SPN_ENGINE_OIL_TEMP, FMI_ABOVE_NORMAL_MOST_SEVERE, 1),)
        pressure = {"working": 180.0 + 100.0 * self.load, "idle": 25.0, "travel": 50.0}[self.mode]
        return Reading(
            ts=ts,
            oil_temp_c=round(oil, 2),
            engine_rpm=round(max(0.0, self.rpm + noise(0, 15)), 1),
            hydraulic_pressure_bar=round(max(0.0, pressure + noise(0, 4)), 1),
            coolant_temp_c=round(78.0 + 10.0 * self.load + (oil - 85.0) * 0.3 + noise(0, 0.3), 2),
            fuel_level_pct=round(100.0 * self.fuel_litres / TANK_LITRES, 2),
            engine_hours=round(self.engine_hours, 4),
            lat=round(self.lat, 6),
            lon=round(self.lon, 6),
            speed_kmh=round(self.speed_kmh, 1),
            fault_codes=codes,
        )
