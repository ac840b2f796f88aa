"""What makes one simulated machine unlike another of its model, and one week unlike the next.

Each is seeded by the equipment id (and the week), never by the run, so that a machine is the same
machine in every simulation and in every process:

- traits built in at the factory: cooling capacity, hydraulic pump efficiency, the offsets of its
  sensors;
- sensor drift: each sensor wanders away from its calibration at a steady rate of a few tenths of a
  unit a month, and is set right again at the machine's yearly inspection (a day of the year of its
  own);
- the week's duty mix: the shares of time spent idling, travelling, digging and lifting change from
  week to week, as the work on a site does.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime

from device_sim.climate import DAYS_PER_YEAR

# Spread of a model's machines around its nominal figures (uniform, ±).
COOLING_CAPACITY_SPREAD = 0.10
PUMP_EFFICIENCY_SPREAD = 0.05
# Per sensor: the largest offset left by the factory calibration, and the range of its drift rate
# (unit per month, either direction).
SENSOR_OFFSET = {"oil_temp_c": 1.5, "coolant_temp_c": 1.0, "hydraulic_pressure_bar": 3.0, "ambient_temp_c": 0.5}
SENSOR_DRIFT_PER_MONTH = {"oil_temp_c": (0.1, 0.4), "coolant_temp_c": (0.02, 0.08),
                          "hydraulic_pressure_bar": (0.2, 0.6), "ambient_temp_c": (0.02, 0.1)}
DAYS_PER_MONTH = DAYS_PER_YEAR / 12.0
# Where the yearly inspection cycle is counted from (any fixed instant would do).
_CALIBRATION_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)

ACTIVITIES = ("idle", "travel", "digging", "lifting")
# Ranges of a week's time shares: idle and travel drawn from these, the rest is work, split between
# digging and lifting by a share drawn from the last range.
IDLE_SHARE = (0.15, 0.45)
TRAVEL_SHARE = (0.03, 0.15)
DIGGING_SHARE_OF_WORK = (0.2, 0.8)


@dataclass(frozen=True, slots=True)
class SensorError:
    offset: float
    drift_per_month: float


@dataclass(frozen=True, slots=True)
class MachineTraits:
    """How a machine differs from its model's nominal one."""

    # Multiplies the heat its radiator and oil cooler reject (1.0 nominal).
    cooling_capacity: float
    # Multiplies the pressure its hydraulic pump builds (1.0 nominal).
    pump_efficiency: float
    sensors: dict[str, SensorError]
    # Day of the year of its inspection, when its sensors are calibrated again.
    calibration_day: float

    @classmethod
    def of(cls, equipment_id: str) -> MachineTraits:
        rng = random.Random(f"traits:{equipment_id}")
        cooling = 1.0 + rng.uniform(-COOLING_CAPACITY_SPREAD, COOLING_CAPACITY_SPREAD)
        pump = 1.0 + rng.uniform(-PUMP_EFFICIENCY_SPREAD, PUMP_EFFICIENCY_SPREAD)
        sensors = {}
        for name, largest in SENSOR_OFFSET.items():
            low, high = SENSOR_DRIFT_PER_MONTH[name]
            drift = rng.choice((-1.0, 1.0)) * rng.uniform(low, high)
            sensors[name] = SensorError(rng.uniform(-largest, largest), drift)
        return cls(cooling, pump, sensors, rng.uniform(0.0, DAYS_PER_YEAR))

    def months_since_calibration(self, at: datetime) -> float:
        days = (at - _CALIBRATION_EPOCH).total_seconds() / 86400.0
        return ((days - self.calibration_day) % DAYS_PER_YEAR) / DAYS_PER_MONTH

    def sensor_error(self, sensor: str, at: datetime) -> float:
        """What the sensor adds to the true value at ``at``: its offset plus the drift since calibration."""
        error = self.sensors[sensor]
        return error.offset + error.drift_per_month * self.months_since_calibration(at)


@dataclass(frozen=True, slots=True)
class DutyMix:
    """The share of a week's running time in each activity (summing to 1)."""

    idle: float
    travel: float
    digging: float
    lifting: float

    @classmethod
    def of_week(cls, equipment_id: str, at: datetime) -> DutyMix:
        """The mix of the ISO week holding ``at`` (in UTC, so every process agrees)."""
        year, week, _ = at.astimezone(UTC).isocalendar()
        rng = random.Random(f"duty:{equipment_id}:{year}-W{week:02d}")
        idle = rng.uniform(*IDLE_SHARE)
        travel = rng.uniform(*TRAVEL_SHARE)
        digging = (1.0 - idle - travel) * rng.uniform(*DIGGING_SHARE_OF_WORK)
        return cls(idle, travel, digging, 1.0 - idle - travel - digging)

    def share(self, activity: str) -> float:
        return float(getattr(self, activity))
