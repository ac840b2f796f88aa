"""Learned models: oil temperature explained by the machine's recent load.

Oil temperature follows engine load with a thermal lag, so the model's inputs are exponentially
weighted averages of load signals (engine speed, hydraulic pressure) over several time constants.
A ridge regression fitted on healthy history predicts the oil temperature a healthy cooling
circuit would give; the residual (measured minus expected) reveals cooling that is degrading
long before the absolute limit is reached. Residuals are judged against the training residuals'
robust spread, so the limit adapts to how well the model fits that machine or model.

Where the machine reports the air temperature (J1939 SPN 171), the model explains the oil's rise
above the air rather than the oil temperature itself: the load heats the oil, the air sets where it
starts from. A model trained in March then expects July's oil to run as much hotter as July's air,
and a hot afternoon is not a failing cooler. Models of machines without that sensor keep explaining
the temperature itself (and then hold only for the season they were trained in).

Models are plain data (coefficients, scaling, metadata) so they persist as JSON in the database.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
from sklearn.linear_model import Ridge

OIL_MODEL_KIND = "oil_temp"
OIL_MODEL_VERSION = 3  # 2: the rise above the air where ambient is known; 3: the operating mode as input
AMBIENT = "ambient_temp_c"
# Trained on the rise above the air when at least this share of the usable samples report it.
AMBIENT_SHARE = 0.9
# What heats the oil: the engine speed, the hydraulic pressure, and the operating mode (working or
# travelling; idle otherwise), because the heat a mode makes is not a straight line in rpm and
# pressure (a travelling machine runs at 1,500 rpm on little pressure and still works its engine).
MODE_SIGNALS = ("working", "travelling")
LOAD_SIGNALS = ("engine_rpm", "hydraulic_pressure_bar", *MODE_SIGNALS)
# A machine works its hydraulics above this pressure, and travels above this speed.
WORKING_PRESSURE_BAR = 150.0
TRAVELLING_KMH = 1.0
# Thermal time constants (s) the averages cover: from a warm-up to a long working spell.
TIME_CONSTANTS_S = (60.0, 180.0, 600.0)
RIDGE_ALPHA = 1.0
# Operating points further from the training data than this (squared Mahalanobis distance, as a
# multiple of the training's 99.9th percentile) are outside what the model knows: no judgement.
ENVELOPE_QUANTILE = 0.999
ENVELOPE_FACTOR = 1.5
# A gap longer than this restarts the averages: the machine stood and cooled meanwhile.
MAX_GAP_S = 900.0
# Samples before the averages have seen this long of history are not used for training.
WARM_UP_S = 900.0
MIN_TRAINING_SAMPLES = 1000


def feature_names() -> list[str]:
    return [f"{s}.ewma{int(t)}" for s in LOAD_SIGNALS for t in TIME_CONSTANTS_S]


def operating_mode(pressure_bar: Any, speed_kmh: Any) -> tuple[Any, Any]:
    """(working, travelling) as 1.0 / 0.0 (working NaN without a pressure), for one sample or arrays
    of them: the shard engine and the single engine derive the modes by this one rule."""
    pressure, speed = np.asarray(pressure_bar, dtype=float), np.asarray(speed_kmh, dtype=float)
    working = np.where(np.isnan(pressure), np.nan, (pressure >= WORKING_PRESSURE_BAR).astype(float))
    # A controller without a speed signal (no GNSS) is taken as never travelling: its model then
    # learns from rpm and pressure alone.
    travelling = np.where(np.isnan(speed), 0.0, (speed >= TRAVELLING_KMH).astype(float))
    return working, travelling


def load_signals(values: dict[str, float | None]) -> dict[str, float | None]:
    """The model's input signals of one sample: the measured ones and the operating mode."""
    working, travelling = operating_mode(_nan(values.get("hydraulic_pressure_bar")), _nan(values.get("speed_kmh")))
    return {"engine_rpm": values.get("engine_rpm"), "hydraulic_pressure_bar": values.get("hydraulic_pressure_bar"),
            "working": None if np.isnan(working) else float(working),
            "travelling": None if np.isnan(travelling) else float(travelling)}


def _nan(value: float | None) -> float:
    return math.nan if value is None else value


def update_features(state: dict[str, Any], ts: datetime, values: dict[str, float | None]) -> list[float] | None:
    """Advance the load averages kept in ``state`` by one sample; return the feature vector once
    warmed up (None before, or when a load signal is missing)."""
    now = ts.timestamp()
    last = state.get("t")
    if last is None or now - last > MAX_GAP_S:
        state.clear()
        state["t"], state["since"] = now, now
    dt = max(0.0, now - state["t"])
    state["t"] = now
    averages = state.setdefault("ewma", {})
    signals = load_signals(values)
    for signal in LOAD_SIGNALS:
        value = signals[signal]
        if value is None:
            continue
        for tau in TIME_CONSTANTS_S:
            key = f"{signal}.ewma{int(tau)}"
            previous = averages.get(key)
            averages[key] = value if previous is None else previous + (1 - math.exp(-dt / tau)) * (value - previous)
    if now - state["since"] < WARM_UP_S:
        return None
    names = feature_names()
    if any(name not in averages for name in names):
        return None
    return [averages[name] for name in names]


@dataclass(frozen=True)
class OilTemperatureModel:
    coef: list[float]
    intercept: float
    mean: list[float]
    scale: list[float]
    residual_median: float
    residual_spread: float  # 1.4826 × MAD: the standard deviation for normal residuals
    precision: list[list[float]] = field(default_factory=list)  # inverse covariance of scaled features
    envelope_d2: float = math.inf
    features: list[str] = field(default_factory=feature_names)
    samples: int = 0
    kind: str = OIL_MODEL_KIND
    version: int = OIL_MODEL_VERSION
    above_ambient: bool = False  # explains oil minus air temperature (needs the air temperature to judge)

    def expected(self, features: list[float], ambient_c: float | None = None) -> float:
        z = (np.asarray(features) - self.mean) / self.scale
        rise = float(self.intercept + np.dot(self.coef, z))
        if not self.above_ambient:
            return rise
        if ambient_c is None:
            raise ValueError("this model needs the air temperature")
        return rise + ambient_c

    def judges(self, ambient_c: float | None) -> bool:
        """Whether a sample with (or without) the air temperature can be judged by this model."""
        return ambient_c is not None or not self.above_ambient

    def knows(self, features: list[float]) -> bool:
        """Whether this operating point lies within the training data's envelope."""
        if not self.precision:
            return True
        z = (np.asarray(features) - self.mean) / self.scale
        return float(z @ np.asarray(self.precision) @ z) <= self.envelope_d2

    def residual_sigmas(self, features: list[float], oil_temp_c: float,
                        ambient_c: float | None = None) -> tuple[float, float]:
        """(expected °C, how many spreads the measurement is above it)."""
        expected = self.expected(features, ambient_c)
        return expected, (oil_temp_c - expected - self.residual_median) / self.residual_spread

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> OilTemperatureModel:
        return cls(**data)  # a version 1 model has no above_ambient: False


def fit_oil_model(series: list[list[tuple[datetime, dict[str, float | None]]]]) -> OilTemperatureModel:
    """Fit on healthy series (one per machine, each in time order): on the oil's rise above the air
    where the series report the air temperature (``AMBIENT_SHARE``), else on the oil temperature."""
    rows, targets, airs = [], [], []
    for samples in series:
        state: dict[str, Any] = {}
        for ts, values in samples:
            features = update_features(state, ts, values)
            oil = values.get("oil_temp_c")
            if features is not None and oil is not None:
                rows.append(features)
                targets.append(oil)
                airs.append(values.get(AMBIENT))
    known = [air is not None for air in airs]
    above_ambient = bool(rows) and sum(known) >= AMBIENT_SHARE * len(rows)
    if above_ambient:
        rows = [row for row, k in zip(rows, known, strict=True) if k]
        targets = [oil - air for oil, air in zip(targets, airs, strict=True) if air is not None]
    if len(rows) < MIN_TRAINING_SAMPLES:
        raise ValueError(f"{len(rows)} usable samples; at least {MIN_TRAINING_SAMPLES} are needed")
    x, y = np.asarray(rows), np.asarray(targets)
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale[scale == 0] = 1.0
    z = (x - mean) / scale
    ridge = Ridge(alpha=RIDGE_ALPHA).fit(z, y)
    residuals = y - ridge.predict(z)
    # Regularised: the load averages are strongly correlated with each other.
    precision = np.linalg.inv(np.cov(z, rowvar=False) + 1e-3 * np.eye(z.shape[1]))
    d2 = np.einsum("ij,jk,ik->i", z, precision, z)
    envelope = float(np.quantile(d2, ENVELOPE_QUANTILE) * ENVELOPE_FACTOR)
    median = float(np.median(residuals))
    spread = float(1.4826 * np.median(np.abs(residuals - median))) or 1e-3
    return OilTemperatureModel(coef=ridge.coef_.tolist(), intercept=float(ridge.intercept_), mean=mean.tolist(),
                               scale=scale.tolist(), residual_median=median, residual_spread=max(spread, 0.1),
                               precision=precision.tolist(), envelope_d2=envelope, samples=len(rows),
                               above_ambient=above_ambient)
