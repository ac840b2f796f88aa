"""Rule kinds. A rule is a frozen definition (data, see diagnostics.rulebook) plus ``evaluate``,
which reads one sample of one machine and that machine's state for the rule, and returns the
faults that start or end. Samples arrive in time order per machine. State is a plain JSON-able
dict so that it persists across restarts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar
from zoneinfo import ZoneInfo

import numpy as np

from diagnostics.catalogue import DTC_TABLE


@dataclass(frozen=True, slots=True)
class Sample:
    ts: datetime
    values: dict[str, float | None]
    fault_codes: tuple[tuple[int, int, int], ...] = ()  # (spn, fmi, occurrence count)


@dataclass(frozen=True, slots=True)
class Site:
    lat: float
    lon: float
    radius_m: float
    timezone: str = "UTC"
    # Permitted operating hours, local time [start, end); None means any time.
    permitted_hours: tuple[int, int] | None = None


@dataclass(frozen=True, slots=True)
class EquipmentContext:
    equipment_id: str
    model: str
    site: Site | None = None
    last_service_hours: float | None = None
    # Trained models by kind (see diagnostics.models), for the rules that use one.
    models: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class FaultChange:
    """A fault starting (``raised``) or ending (``cleared``) at ``at``, or its diagnosis revised
    (``updated``: the most probable cause changed as evidence accumulated)."""

    kind: str  # "raised" | "cleared" | "updated"
    fault_code: str
    severity: str
    at: datetime
    evidence: dict[str, Any]
    rule: str = ""
    rule_version: int = 0
    # Ranked probable causes and remedy (diagnostics.causes), attached to raised faults.
    diagnosis: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class When:
    """A condition on one channel, e.g. ``When("engine_rpm", ">", 1600)`` for "while working"."""

    signal: str
    op: str
    value: float

    def holds(self, sample: Sample) -> bool:
        value = sample.values.get(self.signal)
        if value is None:
            return False
        return value > self.value if self.op == ">" else value < self.value


def _seconds(later: datetime, earlier_iso: str) -> float:
    return (later - datetime.fromisoformat(earlier_iso)).total_seconds()


def _raise(rule: Rule, severity: str, at: datetime, evidence: dict[str, Any], code: str | None = None) -> FaultChange:
    return FaultChange("raised", code or rule.fault_code, severity, at, evidence, rule.key, rule.version)


def _clear(rule: Rule, at: datetime, evidence: dict[str, Any], code: str | None = None) -> FaultChange:
    return FaultChange("cleared", code or rule.fault_code, "", at, evidence, rule.key, rule.version)


def _episode(state: dict[str, Any], ts: datetime, condition: bool, sustain_s: float) -> tuple[str | None, datetime]:
    """The common life of a fault: ``condition`` holding for ``sustain_s`` raises it (returned with
    the time it began), the condition ending clears it. Returns (None | "raised" | "cleared", since)."""
    if condition:
        since = state.setdefault("since", ts.isoformat())
        if not state.get("active") and _seconds(ts, since) >= sustain_s:
            state["active"] = True
            return "raised", datetime.fromisoformat(since)
        return None, ts
    state.pop("since", None)
    return ("cleared" if state.pop("active", False) else None), ts


@dataclass(frozen=True)
class Rule:
    key: str
    fault_code: str
    version: int = 1
    per_sample: ClassVar[bool] = True

    def evaluate(self, state: dict[str, Any], sample: Sample, ctx: EquipmentContext) -> list[FaultChange]:
        raise NotImplementedError


@dataclass(frozen=True)
class Threshold(Rule):
    """Above ``raise_at`` (or below, with ``direction="below"``) for ``sustain_s`` raises; back past
    ``clear_at`` for ``clear_sustain_s`` clears (hysteresis). ``severity_levels`` escalate the
    severity by how far the value went: ((level, severity), …) checked in order."""

    signal: str = ""
    raise_at: float = 0.0
    clear_at: float = 0.0
    direction: str = "above"
    sustain_s: float = 60.0
    clear_sustain_s: float = 60.0
    severity: str = "major"
    severity_levels: tuple[tuple[float, str], ...] = ()
    when: When | None = None
    # Judge an exponentially weighted average over this time instead of single samples, for
    # signals whose noise would otherwise keep restarting the sustain time.
    smooth_s: float = 0.0

    def _beyond(self, value: float, level: float) -> bool:
        return value > level if self.direction == "above" else value < level

    def evaluate(self, state, sample, ctx):
        value = sample.values.get(self.signal)
        if value is None:
            return []
        if self.smooth_s:
            value = _smoothed(state, sample.ts, value, self.smooth_s)
        if self.when is not None and not self.when.holds(sample):
            state.pop("since", None)  # the sustain time counts only while the condition holds
            state.pop("back_since", None)
            state.pop("smooth", None)
            return []
        ts = sample.ts
        if not state.get("active"):
            if not self._beyond(value, self.raise_at):
                state.pop("since", None)
                state.pop("worst", None)
                return []
            since = state.setdefault("since", ts.isoformat())
            previous_worst = state.get("worst", value)
            worst = max(previous_worst, value) if self.direction == "above" else min(previous_worst, value)
            state["worst"] = worst
            if _seconds(ts, since) < self.sustain_s:
                return []
            severity = self.severity
            for level, level_severity in self.severity_levels:
                if self._beyond(worst, level):
                    severity = level_severity
            del state["since"], state["worst"]
            state["active"] = True
            return [_raise(self, severity, datetime.fromisoformat(since), {
                "signal": self.signal, "value": round(value, 3), "worst": round(worst, 3),
                "limit": self.raise_at, "direction": self.direction, "sustain_s": self.sustain_s,
            })]
        if self._beyond(value, self.clear_at) or value == self.clear_at:
            state.pop("back_since", None)
            return []
        back_since = state.setdefault("back_since", ts.isoformat())
        if _seconds(ts, back_since) < self.clear_sustain_s:
            return []
        state.pop("active")
        state.pop("back_since")
        return [_clear(self, datetime.fromisoformat(back_since), {"signal": self.signal, "value": round(value, 3),
                                                                  "clear_at": self.clear_at})]


def _smoothed(state: dict[str, Any], ts: datetime, value: float, time_constant_s: float) -> float:
    now = ts.timestamp()
    smooth = state.get("smooth")
    if smooth is None:
        state["smooth"] = [now, value]
        return value
    alpha = 1.0 - math.exp(-max(0.0, now - smooth[0]) / time_constant_s)
    smooth[0], smooth[1] = now, smooth[1] + alpha * (value - smooth[1])
    return smooth[1]


@dataclass(frozen=True)
class Repeated(Rule):
    """The signal crosses ``raise_at`` ``count`` times within ``window_s`` (each crossing a new
    excursion); clears after ``window_s`` without a crossing."""

    signal: str = ""
    raise_at: float = 0.0
    count: int = 3
    window_s: float = 600.0
    severity: str = "minor"

    def evaluate(self, state, sample, ctx):
        value = sample.values.get(self.signal)
        if value is None:
            return []
        now = sample.ts.timestamp()
        crossings = [t for t in state.get("crossings", []) if now - t <= self.window_s]
        above = value > self.raise_at
        if above and not state.get("above"):
            crossings.append(now)
        state["above"] = above
        state["crossings"] = crossings
        if not state.get("active") and len(crossings) >= self.count:
            state["active"] = True
            first = datetime.fromtimestamp(crossings[0], UTC)
            return [_raise(self, self.severity, first, {
                "signal": self.signal, "limit": self.raise_at, "crossings": len(crossings), "window_s": self.window_s,
            })]
        if state.get("active") and not crossings:
            state["active"] = False
            return [_clear(self, sample.ts, {"signal": self.signal, "quiet_for_s": self.window_s})]
        return []


@dataclass(frozen=True)
class RateOfChange(Rule):
    """The signal rises faster than ``max_per_min`` while ``steady_signal`` has stayed within
    ``steady_band`` for at least ``steady_s``.

    The rate comes from two exponentially weighted averages of the signal over a quarter and three
    quarters of ``window_s``: on a steady ramp each lags the signal by its time constant, so their
    difference over the difference of the time constants is the slope. That keeps the state at a
    few numbers per machine (it is saved every round) and smooths sensor noise."""

    signal: str = ""
    max_per_min: float = 3.0
    window_s: float = 120.0
    steady_signal: str = "engine_rpm"
    steady_band: float = 150.0
    steady_s: float = 300.0
    severity: str = "major"

    def evaluate(self, state, sample, ctx):
        value = sample.values.get(self.signal)
        steady_value = sample.values.get(self.steady_signal)
        if value is None or steady_value is None:
            return []
        now = sample.ts.timestamp()
        anchor = state.get("steady_ref")
        if anchor is None or abs(steady_value - anchor) > self.steady_band:
            state["steady_ref"], state["steady_since"] = steady_value, now
        fast_s, slow_s = self.window_s / 4, self.window_s * 3 / 4
        state.pop("points", None)  # the window of samples version 1 kept
        if "fast" not in state:
            state.update(t=now, fast=value, slow=value)
        dt = max(0.0, now - state["t"])
        state["t"] = now
        state["fast"] += (1 - math.exp(-dt / fast_s)) * (value - state["fast"])
        state["slow"] += (1 - math.exp(-dt / slow_s)) * (value - state["slow"])
        steady = now - state["steady_since"] >= self.steady_s
        slope = (state["fast"] - state["slow"]) / (slow_s - fast_s) * 60.0 if steady else None
        rising = slope is not None and slope > self.max_per_min
        if rising and not state.get("active"):
            state["active"] = True
            return [_raise(self, self.severity, sample.ts, {
                "signal": self.signal, "rate_per_min": round(slope, 2), "limit_per_min": self.max_per_min,
                "window_s": self.window_s, "steady": self.steady_signal,
            })]
        if state.get("active") and slope is not None and slope < self.max_per_min / 2:
            state["active"] = False
            return [_clear(self, sample.ts, {"signal": self.signal, "rate_per_min": round(slope, 2)})]
        return []


@dataclass(frozen=True)
class Stuck(Rule):
    """The signal has not moved by more than ``tolerance`` for ``window_s`` while ``when`` holds
    (a live sensor always shows some noise): a frozen sensor, not a machine fault."""

    signal: str = ""
    tolerance: float = 0.001
    window_s: float = 60.0
    severity: str = "minor"
    when: When | None = None

    def evaluate(self, state, sample, ctx):
        value = sample.values.get(self.signal)
        if value is None:
            return []
        ts = sample.ts
        ref = state.get("ref")
        if ref is None or abs(value - ref) > self.tolerance:
            changes = []
            if state.get("active"):
                changes.append(_clear(self, ts, {"signal": self.signal, "value": value, "was": ref}))
            state.clear()
            state.update(ref=value, since=ts.isoformat())
            return changes
        if self.when is not None and not self.when.holds(sample):
            return []
        if not state.get("active") and _seconds(ts, state["since"]) >= self.window_s:
            state["active"] = True
            return [_raise(self, self.severity, datetime.fromisoformat(state["since"]), {
                "signal": self.signal, "value": value, "unchanged_for_s": _seconds(ts, state["since"]),
                "tolerance": self.tolerance,
            }, code=self.fault_code)]
        return []


@dataclass(frozen=True)
class Plausible(Rule):
    """A value outside what the sensor can read on this model (``low``..``high``): the sensor or its
    wiring is broken (open circuit reads cold, short circuit hot)."""

    signal: str = ""
    low: float = 0.0
    high: float = 0.0
    sustain_s: float = 10.0
    severity: str = "minor"

    def evaluate(self, state, sample, ctx):
        value = sample.values.get(self.signal)
        if value is None:
            return []
        event, since = _episode(state, sample.ts, not self.low <= value <= self.high, self.sustain_s)
        if event == "raised":
            return [_raise(self, self.severity, since, {
                "signal": self.signal, "value": value, "plausible": [self.low, self.high]})]
        if event == "cleared":
            return [_clear(self, sample.ts, {"signal": self.signal, "value": value})]
        return []


@dataclass(frozen=True)
class Missing(Rule):
    """Readings keep arriving without ``signals`` for ``sustain_s`` (e.g. no GPS fix)."""

    signals: tuple[str, ...] = ()
    sustain_s: float = 30.0
    severity: str = "minor"

    def evaluate(self, state, sample, ctx):
        missing = all(sample.values.get(s) is None for s in self.signals)
        event, since = _episode(state, sample.ts, missing, self.sustain_s)
        if event == "raised":
            return [_raise(self, self.severity, since, {
                "signals": list(self.signals), "missing_for_s": _seconds(sample.ts, since.isoformat())})]
        if event == "cleared":
            return [_clear(self, sample.ts, {"signals": list(self.signals)})]
        return []


def distance_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance (haversine), metres."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * 6_371_000.0 * math.asin(math.sqrt(a))


@dataclass(frozen=True)
class Geofence(Rule):
    """Position outside the site's radius for ``sustain_s`` (one GPS outlier is not an exit);
    clears back inside ``radius - margin_m``."""

    sustain_s: float = 10.0
    margin_m: float = 50.0
    severity: str = "critical"

    def evaluate(self, state, sample, ctx):
        site = ctx.site
        lat, lon = sample.values.get("lat"), sample.values.get("lon")
        if site is None or lat is None or lon is None:
            return []
        away = distance_m(site.lat, site.lon, lat, lon)
        if not state.get("active"):
            if away <= site.radius_m:
                state.pop("since", None)
                return []
            since = state.setdefault("since", sample.ts.isoformat())
            if _seconds(sample.ts, since) < self.sustain_s:
                return []
            state.clear()
            state["active"] = True
            return [_raise(self, self.severity, datetime.fromisoformat(since), {
                "distance_m": round(away), "radius_m": site.radius_m, "lat": lat, "lon": lon})]
        if away < site.radius_m - self.margin_m:
            state.clear()
            return [_clear(self, sample.ts, {"distance_m": round(away)})]
        return []


@dataclass(frozen=True)
class Curfew(Rule):
    """Engine running (above ``running_rpm``) outside the site's permitted local hours."""

    running_rpm: float = 300.0
    sustain_s: float = 60.0
    severity: str = "major"

    def evaluate(self, state, sample, ctx):
        site = ctx.site
        rpm = sample.values.get("engine_rpm")
        if site is None or site.permitted_hours is None or rpm is None:
            return []
        start, end = site.permitted_hours
        hour = sample.ts.astimezone(ZoneInfo(site.timezone)).hour
        permitted = start <= hour < end if start <= end else (hour >= start or hour < end)
        event, since = _episode(state, sample.ts, rpm > self.running_rpm and not permitted, self.sustain_s)
        if event == "raised":
            return [_raise(self, self.severity, since, {
                "local_hour": hour, "permitted_hours": [start, end], "engine_rpm": rpm})]
        if event == "cleared":
            return [_clear(self, sample.ts, {"local_hour": hour, "engine_rpm": rpm})]
        return []


@dataclass(frozen=True)
class Dtc(Rule):
    """J1939 DM1 codes: each active (SPN, FMI) is a fault, mapped through ``DTC_TABLE`` or, when
    unknown, reported as ``J1939_<spn>_<fmi>``. A code absent for ``clear_after_s`` has cleared."""

    clear_after_s: float = 30.0

    def evaluate(self, state: dict[str, Any], sample: Sample, ctx: EquipmentContext) -> list[FaultChange]:
        changes = []
        active: dict[str, dict[str, Any]] = state.setdefault("active", {})
        now = sample.ts
        present = set()
        for spn, fmi, oc in sample.fault_codes:
            key = f"{spn}:{fmi}"
            present.add(key)
            if key in active:
                active[key]["last_seen"] = now.isoformat()
                continue
            mapping = DTC_TABLE.get((spn, fmi))
            code = mapping.fault_code if mapping else f"J1939_{spn}_{fmi}"
            active[key] = {"code": code, "last_seen": now.isoformat()}
            changes.append(_raise(self, mapping.severity if mapping else "major", now, {
                "spn": spn, "fmi": fmi, "occurrences": oc,
                "description": mapping.description if mapping else "unmapped J1939 code",
            }, code=code))
        for key in [k for k in active if k not in present]:
            if _seconds(now, active[key]["last_seen"]) >= self.clear_after_s:
                entry = active.pop(key)
                changes.append(_clear(self, now, {"code": key}, code=entry["code"]))
        return changes


@dataclass(frozen=True)
class ServiceDue(Rule):
    """Engine hours within ``warn_before_h`` of the next service (every ``interval_h``; every
    ``major_every_h`` it is a major service). Without a recorded service, the last one is taken
    to be the last interval boundary below the first hours seen. Clears when a service is recorded."""

    interval_h: float = 250.0
    major_every_h: tuple[float, ...] = (500.0, 1000.0)
    warn_before_h: float = 10.0
    severity: str = "warning"

    # The arithmetic of the schedule, for one machine (floats) or many (numpy arrays) alike: the
    # engine, the columnar engine and the portal's "next service due" all count this way.
    def last_boundary(self, hours: Any) -> Any:
        """The service taken as the last one when none is recorded: the boundary at or below ``hours``."""
        return np.floor(hours / self.interval_h) * self.interval_h

    def due_at(self, serviced_at: Any) -> Any:
        """The engine hours of the next service after one at ``serviced_at``; a service done shortly
        before a boundary (within the warning) counts for that boundary."""
        return (np.floor((serviced_at + self.warn_before_h) / self.interval_h) + 1) * self.interval_h

    def evaluate(self, state, sample, ctx):
        hours = sample.values.get("engine_hours")
        if hours is None:
            return []
        recorded = ctx.last_service_hours
        if recorded is not None and recorded > state.get("serviced_at", -1.0):
            state["serviced_at"] = recorded
        if "serviced_at" not in state:
            state["serviced_at"] = float(self.last_boundary(hours))
        # A service done shortly before a boundary (within the warning) counts for that boundary.
        due_at = float(self.due_at(state["serviced_at"]))
        if hours >= due_at - self.warn_before_h and not state.get("active"):
            state["active"] = due_at
            kind = max([h for h in self.major_every_h if due_at % h == 0], default=self.interval_h)
            return [_raise(self, self.severity, sample.ts, {
                "engine_hours": round(hours, 2), "due_at_hours": due_at, "service": f"{int(kind)} h service"})]
        if state.get("active") and hours < due_at - self.warn_before_h:
            state.pop("active")
            return [_clear(self, sample.ts, {"serviced_at_hours": state["serviced_at"]})]
        return []


@dataclass(frozen=True)
class Offline(Rule):
    """No telemetry for ``after_s``: raised by the engine's clock (``tick``), cleared by the next
    sample to arrive."""

    after_s: float = 120.0
    severity: str = "minor"

    def evaluate(self, state, sample, ctx):
        if state.pop("active", False):
            return [_clear(self, sample.ts, {"back_at": sample.ts.isoformat()})]
        return []

    def tick(self, state: dict[str, Any], last_arrival: datetime, now: datetime) -> list[FaultChange]:
        if state.get("active") or (now - last_arrival).total_seconds() < self.after_s:
            return []
        state["active"] = True
        return [_raise(self, self.severity, last_arrival + timedelta(seconds=self.after_s), {
            "last_arrival": last_arrival.isoformat(), "silent_for_s": round((now - last_arrival).total_seconds())})]


def saved_load(saved_rules: dict[str, Any]) -> dict[str, Any] | None:
    """The load averages in a machine's saved rule states. Every model rule advances the same ones
    on the same samples, so they belong to the machine: a model rule new to its rulebook starts
    from them rather than warming up again."""
    return next((state["load"] for state in saved_rules.values() if isinstance(state, dict) and "load" in state),
                None)


@dataclass(frozen=True)
class ModelResidual(Rule):
    """A channel further from what the trained model of ``model_kind`` expects for the recent load
    than ``raise_sigmas`` robust spreads and ``min_excess`` (``direction`` "above" or "below") for
    ``sustain_s``: the oil or coolant hotter than the load explains (cooling degrading), the working
    pressure lower than the machine's own (a pump wearing, a leak). Clears back within
    ``clear_sigmas``. Without a trained model for the machine the rule only keeps its load averages
    warm. Models that judge an average (``ModelSpec.smooth_s``) are judged on it.

    Sensors drift and machines age between trainings: the rule follows the machine's own offset
    from its model while nothing is wrong, as an average of its healthy residuals over
    ``bias_time_constant_s`` of judged operation, at most ``bias_max`` either way, so a drifted
    sensor is not a failing cooler and a fault (hours, not months) is never averaged away. After a
    stop of ``restart_after_s`` or more (a night, a weekend, an inspection that set the sensors
    right) the offset is learned afresh over the first ``relearn_s`` of operation, within the same
    cap and without raising meanwhile: a recalibrated sensor steps by as much as it had drifted. It
    also follows the channel's noise against the healthy noise the model was trained on: the
    evidence a leak or air in the coolant leaves before the level moves (``statistics``)."""

    model_kind: str = "oil_temp"
    direction: str = "above"
    raise_sigmas: float = 5.0
    clear_sigmas: float = 2.0
    min_excess: float = 5.0
    sustain_s: float = 20.0
    clear_sustain_s: float = 60.0
    severity: str = "minor"
    bias_time_constant_s: float = 4 * 3600.0
    bias_max: float = 3.0
    # The offset moves by at most this much judged time per sample: a gap teaches it nothing.
    bias_step_max_s: float = 60.0
    restart_after_s: float = 6 * 3600.0
    relearn_s: float = 1200.0
    relearn_time_constant_s: float = 300.0

    @property
    def sign(self) -> float:
        return 1.0 if self.direction == "above" else -1.0

    def learn_bias(self, bias: float, last_t: float | None, t: float, residual: float,
                   relearning: bool = False) -> float:
        """The offset after one healthy sample ``residual`` from the model's median."""
        dt = min(max(0.0, t - (t if last_t is None else last_t)), self.bias_step_max_s)
        target = min(self.bias_max, max(-self.bias_max, residual))
        tau = self.relearn_time_constant_s if relearning else self.bias_time_constant_s
        return bias + (1.0 - math.exp(-dt / tau)) * (target - bias)

    def evaluate(self, state, sample, ctx):
        from diagnostics.evidence import JITTER_STEP_CAP
        from diagnostics.models import (
            AMBIENT,
            JITTER_TIME_CONSTANT_S,
            MAX_GAP_S,
            MODEL_SPECS,
            STEP_MAX_S,
            smoothed,
            update_features,
        )

        features = update_features(state.setdefault("load", {}), sample.ts, sample.values)
        spec = MODEL_SPECS[self.model_kind]
        model = ctx.models.get(self.model_kind)
        value = sample.values.get(spec.target)
        ambient = sample.values.get(AMBIENT)
        if model is None or value is None or not spec.gate_open(sample.values.get("engine_rpm")):
            state.pop("prev", None)  # the next difference would span a gap or another mode
            return []
        t = sample.ts.timestamp()
        previous = state.get("prev")
        if previous is not None and t - previous[0] <= STEP_MAX_S:
            healthy = 2.0 * model.jitter ** 2  # where the estimate starts: as noisy as healthy until shown otherwise
            diff2 = min((value - previous[1]) ** 2, JITTER_STEP_CAP * healthy)
            old = state.get("diff2", healthy)
            state["diff2"] = old + (1.0 - math.exp(-(t - previous[0]) / JITTER_TIME_CONSTANT_S)) * (diff2 - old)
        state["prev"] = [t, value]
        if features is None or not model.judges(ambient):
            return []
        inputs = model.inputs(features, ambient)
        if not model.knows(inputs):
            state.pop("since", None)  # an operating point the model never saw: no judgement
            return []
        expected, _ = model.residual_sigmas(inputs, value, ambient)
        last_smooth = state.get("smooth_t")
        restart = last_smooth is None or t - last_smooth > MAX_GAP_S
        average = smoothed(None if restart else state["smooth"], 0.0 if restart else t - last_smooth,
                           value - expected - model.residual_median, spec.smooth_s)
        state["smooth"], state["smooth_t"] = average, t
        bias, last_t = state.get("bias", 0.0), state.get("bias_t")
        if last_t is not None and t - last_t >= self.restart_after_s:
            state["relearn_until"] = t + self.relearn_s
        relearning = t < state.get("relearn_until", -math.inf)
        sigmas = (average - bias) / model.residual_spread
        excess = average - bias + model.residual_median
        above = not relearning and self.sign * sigmas > self.raise_sigmas and self.sign * excess > self.min_excess
        state["bias_t"] = t
        learns = not state.get("active") and not above
        state["bias"] = self.learn_bias(bias, last_t, t, average, relearning) if learns else bias
        if not state.get("active"):
            if not above:
                state.pop("since", None)
                return []
            since = state.setdefault("since", sample.ts.isoformat())
            if _seconds(sample.ts, since) < self.sustain_s:
                return []
            state.pop("since", None)
            state["active"] = True
            return [_raise(self, self.severity, datetime.fromisoformat(since), {
                "signal": spec.target, "value": value, "expected": round(expected + bias, 2),
                "deviation": round(excess, 2), "sigmas": round(sigmas, 1), "ambient_c": ambient,
                "bias": round(bias, 2), "model": f"{model.kind} v{model.version} ({model.samples} samples)"})]
        if self.sign * sigmas < self.clear_sigmas:
            back = state.setdefault("back_since", sample.ts.isoformat())
            if _seconds(sample.ts, back) >= self.clear_sustain_s:
                state.pop("active")
                state.pop("back_since")
                return [_clear(self, sample.ts, {"value": value, "expected": round(expected + bias, 2)})]
        else:
            state.pop("back_since", None)
        return []

    def statistics(self, state: dict[str, Any], ctx: EquipmentContext) -> dict[str, float]:
        """What the machine's model says of its channel now, for ranking causes: how far the channel
        is from expected (``<signal>.deviation``, in its unit and ``.deviation_sigmas``) and how noisy
        against healthy (``.jitter_ratio``)."""
        from diagnostics.models import MODEL_SPECS

        model = ctx.models.get(self.model_kind)
        if model is None:
            return {}
        target, stats = MODEL_SPECS[self.model_kind].target, {}
        if "smooth" in state:
            bias = state.get("bias", 0.0)
            stats[f"{target}.deviation"] = round(state["smooth"] - bias + model.residual_median, 3)
            stats[f"{target}.deviation_sigmas"] = round((state["smooth"] - bias) / model.residual_spread, 2)
        if state.get("diff2") is not None and model.jitter > 0:
            stats[f"{target}.jitter_ratio"] = round(math.sqrt(state["diff2"] / 2.0) / model.jitter, 2)
        return stats
