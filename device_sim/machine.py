"""A machine that behaves like one: duty cycles, thermal lag, fuel burn, GPS at and between sites.

The model is deliberately simple physics, not noise: engine coolant and oil relax toward
equilibria set by engine load and ambient temperature, each with its own thermal time constant
(a thermostat holds healthy coolant in its band, 78-90 °C). The machine lives in simulated
time, ``start`` plus the seconds it was advanced, and the world drifts with it: the air of its site
through the seasons and the day (device_sim.climate), its own cooling capacity, pump and sensor
errors, and a duty mix that changes every week (device_sim.variation). Faults from the catalogue in
device_sim.faults act on the physics (a clogged radiator lowers the cooling system's effectiveness,
so the same load settles at a higher temperature) or on what the controller reports (a stuck
sensor, a lost GPS fix, a DM1 trouble code), and the machine knows when its fault began so that a
benchmark can measure detection delay.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from core.telemetry import J1939_MAX_OC, FaultCode, Reading
from device_sim.climate import SiteClimate
from device_sim.faults import INJECTABLE_FAULTS, InjectedFault
from device_sim.variation import ACTIVITIES, DutyMix, MachineTraits

IDLE_RPM = 800.0
WORK_RPM = 1800.0
TRAVEL_RPM = 1500.0
RPM_TIME_CONSTANT_S = 3.0
OIL_TIME_CONSTANT_S = 120.0
# Oil settles this far above ambient at idle, plus this much more at full load: a healthy machine
# digging flat out on a 35 °C day with the weakest cooling of its model stays near 95 °C, well under
# the 105 °C overheat limit; on a mild day it runs at 60-70 °C.
OIL_RISE_IDLE_C = 20.0
OIL_RISE_FULL_LOAD_C = 36.0
# The oil cooler is coolant-cooled: coolant hotter than this heats the oil by this share of the excess.
OIL_COOLANT_COUPLING_ABOVE_C = 95.0
OIL_COOLANT_COUPLING = 0.3
# The wax thermostat starts to open at 78 °C and is fully open 12 °C higher; its opening is
# proportional to how far the coolant is into that band. It opens as far as the radiator needs to
# reject the engine's heat, so the coolant sits a little higher in the band under load, on a hot day
# and, before it ever runs hot, as the radiator loses capacity: 82 °C idling on a mild day, 85-87 °C
# digging, and 1-2 °C more with a radiator at 80 % of its capacity...
COOLANT_THERMOSTAT_OPENS_C = 78.0
COOLANT_THERMOSTAT_BAND_C = 12.0
# ...as long as this rise above ambient (fully open thermostat) keeps it inside the band: a healthy
# radiator at full load on a 35 °C day would settle at 84 °C fully open; a clogged one (35 % of its
# capacity) passes 105 °C at working load even at 0 °C.
COOLANT_RISE_IDLE_C = 20.0
COOLANT_RISE_FULL_LOAD_C = 25.0
COOLANT_TIME_CONSTANT_S = 60.0
# Low coolant: less thermal mass, so temperatures move faster, and air pockets make the sensor jumpy.
LOW_COOLANT_TIME_CONSTANT_S = 20.0
LOW_COOLANT_NOISE_C = 3.0
# Cooling faults, fully developed: (oil cooling effectiveness, coolant cooling effectiveness). Strong
# enough that each overheats at working load within half an hour on a cold day (from a cold engine).
# On a hot afternoon the oil of a clogged radiator or oil cooler can then pass 160 °C, which the
# rulebook also flags as implausible: a real engine would derate first, which is not modelled.
COOLING_FAULT_EFFECTIVENESS = {
    "radiator_clogged": (0.35, 0.35),
    "oil_cooler_clogged": (0.35, 1.0),
    "low_coolant": (0.4, 0.3),
}
# Seconds for a physical fault to develop fully from its onset.
FAULT_RAMP_S = {"hydraulic_leak": 10.0}
DEFAULT_FAULT_RAMP_S = 30.0
# Hydraulic pressure: working pressure is 180 + 100 × load bar (load 0.6-0.95, so 240-275 bar), times
# the machine's pump efficiency.
WORK_PRESSURE_BASE_BAR = 180.0
WORK_PRESSURE_PER_LOAD_BAR = 100.0
IDLE_PRESSURE_BAR = 25.0
TRAVEL_PRESSURE_BAR = 50.0
# Hydraulic faults, fully developed: (share of working pressure, share at idle/travel, extra noise σ bar).
HYDRAULIC_FAULT_EFFECT = {
    "hydraulic_pump_wear": (0.6, 0.9, 0.0),
    "hydraulic_leak": (0.6, 0.85, 15.0),
}
TANK_LITRES = 400.0
FULL_LOAD_LITRES_PER_H = 30.0
IDLE_LITRES_PER_H = 4.0
TRAVEL_SPEED_KMH = 20.0
# Healthy travel stays this close to the site centre (site geofences are 1 km).
TRAVEL_MIN_DISTANCE_M = 200.0
TRAVEL_MAX_DISTANCE_M = 700.0
# geofence_exit: the machine rides a truck this fast, this far, then the truck parks.
TRUCK_SPEED_KMH = 60.0
TRUCK_TRIP_M = 40_000.0
METRES_PER_DEG_LAT = 111_320.0
# J1939 SPN 175 "Engine Oil Temperature 1", FMI 0 "above normal, most severe".
SPN_ENGINE_OIL_TEMP = 175
FMI_ABOVE_NORMAL_MOST_SEVERE = 0
DTC_OIL_TEMP_C = 110.0
# J1939 SPN 100 "Engine Oil Pressure", FMI 1 "data valid but below normal, most severe"; the
# intermittent fault re-occurs (its occurrence count rises) once per this many seconds.
SPN_ENGINE_OIL_PRESSURE = 100
FMI_BELOW_NORMAL_MOST_SEVERE = 1
DTC_OIL_PRESSURE_RECUR_S = 60.0
# service_due: engine hours jump to this long before the next multiple of the service interval.
SERVICE_INTERVAL_H = 500.0
SERVICE_DUE_LEAD_H = 2.0

# (activity, min seconds, max seconds) — a working day compressed so that a demo shows every activity.
# The week's duty mix (device_sim.variation.DutyMix) decides how often each comes next.
DUTY_CYCLE = {"digging": (90.0, 400.0), "lifting": (90.0, 400.0), "idle": (20.0, 90.0), "travel": (60.0, 180.0)}
# Engine load range of the two kinds of work: digging drives the hydraulics harder than lifting.
WORK_LOAD = {"digging": (0.7, 0.95), "lifting": (0.6, 0.8)}
# The activity of a machine riding a truck (geofence_exit): engine idling, no duty cycle.
TRANSPORTED = "transported"
# The air changes by hundredths of a degree a minute: working it out once a simulated minute is enough.
AMBIENT_REFRESH_S = 60.0
AMBIENT_SENSOR_NOISE_C = 0.1


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
    # The site's climate: its IANA time zone (local hours of the daily cycle) and mean air temperature.
    site_timezone: str = "UTC"
    site_annual_mean_c: float = 11.0
    # A kind from device_sim.faults.INJECTABLE_FAULTS, or None for a healthy machine.
    fault: str | None = None
    # Seconds of simulated time after the machine's start when the fault begins (None = at start).
    fault_after_s: float | None = None
    # Seconds the fault takes to develop fully (None: the kind's default, minutes): a radiator that
    # clogs over hours is what a model should see coming before a limit is crossed.
    fault_ramp_s: float | None = None

    def __post_init__(self) -> None:
        if self.fault is not None and self.fault not in INJECTABLE_FAULTS:
            raise ValueError(f"unknown fault {self.fault!r}; known: {', '.join(INJECTABLE_FAULTS)}")
        if self.fault_after_s is not None and not self.fault_after_s >= 0:
            raise ValueError(f"fault_after_s must be >= 0, got {self.fault_after_s}")


class SimulatedMachine:
    def __init__(self, spec: MachineSpec, start: datetime, seed: int) -> None:
        self.spec = spec
        # Separate streams, so that a fault changes nothing of the duty cycle or the sensor noise:
        # a faulty machine and its healthy twin (same spec without fault, same seed) work alike.
        self.rng = random.Random(seed)
        self.noise_rng = random.Random(seed * 2 + 1)
        self.fault_rng = random.Random(seed * 2 + 2)
        self.start = start
        self.elapsed_s = 0.0
        # Built in, and the same in every run: a machine is the same machine whatever its seed.
        self.traits = MachineTraits.of(spec.equipment_id)
        self.climate = SiteClimate(spec.site, spec.site_lat, spec.site_timezone, spec.site_annual_mean_c)
        self.ambient_c = self.climate.ambient_c(start)
        self._ambient_at_s = 0.0
        self.activity = "idle"
        self.mode_left_s = self.rng.uniform(5.0, 60.0)
        self.rpm = IDLE_RPM
        self.load = 0.1
        self.oil_temp_c = self.ambient_c + OIL_RISE_IDLE_C + self.rng.uniform(-3, 3)
        self.coolant_temp_c = COOLANT_THERMOSTAT_OPENS_C + self.rng.uniform(0, 3)
        self.fuel_litres = TANK_LITRES * self.rng.uniform(0.3, 0.95)
        self.engine_hours = self.rng.uniform(100.0, 8000.0)
        self.lat, self.lon = self._near_site()
        self.destination: tuple[float, float] | None = None
        self.speed_kmh = 0.0
        # Engine start inhibit (a remote lock): the engine is off and stays off until unlocked.
        self.locked = False
        self._fault_begun = False
        self._stuck_oil_c: float | None = None
        self._truck_heading_rad = 0.0
        self._truck_left_m = 0.0

    # --- simulated time and ground truth ---

    @property
    def now(self) -> datetime:
        """The machine's clock: its start plus the simulated seconds it has been advanced."""
        return self.start + timedelta(seconds=self.elapsed_s)

    @property
    def mode(self) -> str:
        """What the engine is doing: ``working`` (digging or lifting), ``idle``, ``travel``, ``transported``."""
        return "working" if self.activity in WORK_LOAD else self.activity

    @property
    def fault_after_s(self) -> float | None:
        """Seconds after start when the injected fault begins; None for a healthy machine."""
        if self.spec.fault is None:
            return None
        return self.spec.fault_after_s or 0.0

    @property
    def fault_started_at(self) -> datetime | None:
        """When the injected fault begins (or began), on the readings' clock; None when healthy."""
        after = self.fault_after_s
        return None if after is None else self.start + timedelta(seconds=after)

    @property
    def injected_fault(self) -> InjectedFault | None:
        """The catalogue entry of this machine's fault (active or still to come)."""
        return None if self.spec.fault is None else INJECTABLE_FAULTS[self.spec.fault]

    def fault_active(self, elapsed_s: float | None = None) -> bool:
        """Whether the fault is present at ``elapsed_s`` seconds after start (default: now)."""
        after = self.fault_after_s
        return after is not None and (self.elapsed_s if elapsed_s is None else elapsed_s) >= after

    def _active(self, kind: str) -> bool:
        return self.spec.fault == kind and self.fault_active()

    def _fault_progress(self) -> float:
        """0 before the fault, rising to 1 as a physical fault develops."""
        after = self.fault_after_s
        if after is None or self.elapsed_s < after:
            return 0.0
        ramp_s = self.spec.fault_ramp_s or FAULT_RAMP_S.get(self.spec.fault or "", DEFAULT_FAULT_RAMP_S)
        return min(1.0, (self.elapsed_s - after) / ramp_s)

    def distance_from_site_m(self) -> float:
        d_north = (self.lat - self.spec.site_lat) * METRES_PER_DEG_LAT
        d_east = (self.lon - self.spec.site_lon) * self._metres_per_deg_lon()
        return math.hypot(d_north, d_east)

    # --- physics ---

    def cooling_effectiveness(self) -> tuple[float, float]:
        """(oil, coolant) cooling effectiveness: 1.0 healthy, lower as a cooling fault develops."""
        full = COOLING_FAULT_EFFECTIVENESS.get(self.spec.fault or "")
        if full is None:
            return 1.0, 1.0
        progress = self._fault_progress()
        return 1.0 - progress * (1.0 - full[0]), 1.0 - progress * (1.0 - full[1])

    def advance(self, dt_s: float) -> None:
        self.elapsed_s += dt_s
        if self.elapsed_s - self._ambient_at_s >= AMBIENT_REFRESH_S:
            self.ambient_c = self.climate.ambient_c(self.now)
            self._ambient_at_s = self.elapsed_s
        if not self._fault_begun and self.fault_active():
            self._fault_begun = True
            self._begin_fault()
        if self.activity != TRANSPORTED:
            self.mode_left_s -= dt_s
            if self.mode_left_s <= 0:
                self._next_activity()
        if self.activity in WORK_LOAD:
            low, high = WORK_LOAD[self.activity]
            target_rpm, target_load = WORK_RPM + self.rng.gauss(0, 60), low + (high - low) * self.rng.random()
        elif self.activity == "travel":
            target_rpm, target_load = TRAVEL_RPM, 0.35
        else:  # idle, or idling on a truck
            target_rpm, target_load = IDLE_RPM, 0.05
        if self.locked:
            target_rpm, target_load = 0.0, 0.0
        blend = 1.0 - math.exp(-dt_s / RPM_TIME_CONSTANT_S)
        self.rpm = 0.0 if self.locked else self.rpm + (target_rpm - self.rpm) * blend
        self.load += (target_load - self.load) * blend
        self._heat(dt_s)

        litres_per_h = IDLE_LITRES_PER_H + (FULL_LOAD_LITRES_PER_H - IDLE_LITRES_PER_H) * self.load
        self.fuel_litres -= litres_per_h * dt_s / 3600.0
        if self.fuel_litres < 0.08 * TANK_LITRES:
            self.fuel_litres = TANK_LITRES * 0.95  # the fuel bowser came by
        self.engine_hours += dt_s / 3600.0
        self._move(dt_s)

    def _heat(self, dt_s: float) -> None:
        oil_effectiveness, coolant_effectiveness = self.cooling_effectiveness()
        capacity = self.traits.cooling_capacity
        ambient = self.ambient_c
        fully_open_rise = (COOLANT_RISE_IDLE_C + COOLANT_RISE_FULL_LOAD_C * self.load) / (
            coolant_effectiveness * capacity)
        opens, band = COOLANT_THERMOSTAT_OPENS_C, COOLANT_THERMOSTAT_BAND_C
        if ambient + fully_open_rise >= opens + band:
            equilibrium = ambient + fully_open_rise
        else:
            # The heat the radiator sheds, opening × (coolant − air) / rise, equals the engine's when
            # (coolant − opens)(coolant − air) = band × fully open rise.
            equilibrium = (opens + ambient + math.sqrt((opens - ambient) ** 2 + 4 * band * fully_open_rise)) / 2
        coolant_tau_s = COOLANT_TIME_CONSTANT_S
        if self.spec.fault == "low_coolant":
            coolant_tau_s -= self._fault_progress() * (COOLANT_TIME_CONSTANT_S - LOW_COOLANT_TIME_CONSTANT_S)
        self.coolant_temp_c += (equilibrium - self.coolant_temp_c) * (
            1.0 - math.exp(-dt_s / coolant_tau_s))

        oil_rise = (OIL_RISE_IDLE_C + OIL_RISE_FULL_LOAD_C * self.load) / (oil_effectiveness * capacity)
        oil_equilibrium = (ambient + oil_rise
                           + OIL_COOLANT_COUPLING * max(0.0, self.coolant_temp_c - OIL_COOLANT_COUPLING_ABOVE_C))
        self.oil_temp_c += (oil_equilibrium - self.oil_temp_c) * (1.0 - math.exp(-dt_s / OIL_TIME_CONSTANT_S))

    def repair(self) -> None:
        """The fault is fixed (on site, or by the customer with the dispatcher on the phone): from now on
        the machine is healthy; a machine carried off its site is brought back."""
        if self.activity == TRANSPORTED or self.spec.fault == "geofence_exit":
            self.lat, self.lon = self._near_site()
            self.activity, self.mode_left_s, self.destination = "idle", self.rng.uniform(5.0, 60.0), None
        self.spec = replace(self.spec, fault=None, fault_after_s=None)
        self._fault_begun = False
        self._stuck_oil_c = None

    def _begin_fault(self) -> None:
        """What happens at the instant of the fault (before this step's physics)."""
        fault = self.spec.fault
        if fault == "oil_temp_sensor_stuck":
            self._stuck_oil_c = round(self.oil_temp_c + self.traits.sensor_error("oil_temp_c", self.now), 2)
        elif fault == "service_due":
            next_service_h = (math.floor((self.engine_hours + SERVICE_DUE_LEAD_H) / SERVICE_INTERVAL_H) + 1) * (
                SERVICE_INTERVAL_H)
            self.engine_hours = next_service_h - SERVICE_DUE_LEAD_H
        elif fault == "geofence_exit":
            # Loaded on a truck: straight away from the site centre, give or take 30°.
            d_north = (self.lat - self.spec.site_lat) * METRES_PER_DEG_LAT
            d_east = (self.lon - self.spec.site_lon) * self._metres_per_deg_lon()
            away = math.atan2(d_east, d_north) if math.hypot(d_north, d_east) > 1.0 else (
                self.fault_rng.uniform(0, 2 * math.pi))
            self._truck_heading_rad = away + self.fault_rng.uniform(-math.pi / 6, math.pi / 6)
            self._truck_left_m = TRUCK_TRIP_M
            self.activity = TRANSPORTED
            self.destination = None

    def _next_activity(self) -> None:
        # Chosen in proportion to the week's share over the mean length of a spell, so that over the
        # week the time spent in each activity follows the mix.
        mix = DutyMix.of_week(self.spec.equipment_id, self.now)
        weights = [mix.share(a) / sum(DUTY_CYCLE[a]) for a in ACTIVITIES]
        self.activity = self.rng.choices(ACTIVITIES, weights)[0]
        if self.activity == "travel":
            bearing = self.rng.uniform(0, 2 * math.pi)
            distance_m = self.rng.uniform(TRAVEL_MIN_DISTANCE_M, TRAVEL_MAX_DISTANCE_M)
            self.destination = (
                self.spec.site_lat + distance_m * math.cos(bearing) / METRES_PER_DEG_LAT,
                self.spec.site_lon + distance_m * math.sin(bearing) / self._metres_per_deg_lon(),
            )
        low, high = DUTY_CYCLE[self.activity]
        self.mode_left_s = self.rng.uniform(low, high)

    def _move(self, dt_s: float) -> None:
        if self.locked and self.activity != TRANSPORTED:
            self.speed_kmh = 0.0
            return
        if self.activity == TRANSPORTED:
            step_m = min(self._truck_left_m, TRUCK_SPEED_KMH / 3.6 * dt_s)
            self._truck_left_m -= step_m
            self.lat += step_m * math.cos(self._truck_heading_rad) / METRES_PER_DEG_LAT
            self.lon += step_m * math.sin(self._truck_heading_rad) / self._metres_per_deg_lon()
            self.speed_kmh = TRUCK_SPEED_KMH if self._truck_left_m > 0 else 0.0
            return
        if self.activity != "travel" or self.destination is None:
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
                self.spec.site_lon + self.rng.gauss(0, 50) / self._metres_per_deg_lon())

    def _hydraulic_pressure_bar(self) -> float:
        if self.mode == "working":
            nominal = WORK_PRESSURE_BASE_BAR + WORK_PRESSURE_PER_LOAD_BAR * self.load
        else:
            nominal = TRAVEL_PRESSURE_BAR if self.mode == "travel" else IDLE_PRESSURE_BAR
        healthy = nominal * self.traits.pump_efficiency
        effect = HYDRAULIC_FAULT_EFFECT.get(self.spec.fault or "")
        if effect is None or not self.fault_active():
            return healthy
        working_share, other_share, extra_noise_bar = effect
        progress = self._fault_progress()
        if self.mode == "working":
            share = 1.0 - progress * (1.0 - working_share)
            noise_bar = extra_noise_bar * progress
        else:
            share = 1.0 - progress * (1.0 - other_share)
            noise_bar = extra_noise_bar * progress * 0.2
        return healthy * share + (self.fault_rng.gauss(0, noise_bar) if noise_bar else 0.0)

    # --- what the controller reports ---

    def reading(self, ts: datetime) -> Reading:
        # Draw every channel's noise whatever the fault, so that the streams stay aligned.
        noise = self.noise_rng.gauss
        now, error = self.now, self.traits.sensor_error
        oil = self.oil_temp_c + error("oil_temp_c", now) + noise(0, 0.3)
        rpm = self.rpm + noise(0, 15)
        pressure = self._hydraulic_pressure_bar() + error("hydraulic_pressure_bar", now) + noise(0, 4)
        coolant = self.coolant_temp_c + error("coolant_temp_c", now) + noise(0, 0.3)
        ambient = self.ambient_c + error("ambient_temp_c", now) + noise(0, AMBIENT_SENSOR_NOISE_C)
        if self._active("low_coolant"):
            coolant += self.fault_rng.gauss(0, LOW_COOLANT_NOISE_C * self._fault_progress())
        if self._stuck_oil_c is not None:
            oil = self._stuck_oil_c
        codes: list[FaultCode] = []
        if oil > DTC_OIL_TEMP_C:
            codes.append(FaultCode(SPN_ENGINE_OIL_TEMP, FMI_ABOVE_NORMAL_MOST_SEVERE, 1))
        if self._active("dtc_oil_pressure"):
            recurrences = int((self.elapsed_s - (self.fault_after_s or 0.0)) // DTC_OIL_PRESSURE_RECUR_S)
            codes.append(FaultCode(SPN_ENGINE_OIL_PRESSURE, FMI_BELOW_NORMAL_MOST_SEVERE,
                                   min(J1939_MAX_OC, 1 + recurrences)))
        gps = not self._active("gps_loss")
        return Reading(
            ts=ts,
            oil_temp_c=round(oil, 2),
            engine_rpm=0.0 if self.locked else round(max(0.0, rpm), 1),
            hydraulic_pressure_bar=round(max(0.0, pressure), 1),
            coolant_temp_c=round(coolant, 2),
            fuel_level_pct=round(100.0 * self.fuel_litres / TANK_LITRES, 2),
            engine_hours=round(self.engine_hours, 4),
            lat=round(self.lat, 6) if gps else None,
            lon=round(self.lon, 6) if gps else None,
            speed_kmh=round(self.speed_kmh, 1) if gps else None,
            ambient_temp_c=round(ambient, 2),
            fault_codes=tuple(codes),
        )
