"""Learned models: what a healthy machine's oil, coolant and hydraulics read for its recent load.

Temperatures follow engine load with a thermal lag, so the models' inputs are exponentially
weighted averages of load signals (engine speed, hydraulic pressure, operating mode) over several
time constants. One ridge regression per channel, fitted on healthy history, predicts what that
channel reads on a healthy machine; the residual (measured minus expected) reveals a cooling
circuit or a pump that is degrading long before an absolute limit is crossed. Residuals are judged
against the training residuals' robust spread, so the limit adapts to how well the model fits that
machine or model.

- ``oil_temp``: where the machine reports the air temperature (J1939 SPN 171), the oil's rise above
  the air: the load heats the oil, the air sets where it starts from. A model trained in March then
  expects July's oil to run as much hotter as July's air. Without that sensor it explains the
  temperature itself (and then holds only for the season it was trained in).
- ``coolant_temp``: the thermostat holds the coolant in its band, a little higher under load and on
  a hot day, higher still as the radiator loses capacity; the air is one more input.
- ``hydraulic_pressure``: the working pressure (engine at working speed), one profile for that mode
  per machine, judged on its average over ``smooth_s`` of working time because each spell of work
  has its own load; the inputs leave the pressure itself out, or a slowly wearing pump would be
  explained by its own falling pressure.

Models are plain data (coefficients, scaling, metadata) so they persist as JSON in the database.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
from sklearn.linear_model import Ridge

from core.vocabulary import FULL_LOAD_RPM
from diagnostics.evidence import JITTER_STEP_CAP

OIL_MODEL_KIND = "oil_temp"
COOLANT_MODEL_KIND = "coolant_temp"
PRESSURE_MODEL_KIND = "hydraulic_pressure"
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
# A smoothed residual and the noise estimate advance by at most this much time per sample: a gap
# (or a spell outside the model's mode) teaches them nothing.
STEP_MAX_S = 60.0
# The noise of a channel (sample-to-sample jitter) is followed over this long: long enough that a
# rise of a tenth stands out from the estimate's own scatter.
JITTER_TIME_CONSTANT_S = 600.0


def feature_names() -> list[str]:
    """The load averages every model's inputs are drawn from, in the order update_features gives."""
    return [f"{s}.ewma{int(t)}" for s in LOAD_SIGNALS for t in TIME_CONSTANTS_S]


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """What one kind of model explains, from what, and when."""

    kind: str
    target: str  # the channel it predicts
    inputs: tuple[str, ...]  # names from feature_names()
    ambient: str | None  # "offset": explains the rise above the air; "input": the air is an input
    min_rpm: float | None = None  # judged only with the engine above this speed (the working mode)
    smooth_s: float = 0.0  # judged on the residual averaged over this long (0: each sample)
    version: int = 1

    @property
    def input_index(self) -> list[int]:
        names = feature_names()
        return [names.index(name) for name in self.inputs]

    def gate_open(self, rpm: Any) -> Any:
        """Whether samples with this engine speed are the model's to judge (numpy arrays alike)."""
        if self.min_rpm is None:
            return np.ones_like(np.asarray(rpm, dtype=float), dtype=bool) if np.ndim(rpm) else True
        return np.asarray(rpm, dtype=float) > self.min_rpm if np.ndim(rpm) else (
            rpm is not None and rpm > self.min_rpm)


MODEL_SPECS: dict[str, ModelSpec] = {spec.kind: spec for spec in (
    # 2: the rise above the air where ambient is known; 3: the operating mode as input
    ModelSpec(OIL_MODEL_KIND, "oil_temp_c", tuple(feature_names()), "offset", version=3),
    ModelSpec(COOLANT_MODEL_KIND, "coolant_temp_c", tuple(feature_names()), "input", smooth_s=120.0),
    ModelSpec(PRESSURE_MODEL_KIND, "hydraulic_pressure_bar",
              tuple(f"engine_rpm.ewma{int(t)}" for t in TIME_CONSTANTS_S), None, min_rpm=FULL_LOAD_RPM,
              smooth_s=600.0),
)}


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


def smoothed(previous: float | None, dt_s: float, value: float, smooth_s: float) -> float:
    """One step of a residual's average over ``smooth_s`` (the value itself when 0)."""
    if previous is None or smooth_s <= 0:
        return value
    return previous + (1.0 - math.exp(-min(max(dt_s, 0.0), STEP_MAX_S) / smooth_s)) * (value - previous)


@dataclass(frozen=True)
class ResidualModel:
    coef: list[float]
    intercept: float
    mean: list[float]
    scale: list[float]
    residual_median: float
    residual_spread: float  # 1.4826 × MAD of the (smoothed) residuals: the standard deviation for normal ones
    precision: list[list[float]] = field(default_factory=list)  # inverse covariance of the scaled load inputs
    envelope_d2: float = math.inf
    features: list[str] = field(default_factory=feature_names)
    samples: int = 0
    kind: str = OIL_MODEL_KIND
    version: int = MODEL_SPECS[OIL_MODEL_KIND].version
    above_ambient: bool = False  # explains the target minus the air temperature (needs it to judge)
    ambient_input: bool = False  # the air temperature is the last input (needs it to judge)
    jitter: float = 0.0  # the healthy sample-to-sample noise of the target (a standard deviation)

    @property
    def spec(self) -> ModelSpec:
        return MODEL_SPECS[self.kind]

    def inputs(self, features: list[float], ambient_c: float | None = None) -> list[float]:
        """This model's inputs from the load averages (update_features) and the air temperature."""
        picked = [features[i] for i in self.spec.input_index]
        return [*picked, ambient_c] if self.ambient_input else picked  # type: ignore[list-item]

    def expected(self, inputs: list[float], ambient_c: float | None = None) -> float:
        z = (np.asarray(inputs, dtype=float) - self.mean) / self.scale
        level = float(self.intercept + np.dot(self.coef, z))
        if not self.above_ambient:
            return level
        if ambient_c is None:
            raise ValueError("this model needs the air temperature")
        return level + ambient_c

    def judges(self, ambient_c: float | None) -> bool:
        """Whether a sample with (or without) the air temperature can be judged by this model."""
        return ambient_c is not None or not (self.above_ambient or self.ambient_input)

    def knows(self, inputs: list[float]) -> bool:
        """Whether this operating point lies within the training data's envelope (the load inputs:
        a summer's air is no reason to stop judging)."""
        if not self.precision:
            return True
        n = len(self.precision)
        z = (np.asarray(inputs[:n], dtype=float) - self.mean[:n]) / self.scale[:n]
        return float(z @ np.asarray(self.precision) @ z) <= self.envelope_d2

    def residual_sigmas(self, inputs: list[float], value: float,
                        ambient_c: float | None = None) -> tuple[float, float]:
        """(expected, how many spreads the measurement is above it)."""
        expected = self.expected(inputs, ambient_c)
        return expected, (value - expected - self.residual_median) / self.residual_spread

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ResidualModel:
        return cls(**data)  # a version 1 oil model has no above_ambient: False

    def current(self) -> bool:
        """Whether this model was fitted on today's inputs for its kind (else it waits for a refit)."""
        spec = MODEL_SPECS.get(self.kind)
        return spec is not None and self.version == spec.version and self.features == _feature_list(spec)


def _feature_list(spec: ModelSpec) -> list[str]:
    return list(spec.inputs) + ([AMBIENT] if spec.ambient == "input" else [])


def fit_model(series: list[list[tuple[datetime, dict[str, float | None]]]],
              kind: str = OIL_MODEL_KIND) -> ResidualModel:
    """Fit one kind of model on healthy series (one per machine, each in time order)."""
    spec = MODEL_SPECS[kind]
    index = spec.input_index
    rows, targets, airs, times, series_of = [], [], [], [], []
    diffs: list[float] = []
    for number, samples in enumerate(series):
        state: dict[str, Any] = {}
        previous: tuple[float, float] | None = None
        for ts, values in samples:
            features = update_features(state, ts, values)
            value = values.get(spec.target)
            if value is None or not spec.gate_open(values.get("engine_rpm")):
                previous = None
                continue
            t = ts.timestamp()
            if previous is not None and t - previous[0] <= STEP_MAX_S:
                diffs.append((value - previous[1]) ** 2)
            previous = (t, value)
            if features is None:
                continue
            rows.append([features[i] for i in index])
            targets.append(value)
            airs.append(values.get(AMBIENT))
            times.append(t)
            series_of.append(number)
    known = np.array([air is not None for air in airs], dtype=bool)
    above_ambient = spec.ambient == "offset" and bool(rows) and bool(known.sum() >= AMBIENT_SHARE * len(rows))
    ambient_input = spec.ambient == "input"
    if above_ambient or ambient_input:
        keep = np.flatnonzero(known)
        air = np.array([airs[i] for i in keep], dtype=float)
        rows, targets = [rows[i] for i in keep], [targets[i] for i in keep]
        times, series_of = [times[i] for i in keep], [series_of[i] for i in keep]
        if above_ambient:
            targets = list(np.asarray(targets) - air)
        else:
            rows = [[*row, a] for row, a in zip(rows, air, strict=True)]
    if len(rows) < MIN_TRAINING_SAMPLES:
        raise ValueError(f"{len(rows)} usable samples; at least {MIN_TRAINING_SAMPLES} are needed")
    x, y = np.asarray(rows, dtype=float), np.asarray(targets, dtype=float)
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale[scale == 0] = 1.0
    z = (x - mean) / scale
    ridge = Ridge(alpha=RIDGE_ALPHA).fit(z, y)
    residuals = y - ridge.predict(z)
    if spec.smooth_s > 0:  # judged as the rule judges: on the residual's average
        average: float | None = None
        out = np.empty_like(residuals)
        for i, residual in enumerate(residuals):
            restart = i == 0 or series_of[i] != series_of[i - 1] or times[i] - times[i - 1] > MAX_GAP_S
            average = smoothed(None if restart else average, times[i] - times[i - 1] if i else 0.0,
                               float(residual), spec.smooth_s)
            out[i] = average
        residuals = out
    # Regularised: the load averages are strongly correlated with each other.
    loads = z[:, :len(index)]
    precision = np.linalg.inv(np.cov(loads, rowvar=False) + 1e-3 * np.eye(loads.shape[1]))
    d2 = np.einsum("ij,jk,ik->i", loads, precision, loads)
    envelope = float(np.quantile(d2, ENVELOPE_QUANTILE) * ENVELOPE_FACTOR)
    median = float(np.median(residuals))
    spread = float(1.4826 * np.median(np.abs(residuals - median))) or 1e-3
    jitter = _healthy_jitter(np.asarray(diffs))
    return ResidualModel(coef=ridge.coef_.tolist(), intercept=float(ridge.intercept_), mean=mean.tolist(),
                         scale=scale.tolist(), residual_median=median, residual_spread=max(spread, 0.1),
                         precision=precision.tolist(), envelope_d2=envelope, features=_feature_list(spec),
                         samples=len(rows), kind=kind, version=spec.version, above_ambient=above_ambient,
                         ambient_input=ambient_input, jitter=max(jitter, 0.05))


def _healthy_jitter(diffs: np.ndarray) -> float:
    """The noise as the rule follows it: the mean squared sample-to-sample difference over two, each
    capped at ``JITTER_STEP_CAP`` times a robust first guess, because one jump (a new spell of work)
    is not noise. The guess: the median of squared differences of normal noise is 0.455 × their
    variance."""
    if not len(diffs):
        return 0.0
    guess = float(np.median(diffs)) / 0.455
    return math.sqrt(float(np.mean(np.minimum(diffs, JITTER_STEP_CAP * guess))) / 2.0)


def fit_models(series: list[list[tuple[datetime, dict[str, float | None]]]]) -> dict[str, ResidualModel]:
    """Every kind of model the series have enough history for."""
    models = {}
    for kind in MODEL_SPECS:
        try:
            models[kind] = fit_model(series, kind)
        except ValueError:
            continue
    return models
