"""Learned models: oil temperature explained by the machine's recent load.

Oil temperature follows engine load with a thermal lag, so the model's inputs are exponentially
weighted averages of load signals (engine speed, hydraulic pressure) over several time constants.
A ridge regression fitted on healthy history predicts the oil temperature a healthy cooling
circuit would give; the residual (measured minus expected) reveals cooling that is degrading
long before the absolute limit is reached. Residuals are judged against the training residuals'
robust spread, so the limit adapts to how well the model fits that machine or model.

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
OIL_MODEL_VERSION = 1
LOAD_SIGNALS = ("engine_rpm", "hydraulic_pressure_bar")
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
    for signal in LOAD_SIGNALS:
        value = values.get(signal)
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

    def expected(self, features: list[float]) -> float:
        z = (np.asarray(features) - self.mean) / self.scale
        return float(self.intercept + np.dot(self.coef, z))

    def knows(self, features: list[float]) -> bool:
        """Whether this operating point lies within the training data's envelope."""
        if not self.precision:
            return True
        z = (np.asarray(features) - self.mean) / self.scale
        return float(z @ np.asarray(self.precision) @ z) <= self.envelope_d2

    def residual_sigmas(self, features: list[float], oil_temp_c: float) -> tuple[float, float]:
        """(expected °C, how many spreads the measurement is above it)."""
        expected = self.expected(features)
        return expected, (oil_temp_c - expected - self.residual_median) / self.residual_spread

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> OilTemperatureModel:
        return cls(**data)


def fit_oil_model(series: list[list[tuple[datetime, dict[str, float | None]]]]) -> OilTemperatureModel:
    """Fit on healthy series (one per machine, each in time order)."""
    rows, targets = [], []
    for samples in series:
        state: dict[str, Any] = {}
        for ts, values in samples:
            features = update_features(state, ts, values)
            oil = values.get("oil_temp_c")
            if features is not None and oil is not None:
                rows.append(features)
                targets.append(oil)
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
                               precision=precision.tolist(), envelope_d2=envelope, samples=len(rows))
