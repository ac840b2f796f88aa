"""Diagnostics for a shard of many machines at once: the rulebook evaluated over numpy columns.

``diagnostics.engine.EquipmentEngine`` evaluates one machine's samples one at a time through Python
dicts. That is clear, but at fleet scale the interpreter's cost per reading and rule is more than the
whole pipeline may spend on a reading. ``ShardEngine`` keeps every machine's rule state as columns
indexed by the machine's slot (one set of columns per rulebook, since rulebooks differ per equipment
model only by their parameters) and evaluates a round of readings with a few numpy operations per
rule for all machines together. A run of several readings per machine is evaluated as "the first
reading of every machine", then "the second", and so on, so each machine still sees its readings in
time order.

Its results are those of ``EquipmentEngine``: the same raised / cleared / updated changes with the same
times, evidence and diagnosis, and the same state format (``state()``, and ``add(ctx, state)``
accepts an ``EquipmentEngine.state()``), so machines move between the two freely. Python runs only
for what is rare: a fault raised or cleared, DTC codes, the periodic re-ranking of open faults' causes.

Times are kept as integer microseconds since the epoch, as ``datetime`` does, so that "sustained for
30 s" is decided exactly as the reference decides it on datetimes; rates and averages use the same
float seconds as ``datetime.timestamp()``. Checkpoints (``export``/``restore``) are numpy arrays in
an ``.npz`` (no pickle) with a small JSON part for the sparse state, and carry ``FORMAT_VERSION``.
"""

from __future__ import annotations

import io
import json
import math
import operator
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar
from zoneinfo import ZoneInfo

import numpy as np

from core.vocabulary import FULL_LOAD_RPM
from diagnostics import evidence
from diagnostics.catalogue import DTC_TABLE, Indicator, fault_info
from diagnostics.causes import diagnosis
from diagnostics.engine import DIAGNOSIS_REFRESH_S
from diagnostics.models import (
    AMBIENT,
    JITTER_TIME_CONSTANT_S,
    LOAD_SIGNALS,
    MAX_GAP_S,
    MODEL_SPECS,
    STEP_MAX_S,
    TIME_CONSTANTS_S,
    WARM_UP_S,
    feature_names,
    operating_mode,
)
from diagnostics.rulebook import Rulebook
from diagnostics.rulebook import rulebook_for as default_rulebook_for
from diagnostics.rules import (
    Curfew,
    Dtc,
    EquipmentContext,
    FaultChange,
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
    distance_m,
    saved_load,
)

FORMAT_VERSION = 1
# A time column's value for "not set" (microseconds): far below any real time, and still far from
# overflowing when a real time is subtracted from it.
NO_TIME = -(2**62)
NEVER = 2**62  # "no re-ranking due"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MICROSECOND = timedelta(microseconds=1)
INITIAL_CAPACITY = 64
# Local-time offsets are looked up once per (time zone, quarter hour of UTC): every offset in use
# since the 1970s is a multiple of 15 minutes, so a transition falls on such a boundary. A quarter
# hour that still contains one is resolved per reading.
TZ_BUCKET_S = 900
_TZ_BUCKET_BITS = 40


def at_least_us(seconds: float) -> int:
    """The smallest whole number of microseconds d with d / 1e6 >= seconds: comparing microsecond
    differences with it decides exactly as ``timedelta.total_seconds() >= seconds`` does."""
    d = math.ceil(seconds * 1e6)
    while (d - 1) / 1e6 >= seconds:
        d -= 1
    while d / 1e6 < seconds:
        d += 1
    return d


REFRESH_US = at_least_us(DIAGNOSIS_REFRESH_S)


def _indicator_holds(indicator: Indicator, stats: dict[str, float]) -> bool:
    value = stats.get(indicator.statistic)
    if value is None:
        return False
    return value > indicator.value if indicator.op == ">" else value < indicator.value


def top_cause(fault_code: str, stats: dict[str, float]) -> str | None:
    """The id of ``causes.rank_causes(fault_code, stats)[0]``, computed the same way (the first of the
    highest probability) without building the ranked list: open faults are re-ranked every 30 s."""
    causes = fault_info(fault_code).causes
    if not causes:
        return None
    scores = [math.log(c.prior) + sum(i.weight for i in c.indicators if _indicator_holds(i, stats)) for c in causes]
    best = max(scores)
    total = sum(math.exp(score - best) for score in scores)
    probabilities = [math.exp(score - best) / total for score in scores]
    return causes[probabilities.index(max(probabilities))].id


_FIXED_TOP: dict[str, tuple[bool, str | None]] = {}


def _fixed_top(fault_code: str) -> tuple[bool, str | None]:
    """(True, its top cause) for a fault whose ranking no evidence can change (no indicators)."""
    fixed = _FIXED_TOP.get(fault_code)
    if fixed is None:
        causes = fault_info(fault_code).causes
        if any(c.indicators for c in causes) and len(causes) > 1:
            fixed = (False, None)
        else:
            fixed = (True, top_cause(fault_code, {}))
        _FIXED_TOP[fault_code] = fixed
    return fixed


def _dt(us: int) -> datetime:
    return EPOCH + timedelta(microseconds=int(us))


def _iso(us: int) -> str:
    return _dt(us).isoformat()


def _us(value: str | datetime) -> int:
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - EPOCH) // MICROSECOND


def _alpha(dt: np.ndarray, time_constant_s: float) -> np.ndarray:
    return np.where(dt > 0, 1.0 - np.exp(-dt / time_constant_s), 0.0)


def _holds(when: When, step: _Step) -> np.ndarray:
    value = step.v(when.signal)
    return value > when.value if when.op == ">" else value < when.value


# --- time zones ---------------------------------------------------------------------------------

_TZ_NAMES: list[str] = []
_TZ_INDEX: dict[str, int] = {}
_TZ_OFFSETS: dict[int, int | None] = {}


def _tz_index(name: str) -> int:
    index = _TZ_INDEX.get(name)
    if index is None:
        ZoneInfo(name)  # an unknown zone fails here, when the machine is added
        index = _TZ_INDEX[name] = len(_TZ_NAMES)
        _TZ_NAMES.append(name)
    return index


def _offset_s(key: int) -> int | None:
    """UTC offset (s) of a (zone, quarter hour) key, None when it changes within that quarter hour."""
    offset = _TZ_OFFSETS.get(key, -1)
    if offset != -1:
        return offset
    zone = ZoneInfo(_TZ_NAMES[key >> _TZ_BUCKET_BITS])
    start = EPOCH + timedelta(seconds=(key & ((1 << _TZ_BUCKET_BITS) - 1)) * TZ_BUCKET_S)
    first = start.astimezone(zone).utcoffset()
    last = (start + timedelta(seconds=TZ_BUCKET_S) - MICROSECOND).astimezone(zone).utcoffset()
    if first is None or last is None:  # never: astimezone(zone) gives an aware datetime
        raise ValueError(f"time zone {zone.key} gives no UTC offset")
    offset = int(first.total_seconds()) if first == last else None
    _TZ_OFFSETS[key] = offset
    return offset


def local_hours(tz: np.ndarray, t_us: np.ndarray) -> np.ndarray:
    """Local hour of day of each (zone index, UTC microseconds)."""
    seconds = t_us // 1_000_000
    keys = (tz.astype(np.int64) << _TZ_BUCKET_BITS) + seconds // TZ_BUCKET_S
    unique, inverse = np.unique(keys, return_inverse=True)
    offsets = [_offset_s(k) for k in unique.tolist()]
    exact = np.array([o is not None for o in offsets])
    offset_s = np.array([o or 0 for o in offsets], dtype=np.int64)
    hours = ((seconds + offset_s[inverse]) // 3600) % 24
    if not exact.all():
        for i in np.flatnonzero(~exact[inverse]):
            hours[i] = _dt(t_us[i]).astimezone(ZoneInfo(_TZ_NAMES[tz[i]])).hour
    return hours


# --- columns ------------------------------------------------------------------------------------


class _Columns:
    """Per-slot arrays that grow together; ``a[name]`` is the array of one column."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.a: dict[str, np.ndarray] = {}
        self.spec: dict[str, tuple[Any, Any, tuple[int, ...]]] = {}

    def column(self, name: str, dtype: Any, fill: Any, shape: tuple[int, ...] = ()) -> None:
        self.spec[name] = (dtype, fill, shape)
        self.a[name] = np.full((self.capacity, *shape), fill, dtype=dtype)

    def grow(self, capacity: int) -> None:
        for name, (dtype, fill, shape) in self.spec.items():
            grown = np.full((capacity, *shape), fill, dtype=dtype)
            grown[: self.capacity] = self.a[name]
            self.a[name] = grown
        self.capacity = capacity

    def reset(self, slots: Any) -> None:
        for name, (_, fill, _) in self.spec.items():
            self.a[name][slots] = fill


_ALL = object()


class _Step:
    """The readings of one step: at most one per machine slot, all of one rulebook group."""

    __slots__ = ("slots", "rows", "t_us", "t", "values", "codes", "has_codes", "_cache", "_having")

    def __init__(self, slots: np.ndarray, rows: np.ndarray, t_us: np.ndarray, values: Mapping[str, np.ndarray],
                 codes: Mapping[int, tuple] | None, has_codes: np.ndarray | None, t: np.ndarray | None = None) -> None:
        self.slots = slots
        self.rows = rows
        self.t_us = t_us
        # The same float seconds as datetime.timestamp(), which the reference's averages use.
        self.t = t_us / 1e6 if t is None else t
        self.values = values
        self.codes = codes
        self.has_codes = has_codes
        self._cache: dict[str, np.ndarray] = {}
        self._having: dict[tuple[str, ...], Any] = {}

    def __len__(self) -> int:
        return len(self.slots)

    def v(self, channel: str) -> np.ndarray:
        value = self._cache.get(channel)
        if value is None:
            source = self.values.get(channel)
            value = np.full(len(self.rows), np.nan) if source is None else source[self.rows]
            self._cache[channel] = value
        return value

    def subset(self, mask: np.ndarray) -> _Step:
        index = np.flatnonzero(mask)
        sub = _Step(self.slots[index], self.rows[index], self.t_us[index], self.values, self.codes,
                    None if self.has_codes is None else self.has_codes[index], self.t[index])
        for channel, value in self._cache.items():
            sub._cache[channel] = value[index]
        return sub

    def having(self, *channels: str) -> _Step | None:
        """The readings that have a value for every one of ``channels`` (None when there are none)."""
        if channels not in self._having:
            mask = ~np.isnan(self.v(channels[0]))
            for channel in channels[1:]:
                mask &= ~np.isnan(self.v(channel))
            # _ALL rather than self: a step holding itself would live until the garbage collector ran.
            self._having[channels] = _ALL if mask.all() else (self.subset(mask) if mask.any() else None)
        result = self._having[channels]
        return self if result is _ALL else result


Event = tuple[int, int, int, FaultChange]  # (row, rule position, slot, change)


class _RuleColumns(_Columns):
    """One rule's state for every slot of a group, and its evaluation over a step."""

    kind: ClassVar[type[Rule]]

    def __init__(self, rule: Any, position: int, group: _Group) -> None:
        super().__init__(group.capacity)
        self.rule = rule
        self.position = position
        self.group = group
        # The few rules with Python state per slot (JSON-able, only for slots that have some) keep it here.
        self.sparse: dict[int, Any] = {}
        self.define()

    def define(self) -> None:
        raise NotImplementedError

    def evaluate(self, step: _Step, events: list[Event]) -> None:
        raise NotImplementedError

    def state_of(self, slot: int) -> dict[str, Any]:
        raise NotImplementedError

    def load_state(self, slot: int, state: dict[str, Any]) -> None:
        raise NotImplementedError

    def load_sparse(self, slot: int, data: Any) -> None:
        """Set the slot's entry of ``sparse`` (rules that keep one), from its JSON form."""

    def forget(self, slot: int) -> None:
        self.reset(slot)
        self.sparse.pop(slot, None)

    def _raised(self, step: _Step, i: int, severity: str, at_us: int, evidence_: dict[str, Any],
                code: str | None = None) -> Event:
        rule = self.rule
        change = FaultChange("raised", code or rule.fault_code, severity, _dt(at_us), evidence_, rule.key, rule.version)
        return int(step.rows[i]), self.position, int(step.slots[i]), change

    def _cleared(self, step: _Step, i: int, at_us: int, evidence_: dict[str, Any], code: str | None = None) -> Event:
        rule = self.rule
        change = FaultChange("cleared", code or rule.fault_code, "", _dt(at_us), evidence_, rule.key, rule.version)
        return int(step.rows[i]), self.position, int(step.slots[i]), change


def _episode(columns: _RuleColumns, step: _Step, condition: np.ndarray, sustain_us: int
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """rules._episode over a step: returns (raised mask, their start times, cleared mask)."""
    a = columns.a
    slots, t_us = step.slots, step.t_us
    since = a["since"][slots]
    active = a["active"][slots]
    since = np.where(condition, np.where(since == NO_TIME, t_us, since), NO_TIME)
    raised = condition & ~active & (t_us - since >= sustain_us)
    cleared = ~condition & active
    a["since"][slots] = since
    a["active"][slots] = (active | raised) & ~cleared
    return raised, since, cleared


def _since_state(state: dict[str, Any], us: int, key: str = "since") -> None:
    if us != NO_TIME:
        state[key] = _iso(us)


def _load_since(state: dict[str, Any], key: str = "since") -> int:
    value = state.get(key)
    return NO_TIME if value is None else _us(value)


class _ThresholdColumns(_RuleColumns):
    kind = Threshold

    def define(self) -> None:
        self.column("active", bool, False)
        self.column("since", np.int64, NO_TIME)
        self.column("worst", np.float64, np.nan)
        self.column("back", np.int64, NO_TIME)
        self.column("smooth_t", np.float64, np.nan)
        self.column("smooth_v", np.float64, np.nan)
        self.sustain_us = at_least_us(self.rule.sustain_s)
        self.clear_sustain_us = at_least_us(self.rule.clear_sustain_s)

    def evaluate(self, step, events):
        rule, a = self.rule, self.a
        step = step.having(rule.signal)
        if step is None:
            return
        slots, t_us = step.slots, step.t_us
        value = step.v(rule.signal)
        if rule.smooth_s:
            smooth_t, smooth_v = a["smooth_t"][slots], a["smooth_v"][slots]
            alpha = 1.0 - np.exp(-np.maximum(0.0, step.t - smooth_t) / rule.smooth_s)
            value = np.where(np.isnan(smooth_t), value, smooth_v + alpha * (value - smooth_v))
            a["smooth_t"][slots] = step.t
            a["smooth_v"][slots] = value
        if rule.when is not None:
            holds = _holds(rule.when, step)
            if not holds.all():
                idle = slots[~holds]
                a["since"][idle] = NO_TIME  # the sustain time counts only while the condition holds
                a["back"][idle] = NO_TIME
                a["smooth_t"][idle] = np.nan
                if not holds.any():
                    return
                step, value = step.subset(holds), value[holds]
                slots, t_us = step.slots, step.t_us
        above = rule.direction == "above"
        active = a["active"][slots]
        beyond = value > rule.raise_at if above else value < rule.raise_at
        rising = ~active & beyond
        since_old, worst_old = a["since"][slots], a["worst"][slots]
        since = np.where(rising, np.where(since_old == NO_TIME, t_us, since_old), np.where(active, since_old, NO_TIME))
        worst = np.where(np.isnan(worst_old), value, worst_old)
        worst = np.maximum(worst, value) if above else np.minimum(worst, value)
        worst = np.where(rising, worst, np.where(active, worst_old, np.nan))
        raised = rising & (t_us - since >= self.sustain_us)
        back_old = a["back"][slots]
        back_ok = (value > rule.clear_at if above else value < rule.clear_at) | (value == rule.clear_at)
        returning = active & ~back_ok
        back = np.where(returning, np.where(back_old == NO_TIME, t_us, back_old), np.where(active, NO_TIME, back_old))
        cleared = returning & (t_us - back >= self.clear_sustain_us)
        if raised.any():
            for i in np.flatnonzero(raised):
                severity = rule.severity
                for level, level_severity in rule.severity_levels:
                    if (worst[i] > level) if above else (worst[i] < level):
                        severity = level_severity
                events.append(self._raised(step, i, severity, since[i], {
                    "signal": rule.signal, "value": round(float(value[i]), 3), "worst": round(float(worst[i]), 3),
                    "limit": rule.raise_at, "direction": rule.direction, "sustain_s": rule.sustain_s,
                }))
            since[raised] = NO_TIME
            worst[raised] = np.nan
        if cleared.any():
            for i in np.flatnonzero(cleared):
                events.append(self._cleared(step, i, back[i], {
                    "signal": rule.signal, "value": round(float(value[i]), 3), "clear_at": rule.clear_at}))
            back[cleared] = NO_TIME
        a["since"][slots] = since
        a["worst"][slots] = worst
        a["back"][slots] = back
        a["active"][slots] = (active | raised) & ~cleared

    def state_of(self, slot):
        a, state = self.a, {}
        _since_state(state, a["since"][slot])
        if not np.isnan(a["worst"][slot]):
            state["worst"] = float(a["worst"][slot])
        if a["active"][slot]:
            state["active"] = True
        _since_state(state, a["back"][slot], "back_since")
        if not np.isnan(a["smooth_t"][slot]):
            state["smooth"] = [float(a["smooth_t"][slot]), float(a["smooth_v"][slot])]
        return state

    def load_state(self, slot, state):
        a = self.a
        a["since"][slot] = _load_since(state)
        a["worst"][slot] = state.get("worst", np.nan)
        a["active"][slot] = bool(state.get("active"))
        a["back"][slot] = _load_since(state, "back_since")
        smooth = state.get("smooth")
        if smooth is not None:
            a["smooth_t"][slot], a["smooth_v"][slot] = smooth


class _RepeatedColumns(_RuleColumns):
    """The crossing times within the window stay a Python list per slot (crossings are rare); the
    columns hold their count and the oldest, which is all the common case looks at."""

    kind = Repeated

    def define(self) -> None:
        self.column("above", np.int8, -1)  # -1: no value seen yet (no "above", no "crossings")
        self.column("active", np.int8, -1)  # -1: never set; 0: cleared (the reference keeps False)
        self.column("count", np.int32, 0)
        self.column("oldest", np.float64, np.nan)

    def evaluate(self, step, events):
        rule, a = self.rule, self.a
        step = step.having(rule.signal)
        if step is None:
            return
        slots, now = step.slots, step.t
        value = step.v(rule.signal)
        count = a["count"][slots]
        expiring = (count > 0) & (now - a["oldest"][slots] > rule.window_s)
        over = value > rule.raise_at
        crossing = over & (a["above"][slots] != 1)
        if expiring.any() or crossing.any():
            for i in np.flatnonzero(expiring | crossing):
                slot, t = int(slots[i]), float(now[i])
                kept = [c for c in self.sparse.get(slot, ()) if t - c <= rule.window_s]
                if crossing[i]:
                    kept.append(t)
                if kept:
                    self.sparse[slot] = kept
                else:
                    self.sparse.pop(slot, None)
                count[i] = len(kept)
                a["oldest"][slot] = kept[0] if kept else np.nan
            a["count"][slots] = count
        a["above"][slots] = over
        active = a["active"][slots] == 1
        raised = ~active & (count >= rule.count)
        cleared = active & (count == 0)
        if raised.any():
            for i in np.flatnonzero(raised):
                first = datetime.fromtimestamp(self.sparse[int(slots[i])][0], UTC)
                events.append(self._raised(step, i, rule.severity, _us(first), {
                    "signal": rule.signal, "limit": rule.raise_at, "crossings": int(count[i]),
                    "window_s": rule.window_s}))
            a["active"][slots[raised]] = 1
        if cleared.any():
            for i in np.flatnonzero(cleared):
                events.append(self._cleared(step, i, step.t_us[i], {"signal": rule.signal,
                                                                    "quiet_for_s": rule.window_s}))
            a["active"][slots[cleared]] = 0

    def state_of(self, slot):
        a, state = self.a, {}
        if a["above"][slot] >= 0:
            state["above"] = bool(a["above"][slot])
            state["crossings"] = list(self.sparse.get(slot, ()))
        if a["active"][slot] >= 0:
            state["active"] = bool(a["active"][slot])
        return state

    def load_state(self, slot, state):
        a = self.a
        a["above"][slot] = int(bool(state["above"])) if "above" in state else (0 if "crossings" in state else -1)
        a["active"][slot] = int(bool(state["active"])) if "active" in state else -1
        self.load_sparse(slot, state.get("crossings") or None)

    def load_sparse(self, slot, data):
        crossings = [float(c) for c in data or ()]
        if crossings:
            self.sparse[slot] = crossings
        else:
            self.sparse.pop(slot, None)
        self.a["count"][slot] = len(crossings)
        self.a["oldest"][slot] = crossings[0] if crossings else np.nan


class _RateOfChangeColumns(_RuleColumns):
    kind = RateOfChange

    def define(self) -> None:
        for name in ("steady_ref", "steady_since", "t", "fast", "slow"):
            self.column(name, np.float64, np.nan)
        self.column("active", np.int8, -1)
        self.fast_s, self.slow_s = self.rule.window_s / 4, self.rule.window_s * 3 / 4

    def evaluate(self, step, events):
        rule, a = self.rule, self.a
        step = step.having(rule.signal, rule.steady_signal)
        if step is None:
            return
        slots, now = step.slots, step.t
        value, steady_value = step.v(rule.signal), step.v(rule.steady_signal)
        anchor = a["steady_ref"][slots]
        moved = np.isnan(anchor) | (np.abs(steady_value - anchor) > rule.steady_band)
        a["steady_ref"][slots] = np.where(moved, steady_value, anchor)
        steady_since = np.where(moved, now, a["steady_since"][slots])
        a["steady_since"][slots] = steady_since
        fast, slow, last = a["fast"][slots], a["slow"][slots], a["t"][slots]
        fresh = np.isnan(fast)
        if fresh.any():
            fast, slow, last = np.where(fresh, value, fast), np.where(fresh, value, slow), np.where(fresh, now, last)
        dt = np.maximum(0.0, now - last)
        fast = fast + (1 - np.exp(-dt / self.fast_s)) * (value - fast)
        slow = slow + (1 - np.exp(-dt / self.slow_s)) * (value - slow)
        a["t"][slots], a["fast"][slots], a["slow"][slots] = now, fast, slow
        steady = now - steady_since >= rule.steady_s
        slope = (fast - slow) / (self.slow_s - self.fast_s) * 60.0
        active = a["active"][slots] == 1
        raised = steady & (slope > rule.max_per_min) & ~active
        cleared = active & steady & (slope < rule.max_per_min / 2)
        if raised.any():
            for i in np.flatnonzero(raised):
                events.append(self._raised(step, i, rule.severity, step.t_us[i], {
                    "signal": rule.signal, "rate_per_min": round(float(slope[i]), 2),
                    "limit_per_min": rule.max_per_min, "window_s": rule.window_s, "steady": rule.steady_signal}))
            a["active"][slots[raised]] = 1
        if cleared.any():
            for i in np.flatnonzero(cleared):
                events.append(self._cleared(step, i, step.t_us[i], {
                    "signal": rule.signal, "rate_per_min": round(float(slope[i]), 2)}))
            a["active"][slots[cleared]] = 0

    def state_of(self, slot):
        a, state = self.a, {}
        for name in ("steady_ref", "steady_since", "t", "fast", "slow"):
            if not np.isnan(a[name][slot]):
                state[name] = float(a[name][slot])
        if a["active"][slot] >= 0:
            state["active"] = bool(a["active"][slot])
        return state

    def load_state(self, slot, state):
        a = self.a
        for name in ("steady_ref", "steady_since", "t", "fast", "slow"):
            a[name][slot] = state.get(name, np.nan)
        a["active"][slot] = int(bool(state["active"])) if "active" in state else -1


class _StuckColumns(_RuleColumns):
    kind = Stuck

    def define(self) -> None:
        self.column("ref", np.float64, np.nan)
        self.column("since", np.int64, NO_TIME)
        self.column("active", bool, False)
        self.window_us = at_least_us(self.rule.window_s)

    def evaluate(self, step, events):
        rule, a = self.rule, self.a
        step = step.having(rule.signal)
        if step is None:
            return
        slots, t_us = step.slots, step.t_us
        value = step.v(rule.signal)
        ref, since, active = a["ref"][slots], a["since"][slots], a["active"][slots]
        moved = np.isnan(ref) | (np.abs(value - ref) > rule.tolerance)
        cleared = moved & active
        held = ~moved if rule.when is None else ~moved & _holds(rule.when, step)
        raised = held & ~active & (t_us - since >= self.window_us)
        if cleared.any():
            for i in np.flatnonzero(cleared):
                events.append(self._cleared(step, i, t_us[i], {
                    "signal": rule.signal, "value": float(value[i]), "was": float(ref[i])}))
        if raised.any():
            for i in np.flatnonzero(raised):
                events.append(self._raised(step, i, rule.severity, since[i], {
                    "signal": rule.signal, "value": float(value[i]),
                    "unchanged_for_s": int(t_us[i] - since[i]) / 1e6, "tolerance": rule.tolerance},
                    code=rule.fault_code))
        a["ref"][slots] = np.where(moved, value, ref)
        a["since"][slots] = np.where(moved, t_us, since)
        a["active"][slots] = (active & ~moved) | raised

    def state_of(self, slot):
        a, state = self.a, {}
        if not np.isnan(a["ref"][slot]):
            state["ref"] = float(a["ref"][slot])
        _since_state(state, a["since"][slot])
        if a["active"][slot]:
            state["active"] = True
        return state

    def load_state(self, slot, state):
        a = self.a
        a["ref"][slot] = state.get("ref", np.nan)
        a["since"][slot] = _load_since(state)
        a["active"][slot] = bool(state.get("active"))


class _EpisodeColumns(_RuleColumns):
    """Rules whose fault life is rules._episode: a start time and an active flag."""

    def define(self) -> None:
        self.column("since", np.int64, NO_TIME)
        self.column("active", bool, False)
        self.sustain_us = at_least_us(self.rule.sustain_s)

    def state_of(self, slot: int) -> dict[str, Any]:
        state: dict[str, Any] = {}
        _since_state(state, self.a["since"][slot])
        if self.a["active"][slot]:
            state["active"] = True
        return state

    def load_state(self, slot, state):
        self.a["since"][slot] = _load_since(state)
        self.a["active"][slot] = bool(state.get("active"))


class _PlausibleColumns(_EpisodeColumns):
    kind = Plausible

    def evaluate(self, step, events):
        rule = self.rule
        step = step.having(rule.signal)
        if step is None:
            return
        value = step.v(rule.signal)
        raised, since, cleared = _episode(self, step, ~((rule.low <= value) & (value <= rule.high)), self.sustain_us)
        if raised.any():
            for i in np.flatnonzero(raised):
                events.append(self._raised(step, i, rule.severity, since[i], {
                    "signal": rule.signal, "value": float(value[i]), "plausible": [rule.low, rule.high]}))
        if cleared.any():
            for i in np.flatnonzero(cleared):
                events.append(self._cleared(step, i, step.t_us[i], {"signal": rule.signal, "value": float(value[i])}))


class _MissingColumns(_EpisodeColumns):
    kind = Missing

    def evaluate(self, step, events):
        rule = self.rule
        missing = np.ones(len(step), dtype=bool)
        for signal in rule.signals:
            missing &= np.isnan(step.v(signal))
        raised, since, cleared = _episode(self, step, missing, self.sustain_us)
        if raised.any():
            for i in np.flatnonzero(raised):
                events.append(self._raised(step, i, rule.severity, since[i], {
                    "signals": list(rule.signals), "missing_for_s": int(step.t_us[i] - since[i]) / 1e6}))
        if cleared.any():
            for i in np.flatnonzero(cleared):
                events.append(self._cleared(step, i, step.t_us[i], {"signals": list(rule.signals)}))


class _GeofenceColumns(_EpisodeColumns):
    kind = Geofence

    def evaluate(self, step, events):
        rule, a, site = self.rule, self.a, self.group.context.a
        step = step.having("lat", "lon")
        if step is None:
            return
        sited = ~np.isnan(site["site_lat"][step.slots])
        if not sited.all():
            if not sited.any():
                return
            step = step.subset(sited)
        slots, t_us = step.slots, step.t_us
        lat, lon = step.v("lat"), step.v("lon")
        site_lat, site_lon, radius = site["site_lat"][slots], site["site_lon"][slots], site["site_radius"][slots]
        p1, p2 = np.radians(site_lat), np.radians(lat)
        dp, dl = p2 - p1, np.radians(lon - site_lon)
        h = np.sin(dp / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dl / 2) ** 2
        away = 2 * 6_371_000.0 * np.arcsin(np.sqrt(h))
        active, since = a["active"][slots], a["since"][slots]
        outside = ~active & (away > radius)
        since = np.where(outside, np.where(since == NO_TIME, t_us, since), np.where(active, since, NO_TIME))
        raised = outside & (t_us - since >= self.sustain_us)
        cleared = active & (away < radius - rule.margin_m)
        if raised.any():
            for i in np.flatnonzero(raised):
                slot = int(slots[i])
                ctx_site = self.group.ctxs[slot].site
                exact = distance_m(ctx_site.lat, ctx_site.lon, float(lat[i]), float(lon[i]))
                events.append(self._raised(step, i, rule.severity, since[i], {
                    "distance_m": round(exact), "radius_m": ctx_site.radius_m, "lat": float(lat[i]),
                    "lon": float(lon[i])}))
        if cleared.any():
            for i in np.flatnonzero(cleared):
                ctx_site = self.group.ctxs[int(slots[i])].site
                exact = distance_m(ctx_site.lat, ctx_site.lon, float(lat[i]), float(lon[i]))
                events.append(self._cleared(step, i, t_us[i], {"distance_m": round(exact)}))
        a["since"][slots] = np.where(raised | cleared, NO_TIME, since)
        a["active"][slots] = (active | raised) & ~cleared


class _CurfewColumns(_EpisodeColumns):
    kind = Curfew

    def evaluate(self, step, events):
        rule, context = self.rule, self.group.context.a
        step = step.having("engine_rpm")
        if step is None:
            return
        ruled = context["curfew_start"][step.slots] >= 0
        if not ruled.all():
            if not ruled.any():
                return
            step = step.subset(ruled)
        slots = step.slots
        rpm = step.v("engine_rpm")
        start, end = context["curfew_start"][slots], context["curfew_end"][slots]
        hour = local_hours(context["tz"][slots], step.t_us)
        permitted = np.where(start <= end, (start <= hour) & (hour < end), (hour >= start) | (hour < end))
        raised, since, cleared = _episode(self, step, (rpm > rule.running_rpm) & ~permitted, self.sustain_us)
        if raised.any():
            for i in np.flatnonzero(raised):
                events.append(self._raised(step, i, rule.severity, since[i], {
                    "local_hour": int(hour[i]), "permitted_hours": [int(start[i]), int(end[i])],
                    "engine_rpm": float(rpm[i])}))
        if cleared.any():
            for i in np.flatnonzero(cleared):
                events.append(self._cleared(step, i, step.t_us[i], {"local_hour": int(hour[i]),
                                                                    "engine_rpm": float(rpm[i])}))


class _DtcColumns(_RuleColumns):
    """Active codes stay Python dicts per slot: only machines reporting codes are looked at."""

    kind = Dtc

    def define(self) -> None:
        self.column("count", np.int32, 0)
        # sparse: slot -> "spn:fmi" -> [fault code, last seen µs]
        self.clear_us = at_least_us(self.rule.clear_after_s)

    def evaluate(self, step, events):
        a = self.a
        look = a["count"][step.slots] > 0
        if step.has_codes is not None:
            look |= step.has_codes
        if not look.any():
            return
        codes = step.codes or {}
        for i in np.flatnonzero(look):
            slot, now_us = int(step.slots[i]), int(step.t_us[i])
            active = self.sparse.setdefault(slot, {})
            present = set()
            for spn, fmi, oc in codes.get(int(step.rows[i]), ()):
                key = f"{spn}:{fmi}"
                present.add(key)
                if key in active:
                    active[key][1] = now_us
                    continue
                mapping = DTC_TABLE.get((spn, fmi))
                code = mapping.fault_code if mapping else f"J1939_{spn}_{fmi}"
                active[key] = [code, now_us]
                events.append(self._raised(step, i, mapping.severity if mapping else "major", now_us, {
                    "spn": spn, "fmi": fmi, "occurrences": oc,
                    "description": mapping.description if mapping else "unmapped J1939 code"}, code=code))
            for key in [k for k in active if k not in present]:
                if now_us - active[key][1] >= self.clear_us:
                    code, _ = active.pop(key)
                    events.append(self._cleared(step, i, now_us, {"code": key}, code=code))
            a["count"][slot] = len(active)
            if not active:
                del self.sparse[slot]

    def state_of(self, slot):
        active = self.sparse.get(slot, {})
        if not active and self.group.engine.a["last_us"][slot] == NO_TIME:
            return {}
        return {"active": {key: {"code": code, "last_seen": _iso(seen)} for key, (code, seen) in active.items()}}

    def load_state(self, slot, state):
        self.load_sparse(slot, {key: [entry["code"], _us(entry["last_seen"])]
                                for key, entry in (state.get("active") or {}).items()})

    def load_sparse(self, slot, data):
        if data:
            self.sparse[slot] = {key: [code, int(seen)] for key, (code, seen) in data.items()}
        else:
            self.sparse.pop(slot, None)
        self.a["count"][slot] = len(data or ())


class _ServiceDueColumns(_RuleColumns):
    kind = ServiceDue

    def define(self) -> None:
        self.column("serviced_at", np.float64, np.nan)
        self.column("active", np.float64, np.nan)  # the due hours of the open reminder

    def evaluate(self, step, events):
        rule, a = self.rule, self.a
        step = step.having("engine_hours")
        if step is None:
            return
        slots = step.slots
        hours = step.v("engine_hours")
        recorded = self.group.context.a["service_hours"][slots]
        serviced = a["serviced_at"][slots]
        newer = ~np.isnan(recorded) & (recorded > np.where(np.isnan(serviced), -1.0, serviced))
        serviced = np.where(newer, recorded, serviced)
        serviced = np.where(np.isnan(serviced), rule.last_boundary(hours), serviced)
        a["serviced_at"][slots] = serviced
        due_at = rule.due_at(serviced)
        active = a["active"][slots]
        open_ = ~np.isnan(active) & (active != 0)
        raised = (hours >= due_at - rule.warn_before_h) & ~open_
        cleared = open_ & (hours < due_at - rule.warn_before_h)
        if raised.any():
            for i in np.flatnonzero(raised):
                due = float(due_at[i])
                kind = max([h for h in rule.major_every_h if due % h == 0], default=rule.interval_h)
                events.append(self._raised(step, i, rule.severity, step.t_us[i], {
                    "engine_hours": round(float(hours[i]), 2), "due_at_hours": due,
                    "service": f"{int(kind)} h service"}))
            a["active"][slots[raised]] = due_at[raised]
        if cleared.any():
            for i in np.flatnonzero(cleared):
                events.append(self._cleared(step, i, step.t_us[i], {"serviced_at_hours": float(serviced[i])}))
            a["active"][slots[cleared]] = np.nan

    def state_of(self, slot):
        a, state = self.a, {}
        if not np.isnan(a["serviced_at"][slot]):
            state["serviced_at"] = float(a["serviced_at"][slot])
        if not np.isnan(a["active"][slot]):
            state["active"] = float(a["active"][slot])
        return state

    def load_state(self, slot, state):
        self.a["serviced_at"][slot] = state.get("serviced_at", np.nan)
        active = state.get("active")
        self.a["active"][slot] = float(active) if active else np.nan


class _OfflineColumns(_RuleColumns):
    kind = Offline

    def define(self) -> None:
        self.column("active", bool, False)
        self.after_us = at_least_us(self.rule.after_s)

    def evaluate(self, step, events):
        active = self.a["active"][step.slots]
        if active.any():
            for i in np.flatnonzero(active):
                events.append(self._cleared(step, i, step.t_us[i], {"back_at": _iso(step.t_us[i])}))
            self.a["active"][step.slots[active]] = False

    def tick(self, slots: np.ndarray, now_us: int, events: list[Event]) -> None:
        rule = self.rule
        arrival = self.group.engine.a["last_arrival"][slots]
        raised = ~self.a["active"][slots] & (now_us - arrival >= self.after_us)
        if raised.any():
            for i in np.flatnonzero(raised):
                last = _dt(arrival[i])
                change = FaultChange("raised", rule.fault_code, rule.severity, last + timedelta(seconds=rule.after_s), {
                    "last_arrival": last.isoformat(), "silent_for_s": round((now_us - int(arrival[i])) / 1e6)},
                    rule.key, rule.version)
                events.append((-1, self.position, int(slots[i]), change))
            self.a["active"][slots[raised]] = True

    def state_of(self, slot):
        return {"active": True} if self.a["active"][slot] else {}

    def load_state(self, slot, state):
        self.a["active"][slot] = bool(state.get("active"))


_FEATURES = feature_names()
_EWMA = [(signal, tau) for signal in LOAD_SIGNALS for tau in TIME_CONSTANTS_S]  # in feature_names() order


class _ModelResidualColumns(_RuleColumns):
    kind = ModelResidual

    def define(self) -> None:
        self.model_spec = MODEL_SPECS[self.rule.model_kind]
        self.input_index = self.model_spec.input_index
        self.column("prev_t", np.float64, np.nan)
        self.column("prev_v", np.float64, np.nan)
        self.column("diff2", np.float64, np.nan)
        self.column("smooth", np.float64, np.nan)
        self.column("smooth_t", np.float64, np.nan)
        self.column("since", np.int64, NO_TIME)
        self.column("back", np.int64, NO_TIME)
        self.column("active", bool, False)
        self.column("bias", np.float64, 0.0)
        self.column("bias_t", np.float64, np.nan)
        self.column("relearn_until", np.float64, np.nan)
        self.sustain_us = at_least_us(self.rule.sustain_s)
        self.clear_sustain_us = at_least_us(self.rule.clear_sustain_s)

    def evaluate(self, step, events):
        rule, spec, a, model = self.rule, self.model_spec, self.a, self.group.context.a
        kind = spec.kind
        features = self.group.load_features(step)
        slots, now = step.slots, step.t
        value = step.v(spec.target)
        has = model[f"{kind}:model"][slots] & ~np.isnan(value) & spec.gate_open(step.v("engine_rpm"))
        prev_t, prev_v, old = a["prev_t"][slots], a["prev_v"][slots], a["diff2"][slots]
        follows = has & (now - prev_t <= STEP_MAX_S)  # NaN (no previous sample) compares False
        if follows.any():
            healthy = 2.0 * model[f"{kind}:jitter"][slots] ** 2
            diff2 = np.minimum((value - prev_v) ** 2, evidence.JITTER_STEP_CAP * healthy)
            start = np.where(np.isnan(old), healthy, old)
            later = start + (1.0 - np.exp(-(now - prev_t) / JITTER_TIME_CONSTANT_S)) * (diff2 - start)
            a["diff2"][slots] = np.where(follows, later, old)
        a["prev_t"][slots] = np.where(has, now, np.nan)
        a["prev_v"][slots] = np.where(has, value, np.nan)
        ambient = step.v(AMBIENT)
        judged = has & (now - self.group.load.a["load_since"][slots] >= WARM_UP_S)
        judged &= ~((model[f"{kind}:above_ambient"][slots] | model[f"{kind}:ambient_input"][slots])
                    & np.isnan(ambient))  # ResidualModel.judges
        for j in self.input_index:
            judged &= ~np.isnan(features[j])
        if not judged.any():
            return
        index = np.flatnonzero(judged)
        step = step.subset(judged) if len(index) < len(slots) else step
        slots, t_us, now, value, ambient = step.slots, step.t_us, step.t, value[index], ambient[index]
        x = np.stack([features[j][index] for j in self.input_index]
                     + ([ambient] if spec.ambient == "input" else []), axis=1)
        z = (x - model[f"{kind}:mean"][slots]) / model[f"{kind}:scale"][slots]
        n = len(self.input_index)
        d2 = np.einsum("ij,ijk,ik->i", z[:, :n], model[f"{kind}:precision"][slots], z[:, :n])
        knows = ~model[f"{kind}:enveloped"][slots] | (d2 <= model[f"{kind}:envelope"][slots])
        expected = model[f"{kind}:intercept"][slots] + np.einsum("ij,ij->i", model[f"{kind}:coef"][slots], z)
        expected = np.where(model[f"{kind}:above_ambient"][slots], expected + ambient, expected)
        median, spread = model[f"{kind}:median"][slots], model[f"{kind}:spread"][slots]
        residual = value - expected - median
        smooth_t, smooth_old = a["smooth_t"][slots], a["smooth"][slots]
        restart = np.isnan(smooth_t) | (now - smooth_t > MAX_GAP_S)
        if spec.smooth_s > 0:  # diagnostics.models.smoothed
            step_s = np.minimum(np.maximum(now - np.where(restart, now, smooth_t), 0.0), STEP_MAX_S)
            average = np.where(restart, residual,
                               smooth_old + (1.0 - np.exp(-step_s / spec.smooth_s)) * (residual - smooth_old))
        else:
            average = residual
        a["smooth"][slots] = np.where(knows, average, smooth_old)
        a["smooth_t"][slots] = np.where(knows, now, smooth_t)
        bias, last_t = a["bias"][slots], a["bias_t"][slots]  # ModelResidual: the machine's own offset
        restarted = knows & (now - last_t >= rule.restart_after_s)  # NaN (never judged) compares False
        relearn_until = np.where(restarted, now + rule.relearn_s, a["relearn_until"][slots])
        a["relearn_until"][slots] = relearn_until
        relearning = now < relearn_until
        sigmas = (average - bias) / spread
        excess = average - bias + median
        sign = rule.sign
        above = knows & ~relearning & (sign * sigmas > rule.raise_sigmas) & (sign * excess > rule.min_excess)
        active, since_old, back_old = a["active"][slots], a["since"][slots], a["back"][slots]
        learn = knows & ~active & ~above
        dt = np.minimum(np.maximum(0.0, now - np.where(np.isnan(last_t), now, last_t)), rule.bias_step_max_s)
        target = np.clip(average, -rule.bias_max, rule.bias_max)
        tau = np.where(relearning, rule.relearn_time_constant_s, rule.bias_time_constant_s)
        a["bias"][slots] = np.where(learn, bias + (1.0 - np.exp(-dt / tau)) * (target - bias), bias)
        a["bias_t"][slots] = np.where(knows, now, last_t)
        rising = ~active & above
        since = np.where(rising, np.where(since_old == NO_TIME, t_us, since_old),
                         np.where(active & knows, since_old, NO_TIME))
        raised = rising & (t_us - since >= self.sustain_us)
        cooling = active & knows & (sign * sigmas < rule.clear_sigmas)
        back = np.where(cooling, np.where(back_old == NO_TIME, t_us, back_old),
                        np.where(active & knows, NO_TIME, back_old))
        cleared = cooling & (t_us - back >= self.clear_sustain_us)
        for i in np.flatnonzero(raised | cleared):
            # The expected value as the reference computes it, on exactly these inputs.
            fitted = self.group.ctxs[int(slots[i])].models[kind]
            air = None if np.isnan(ambient[i]) else float(ambient[i])
            exact_expected = fitted.expected([float(v) for v in x[i]], air) + float(bias[i])
            if raised[i]:
                events.append(self._raised(step, i, rule.severity, since[i], {
                    "signal": spec.target, "value": float(value[i]), "expected": round(exact_expected, 2),
                    "deviation": round(float(excess[i]), 2), "sigmas": round(float(sigmas[i]), 1),
                    "ambient_c": air, "bias": round(float(bias[i]), 2),
                    "model": f"{fitted.kind} v{fitted.version} ({fitted.samples} samples)"}))
            else:
                events.append(self._cleared(step, i, t_us[i], {"value": float(value[i]),
                                                               "expected": round(exact_expected, 2)}))
        since[raised] = NO_TIME
        back[cleared] = NO_TIME
        a["since"][slots] = since
        a["back"][slots] = back
        a["active"][slots] = (active | raised) & ~cleared

    def statistics(self, slot: int) -> dict[str, float]:
        """ModelResidual.statistics of one slot."""
        ctx = self.group.ctxs[slot]
        return self.rule.statistics(self.state_of(slot), ctx) if ctx is not None else {}

    def state_of(self, slot):
        a, state = self.a, self.group.load_state_of(slot)
        if not np.isnan(a["prev_t"][slot]):
            state["prev"] = [float(a["prev_t"][slot]), float(a["prev_v"][slot])]
        if not np.isnan(a["diff2"][slot]):
            state["diff2"] = float(a["diff2"][slot])
        if not np.isnan(a["smooth_t"][slot]):
            state["smooth"], state["smooth_t"] = float(a["smooth"][slot]), float(a["smooth_t"][slot])
        _since_state(state, a["since"][slot])
        if a["active"][slot]:
            state["active"] = True
        _since_state(state, a["back"][slot], "back_since")
        if not np.isnan(a["bias_t"][slot]):
            state["bias"], state["bias_t"] = float(a["bias"][slot]), float(a["bias_t"][slot])
        if not np.isnan(a["relearn_until"][slot]):
            state["relearn_until"] = float(a["relearn_until"][slot])
        return state

    def load_state(self, slot, state):
        a = self.a
        a["bias"][slot] = state.get("bias", 0.0)
        a["bias_t"][slot] = state.get("bias_t", np.nan)
        a["relearn_until"][slot] = state.get("relearn_until", np.nan)
        previous = state.get("prev") or (np.nan, np.nan)
        a["prev_t"][slot], a["prev_v"][slot] = previous[0], previous[1]
        a["diff2"][slot] = state.get("diff2", np.nan)
        a["smooth"][slot] = state.get("smooth", np.nan)
        a["smooth_t"][slot] = state.get("smooth_t", np.nan)
        a["since"][slot] = _load_since(state)
        a["active"][slot] = bool(state.get("active"))
        a["back"][slot] = _load_since(state, "back_since")


RULE_COLUMNS: dict[type[Rule], type[_RuleColumns]] = {
    cls.kind: cls for cls in (
        _ThresholdColumns, _RepeatedColumns, _RateOfChangeColumns, _StuckColumns, _PlausibleColumns,
        _MissingColumns, _GeofenceColumns, _CurfewColumns, _DtcColumns, _ServiceDueColumns, _OfflineColumns,
        _ModelResidualColumns)
}
_EVIDENCE_FIELDS = ("t", "mean", "now", "diff2", "prev")


class _Group:
    """The machines of one rulebook: their slots, context, evidence and every rule's columns."""

    def __init__(self, rulebook: Rulebook, index: int) -> None:
        unknown = [type(rule).__name__ for rule in rulebook.rules if type(rule) not in RULE_COLUMNS]
        if unknown:
            raise ValueError(f"rulebook {rulebook.model!r} has rule kinds ShardEngine cannot evaluate: "
                             f"{', '.join(sorted(set(unknown)))}")
        self.rulebook = rulebook
        self.index = index
        self.capacity = INITIAL_CAPACITY
        self.engine = _Columns(self.capacity)
        self.engine.column("last_us", np.int64, NO_TIME)
        self.engine.column("last_arrival", np.int64, NO_TIME)
        self.engine.column("refresh_due", np.int64, NEVER)
        self.evidence = _Columns(self.capacity)
        for c in range(len(evidence.TRACKED)):
            # Order in which the channels were first seen (statistics() lists them in that order).
            self.evidence.column(f"born{c}", np.int64, -1)
            for name in _EVIDENCE_FIELDS:
                self.evidence.column(f"{name}{c}", np.float64, np.nan)
        self.context = _Columns(self.capacity)
        for name in ("site_lat", "site_lon", "site_radius", "service_hours"):
            self.context.column(name, np.float64, np.nan)
        self.context.column("curfew_start", np.int16, -1)
        self.context.column("curfew_end", np.int16, -1)
        self.context.column("tz", np.int32, 0)
        for spec in MODEL_SPECS.values():
            kind, n = spec.kind, len(spec.inputs)
            m = n + (spec.ambient == "input")
            for name in ("model", "enveloped", "above_ambient", "ambient_input"):
                self.context.column(f"{kind}:{name}", bool, False)
            for name in ("intercept", "median", "spread", "envelope", "jitter"):
                self.context.column(f"{kind}:{name}", np.float64, np.nan)
            for name in ("coef", "mean", "scale"):
                self.context.column(f"{kind}:{name}", np.float64, np.nan, (m,))
            self.context.column(f"{kind}:precision", np.float64, 0.0, (n, n))
        # The load averages every model rule judges by (diagnostics.models.update_features): the same
        # for each, so kept and advanced once.
        self.load = _Columns(self.capacity)
        self.load.column("load_t", np.float64, np.nan)
        self.load.column("load_since", np.float64, np.nan)
        for j in range(len(_EWMA)):
            self.load.column(f"ewma{j}", np.float64, np.nan)
        self._load_step: tuple[_Step, list[np.ndarray]] | None = None
        self.rules = [RULE_COLUMNS[type(rule)](rule, position, self) for position, rule in enumerate(rulebook.rules)]
        self.offline = [r for r in self.rules if isinstance(r, _OfflineColumns)]
        self.model_rules = [r for r in self.rules if isinstance(r, _ModelResidualColumns)]
        self.ids: list[str | None] = [None] * self.capacity
        self.ctxs: list[EquipmentContext | None] = [None] * self.capacity
        self.free = list(range(self.capacity - 1, -1, -1))
        self.diagnosed: dict[int, dict[str, list]] = {}  # slot -> "rule|code" -> [top cause, ranked at µs, version]
        self._statistics_columns = [(channel, f"born{c}", f"mean{c}", f"now{c}", f"diff2{c}")
                                    for c, channel in enumerate(evidence.TRACKED)]
        self.clock = 1

    # --- slots ---

    def allocate(self, ctxs: Sequence[EquipmentContext]) -> np.ndarray:
        """Slots for new machines, with their contexts set."""
        while len(self.free) < len(ctxs):
            capacity = self.capacity * 2
            for columns in (self.engine, self.evidence, self.context, self.load, *self.rules):
                columns.grow(capacity)
            self.ids += [None] * (capacity - self.capacity)
            self.ctxs += [None] * (capacity - self.capacity)
            self.free = list(range(capacity - 1, self.capacity - 1, -1)) + self.free
            self.capacity = capacity
        slots = [self.free.pop() for _ in ctxs]
        for slot, ctx in zip(slots, ctxs, strict=True):
            self.ids[slot] = ctx.equipment_id
        slots_array = np.array(slots, dtype=np.int64)
        self.set_contexts(slots_array, ctxs)
        return slots_array

    def release(self, slot: int) -> None:
        for columns in (self.engine, self.evidence, self.context, self.load):
            columns.reset(slot)
        for rule in self.rules:
            rule.forget(slot)
        self.diagnosed.pop(slot, None)
        self.ids[slot] = None
        self.ctxs[slot] = None
        self.free.append(slot)

    def set_contexts(self, slots: np.ndarray, ctxs: Sequence[EquipmentContext]) -> None:
        c = self.context.a
        for slot, ctx in zip(slots.tolist(), ctxs, strict=True):
            self.ctxs[slot] = ctx
        sites = [ctx.site for ctx in ctxs]
        c["site_lat"][slots] = [site.lat if site else np.nan for site in sites]
        c["site_lon"][slots] = [site.lon if site else np.nan for site in sites]
        c["site_radius"][slots] = [site.radius_m if site else np.nan for site in sites]
        hours = [site.permitted_hours if site else None for site in sites]
        c["curfew_start"][slots] = [h[0] if h is not None else -1 for h in hours]
        c["curfew_end"][slots] = [h[1] if h is not None else -1 for h in hours]
        c["tz"][slots] = [_tz_index(site.timezone) if site and h is not None else 0
                          for site, h in zip(sites, hours, strict=True)]
        c["service_hours"][slots] = [np.nan if ctx.last_service_hours is None else ctx.last_service_hours
                                     for ctx in ctxs]
        for kind in MODEL_SPECS:
            models = [ctx.models.get(kind) for ctx in ctxs]
            c[f"{kind}:model"][slots] = [model is not None for model in models]
            # Machines mostly share their equipment model's models: set each distinct one at once.
            sharing: dict[int, tuple[Any, list[int]]] = {}
            for slot, model in zip(slots.tolist(), models, strict=True):
                if model is not None:
                    sharing.setdefault(id(model), (model, []))[1].append(slot)
            for model, members in sharing.values():
                c[f"{kind}:coef"][members] = model.coef
                c[f"{kind}:intercept"][members] = model.intercept
                c[f"{kind}:mean"][members] = model.mean
                c[f"{kind}:scale"][members] = model.scale
                c[f"{kind}:median"][members] = model.residual_median
                c[f"{kind}:spread"][members] = model.residual_spread
                c[f"{kind}:jitter"][members] = model.jitter
                c[f"{kind}:enveloped"][members] = bool(model.precision)
                c[f"{kind}:above_ambient"][members] = model.above_ambient
                c[f"{kind}:ambient_input"][members] = model.ambient_input
                c[f"{kind}:precision"][members] = model.precision if model.precision else 0.0
                c[f"{kind}:envelope"][members] = model.envelope_d2

    def load_features(self, step: _Step) -> list[np.ndarray]:
        """diagnostics.models.update_features over a step: the load averages after it (advanced once
        per step, whichever model rule asks first)."""
        if self._load_step is not None and self._load_step[0] is step:
            return self._load_step[1]
        a, slots, now = self.load.a, step.slots, step.t
        last = a["load_t"][slots]
        restart = np.isnan(last) | (now - last > MAX_GAP_S)
        last = np.where(restart, now, last)
        load_since = np.where(restart, now, a["load_since"][slots])
        dt = np.maximum(0.0, now - last)
        a["load_t"][slots] = now
        a["load_since"][slots] = load_since
        decay = {tau: 1 - np.exp(-dt / tau) for tau in TIME_CONSTANTS_S}
        features = []
        any_restart = restart.any()
        working, travelling = operating_mode(step.v("hydraulic_pressure_bar"), step.v("speed_kmh"))
        signals = {"working": working, "travelling": travelling}
        for j, (signal, tau) in enumerate(_EWMA):
            column = a[f"ewma{j}"]
            previous = column[slots]
            if any_restart:
                previous = np.where(restart, np.nan, previous)
            value = signals[signal] if signal in signals else step.v(signal)
            average = np.where(np.isnan(previous), value, previous + decay[tau] * (value - previous))
            average = np.where(np.isnan(value), previous, average)
            column[slots] = average
            features.append(average)
        self._load_step = (step, features)
        return features

    def load_state_of(self, slot: int) -> dict[str, Any]:
        """The ``load`` entry of a model rule's state (each holds the same one)."""
        a = self.load.a
        if np.isnan(a["load_t"][slot]):
            return {}
        averages = {_FEATURES[j]: float(a[f"ewma{j}"][slot]) for j in range(len(_EWMA))
                    if not np.isnan(a[f"ewma{j}"][slot])}
        return {"load": {"t": float(a["load_t"][slot]), "since": float(a["load_since"][slot]), "ewma": averages}}

    def load_load_state(self, slot: int, load: dict[str, Any]) -> None:
        a = self.load.a
        a["load_t"][slot] = load.get("t", np.nan)
        a["load_since"][slot] = load.get("since", np.nan)
        averages = load.get("ewma") or {}
        for j, name in enumerate(_FEATURES):
            a[f"ewma{j}"][slot] = averages.get(name, np.nan)



    # --- evaluation ---

    def evaluate(self, step: _Step, out: list[tuple[int, str, FaultChange]]) -> None:
        self._update_evidence(step)
        events: list[Event] = []
        for rule in self.rules:
            rule.evaluate(step, events)
        self.engine.a["last_us"][step.slots] = step.t_us
        due = self.engine.a["refresh_due"][step.slots] <= step.t_us
        if events or due.any():
            self._settle(events, step.slots[due], step.rows[due], step.t_us[due], out)

    def tick(self, now_us: int, out: list[tuple[int, str, FaultChange]]) -> None:
        slots = np.flatnonzero(self.engine.a["last_arrival"] != NO_TIME)
        if not len(slots):
            return
        events: list[Event] = []
        for rule in self.offline:
            rule.tick(slots, now_us, events)
        due = slots[self.engine.a["refresh_due"][slots] <= now_us]
        if events or len(due):
            self._settle(events, due, np.full(len(due), -1), np.full(len(due), now_us), out, now_us)

    def _settle(self, events: list[Event], due_slots: np.ndarray, due_rows: np.ndarray, due_t_us: np.ndarray,
                out: list[tuple[int, str, FaultChange]], tick_us: int | None = None) -> None:
        """Attach the diagnosis to raised faults and re-rank open faults' causes: EquipmentEngine._track."""
        by_slot: dict[int, tuple[int, int, list[FaultChange]]] = {}
        for slot, row, t_us in zip(due_slots.tolist(), due_rows.tolist(), due_t_us.tolist(), strict=True):
            by_slot[slot] = (row, t_us, [])
        for row, _, slot, change in sorted(events, key=operator.itemgetter(2, 1)):
            entry = by_slot.get(slot)
            if entry is None:
                now_us = tick_us if tick_us is not None else int(self.engine.a["last_us"][slot])
                entry = by_slot[slot] = (row, now_us, [])
            entry[2].append(change)
        for slot, (row, now_us, changes) in by_slot.items():
            eid = self.ids[slot]
            if eid is None:  # never: a slot's faults change only while it holds a machine
                raise RuntimeError(f"fault changes in slot {slot}, which holds no machine")
            stats = None
            for k, change in enumerate(changes):
                if change.kind == "raised":
                    stats = stats if stats is not None else self.statistics(slot)
                    changes[k] = replace(change, diagnosis=diagnosis(change.fault_code, stats))
            for change in self._track(slot, changes, now_us, stats):
                out.append((row, eid, change))

    def _track(self, slot: int, changes: list[FaultChange], now_us: int, stats: dict | None) -> list[FaultChange]:
        entries = self.diagnosed.setdefault(slot, {})
        fresh = set()
        for change in changes:
            key = f"{change.rule}|{change.fault_code}"
            if change.kind == "raised" and change.diagnosis:
                causes = change.diagnosis["causes"]
                entries[key] = [causes[0]["id"] if causes else None, now_us, change.rule_version]
                fresh.add(key)
            elif change.kind == "cleared":
                entries.pop(key, None)
        for key, entry in entries.items():
            if key in fresh or now_us - entry[1] < REFRESH_US:
                continue
            entry[1] = now_us
            rule, code = key.split("|", 1)
            fixed, top = _fixed_top(code)
            if fixed and top == entry[0]:
                continue
            stats = stats if stats is not None else self.statistics(slot)
            top = top_cause(code, stats)
            if top != entry[0]:
                entry[0] = top
                current = diagnosis(code, stats)
                changes.append(FaultChange("updated", code, "", _dt(now_us), {}, rule, entry[2], current))
        self._schedule_refresh(slot)
        return changes

    def _schedule_refresh(self, slot: int) -> None:
        entries = self.diagnosed.get(slot)
        if entries:
            self.engine.a["refresh_due"][slot] = min(entry[1] for entry in entries.values()) + REFRESH_US
        else:
            self.diagnosed.pop(slot, None)
            self.engine.a["refresh_due"][slot] = NEVER

    def _update_evidence(self, step: _Step) -> None:
        """diagnostics.evidence.update over a step."""
        a, slots, t = self.evidence.a, step.slots, step.t
        stamp = self.clock * 8
        self.clock += 1
        for c, channel in enumerate(evidence.TRACKED):
            value = step.v(channel)
            ok = ~np.isnan(value)
            if channel == "hydraulic_pressure_bar":  # evidence._gate_open: tracked while working only
                ok &= step.v("engine_rpm") > FULL_LOAD_RPM
            born = a[f"born{c}"]
            if not ok.all():
                a[f"prev{c}"][slots[~ok]] = np.nan  # the next difference would span a gap or a mode change
                if not ok.any():
                    continue
                index = np.flatnonzero(ok)
                s, v, now = slots[index], value[index], t[index]
            else:
                s, v, now = slots, value, t
            exists = born[s] >= 0
            dt = np.maximum(0.0, now - a[f"t{c}"][s])
            mean, level = a[f"mean{c}"][s], a[f"now{c}"][s]
            a[f"mean{c}"][s] = np.where(exists, mean + _alpha(dt, evidence.MEAN_TIME_CONSTANT_S) * (v - mean), v)
            a[f"now{c}"][s] = np.where(exists, level + _alpha(dt, evidence.NOW_TIME_CONSTANT_S) * (v - level), v)
            previous, diff2_old = a[f"prev{c}"][s], a[f"diff2{c}"][s]
            jitter = exists & ~np.isnan(previous) & (dt <= evidence.MAX_STEP_S)
            if jitter.any():
                diff2 = (v - previous) ** 2
                first = np.minimum(diff2, evidence.JITTER_FLOOR_SQ)
                capped = np.minimum(diff2, np.maximum(diff2_old * evidence.JITTER_STEP_CAP, evidence.JITTER_FLOOR_SQ))
                later = diff2_old + _alpha(dt, evidence.JITTER_TIME_CONSTANT_S) * (capped - diff2_old)
                a[f"diff2{c}"][s] = np.where(jitter, np.where(np.isnan(diff2_old), first, later), diff2_old)
            a[f"prev{c}"][s] = v
            a[f"t{c}"][s] = now
            if not exists.all():
                born[s[~exists]] = stamp + c

    def _channels_seen(self, slot: int) -> list[int]:
        """The tracked channels the slot has evidence of, in the order they were first seen."""
        born = [(int(self.evidence.a[f"born{c}"][slot]), c) for c in range(len(evidence.TRACKED))]
        return [c for stamp, c in sorted(born) if stamp >= 0]

    def statistics(self, slot: int) -> dict[str, float]:
        """EquipmentEngine.statistics of one slot: the evidence and what its models say."""
        a = self.evidence.a
        seen = []
        for c, (channel, born, mean_column, now_column, diff2_column) in enumerate(self._statistics_columns):
            stamp = int(a[born][slot])
            if stamp >= 0:
                seen.append((stamp, c, channel, float(a[mean_column][slot]), float(a[now_column][slot]),
                             float(a[diff2_column][slot])))
        stats: dict[str, float] = {}
        for _, _, channel, mean, now, diff2 in sorted(seen):
            stats[channel + ".mean"] = round(mean, 3)
            stats[channel + ".now"] = round(now, 3)
            stats[channel + ".rise"] = round(now - mean, 3)
            if diff2 == diff2:  # not NaN (None in the reference)
                stats[channel + ".jitter"] = round(math.sqrt(diff2 / 2.0), 3)
        for rule in self.model_rules:  # EquipmentEngine.statistics
            stats.update(rule.statistics(slot))
        return stats

    # --- state in EquipmentEngine's format ---

    def state_of(self, slot: int) -> dict[str, Any]:
        a, ev = self.engine.a, self.evidence.a
        rules = {}
        for rule in self.rules:
            state = rule.state_of(slot)
            if state:
                rules[rule.rule.key] = state
        evidence_state = {}
        for c in self._channels_seen(slot):
            fields: dict[str, float | None] = {}
            for name in _EVIDENCE_FIELDS:
                value = float(ev[f"{name}{c}"][slot])
                fields[name] = None if name in ("diff2", "prev") and math.isnan(value) else value
            evidence_state[evidence.TRACKED[c]] = fields
        last, arrival = int(a["last_us"][slot]), int(a["last_arrival"][slot])
        return {
            "rules": rules,
            "evidence": evidence_state,
            "last_ts": _iso(last) if last != NO_TIME else None,
            "last_arrival": _iso(arrival) if arrival != NO_TIME else None,
            "rulebook_version": self.rulebook.version,
            "diagnosed": {key: {"top": top, "at": _iso(at), "version": version}
                          for key, (top, at, version) in self.diagnosed.get(slot, {}).items()},
        }

    def load_state(self, slot: int, state: dict[str, Any]) -> None:
        rules = state.get("rules") or {}
        for rule in self.rules:
            rule.load_state(slot, rules.get(rule.rule.key) or {})
        self.load_load_state(slot, saved_load(rules) or {})
        ev = self.evidence.a
        for order, (channel, fields) in enumerate((state.get("evidence") or {}).items()):
            if channel not in evidence.TRACKED:
                continue
            c = evidence.TRACKED.index(channel)
            ev[f"born{c}"][slot] = order
            for name in _EVIDENCE_FIELDS:
                value = fields.get(name, fields["mean"] if name == "now" else None)
                ev[f"{name}{c}"][slot] = np.nan if value is None else value
        a = self.engine.a
        a["last_us"][slot] = _us(state["last_ts"]) if state.get("last_ts") else NO_TIME
        a["last_arrival"][slot] = _us(state["last_arrival"]) if state.get("last_arrival") else NO_TIME
        self.load_diagnosed(slot, {key: [entry["top"], _us(entry["at"]), entry["version"]]
                                   for key, entry in (state.get("diagnosed") or {}).items()})

    def load_diagnosed(self, slot: int, entries: dict[str, list]) -> None:
        """Set the slot's open diagnosed faults: "rule|code" -> [top cause, ranked at µs, version] (taken as is)."""
        if entries:
            self.diagnosed[slot] = entries
        else:
            self.diagnosed.pop(slot, None)
        self._schedule_refresh(slot)


# --- checkpoints ----------------------------------------------------------------------------------


def _pack(prefix: str, columns: Iterable[tuple[str, np.ndarray, Any]], arrays: dict[str, np.ndarray]
          ) -> dict[str, Any]:
    """Columns of one dtype together: those mostly set as one (machines × columns) block, the others
    as the indices and values of their slots that differ from the fill. Returns the layout (for JSON)."""
    dense: dict[str, list[tuple[str, np.ndarray]]] = {}
    sparse: dict[str, list[tuple[str, np.ndarray, np.ndarray]]] = {}
    for name, column, fill in columns:
        differs = ~np.isnan(column) if isinstance(fill, float) and math.isnan(fill) else column != fill
        count = int(np.count_nonzero(differs))
        if count * 3 >= len(column) * 2:
            dense.setdefault(column.dtype.name, []).append((name, column))
        elif count:
            sparse.setdefault(column.dtype.name, []).append((name, np.flatnonzero(differs), column[differs]))
    layout: dict[str, Any] = {"dense": {}, "sparse": {}}
    for dtype, parts in dense.items():
        arrays[f"{prefix}.{dtype}.dense"] = np.stack([column for _, column in parts], axis=1)
        layout["dense"][dtype] = [name for name, _ in parts]
    for dtype, sparse_parts in sparse.items():
        arrays[f"{prefix}.{dtype}.index"] = np.concatenate([index for _, index, _ in sparse_parts]).astype(np.int32)
        arrays[f"{prefix}.{dtype}.values"] = np.concatenate([values for _, _, values in sparse_parts])
        layout["sparse"][dtype] = [[name, len(index)] for name, index, _ in sparse_parts]
    return layout


def _writer(index: slice | np.ndarray, values: np.ndarray) -> Callable[[np.ndarray], None]:
    """A function that writes ``values`` at ``index`` of its target column."""
    def write(target: np.ndarray) -> None:
        target[index] = values
    return write


def _unpack(prefix: str, layout: dict[str, Any], npz: Any) -> dict[str, Callable[[np.ndarray], None]]:
    """For each stored column, a function that writes it into a column of the machines' rows."""
    writers: dict[str, Callable[[np.ndarray], None]] = {}
    for dtype, names in layout["dense"].items():
        block = npz[f"{prefix}.{dtype}.dense"]
        for j, name in enumerate(names):
            writers[name] = _writer(slice(None), block[:, j])
    for dtype, entries in layout["sparse"].items():
        index, values = npz[f"{prefix}.{dtype}.index"], npz[f"{prefix}.{dtype}.values"]
        start = 0
        for name, count in entries:
            end = start + count
            writers[name] = _writer(index[start:end], values[start:end])
            start = end
    return writers


class ShardEngine:
    """Many machines' diagnosis, evaluated over numpy columns; equivalent to one EquipmentEngine per machine."""

    def __init__(self, rulebook_for: Callable[[str], Rulebook] = default_rulebook_for) -> None:
        self._rulebook_for = rulebook_for
        self._groups: list[_Group] = []
        self._group_of_rules: dict[Any, _Group] = {}
        self._group_of_model: dict[str, _Group] = {}
        # Where each machine is: group index << 32 | slot (an int, so a batch of ids is looked up at C speed).
        self._where: dict[str, int] = {}

    def __contains__(self, equipment_id: str) -> bool:
        return equipment_id in self._where

    def __len__(self) -> int:
        return len(self._where)

    def _group(self, model: str) -> _Group:
        group = self._group_of_model.get(model)
        if group is None:
            rulebook = self._rulebook_for(model)
            # Models whose rulebooks hold the same rules (EX210, TC500, unknown models) share columns.
            key = (rulebook.rules, rulebook.version)
            group = self._group_of_rules.get(key)
            if group is None:
                group = _Group(rulebook, len(self._groups))
                self._groups.append(group)
                self._group_of_rules[key] = group
            self._group_of_model[model] = group
        return group

    def _locate(self, equipment_id: str) -> tuple[_Group, int]:
        try:
            where = self._where[equipment_id]
        except KeyError:
            raise KeyError(f"equipment {equipment_id!r} is not in this ShardEngine (add() it first)") from None
        return self._groups[where >> 32], where & 0xFFFFFFFF

    def add(self, ctx: EquipmentContext, state: dict[str, Any] | None = None) -> None:
        """A machine joins, fresh or with an EquipmentEngine.state() dict."""
        if ctx.equipment_id in self._where:
            raise ValueError(f"equipment {ctx.equipment_id!r} is already in this ShardEngine")
        group = self._group(ctx.model)
        slot = int(group.allocate([ctx])[0])
        self._where[ctx.equipment_id] = group.index << 32 | slot
        if state:
            try:
                group.load_state(slot, state)
            except Exception:
                self.remove([ctx.equipment_id])
                raise

    def set_context(self, ctx: EquipmentContext) -> None:
        group, slot = self._locate(ctx.equipment_id)
        if self._group(ctx.model) is group:
            group.set_contexts(np.array([slot]), [ctx])
            return
        # Another rulebook: its state carries over by rule key, as EquipmentEngine(new rulebook, ctx, state) does.
        state = group.state_of(slot)
        self.remove([ctx.equipment_id])
        self.add(ctx, state)

    def remove(self, equipment_ids: Iterable[str]) -> None:
        for equipment_id in equipment_ids:
            group, slot = self._locate(equipment_id)
            group.release(slot)
            del self._where[equipment_id]

    def _codes(self, equipment_ids: list[str]) -> np.ndarray:
        """Group index << 32 | slot of each machine (a KeyError names the first unknown one)."""
        if len(equipment_ids) == 1:
            group, slot = self._locate(equipment_ids[0])
            return np.array([group.index << 32 | slot], dtype=np.int64)
        try:
            found = operator.itemgetter(*equipment_ids)(self._where) if equipment_ids else ()
        except KeyError:
            self._locate(next(e for e in equipment_ids if e not in self._where))
            raise
        return np.fromiter(found, dtype=np.int64, count=len(equipment_ids))

    def last_ts(self, equipment_ids: Sequence[str]) -> np.ndarray:
        codes = self._codes(list(equipment_ids))
        result = np.full(len(codes), np.nan)
        for g in np.unique(codes >> 32).tolist():
            mine = (codes >> 32) == g
            last = self._groups[g].engine.a["last_us"][codes[mine] & 0xFFFFFFFF]
            result[mine] = np.where(last == NO_TIME, np.nan, last / 1e6)
        return result

    def state(self, equipment_id: str) -> dict[str, Any]:
        group, slot = self._locate(equipment_id)
        return group.state_of(slot)

    # --- evaluation ---

    def feed(self, equipment_ids: Sequence[str], ts: np.ndarray, values: dict[str, np.ndarray],
             fault_codes: dict[int, tuple[tuple[int, int, int], ...]] | None = None,
             arrived_at: np.ndarray | None = None) -> tuple[list[tuple[str, FaultChange]], np.ndarray]:
        """Evaluate rows sorted by (equipment id, ts). Returns the changes (per machine in time order) and
        the indices of the late rows (not newer than what the machine's engine has already seen).

        ``ts`` and ``arrived_at`` are read to the microsecond (as ``datetime.timestamp()`` gives them)."""
        ts = np.asarray(ts, dtype=np.float64)
        # Narrower columns would change the arithmetic: every rule computes in float64 as Python does.
        values = {c: np.asarray(v, dtype=np.float64) for c, v in values.items()}
        n = len(ts)
        if n == 0:
            return [], np.empty(0, dtype=np.int64)
        t_us = np.rint(ts * 1e6).astype(np.int64)
        ids = equipment_ids if isinstance(equipment_ids, np.ndarray) else np.asarray(equipment_ids)
        if len(ids) != n:
            raise ValueError(f"{len(ids)} equipment ids for {n} timestamps")
        same_run = ids[1:] == ids[:-1]
        starts = np.concatenate(([0], np.flatnonzero(~same_run) + 1))
        run_ids = ids[starts].tolist()
        where = self._codes(run_ids)
        if len(set(run_ids)) != len(run_ids):
            raise ValueError("rows must be sorted by equipment id")
        if np.any(same_run & (t_us[1:] < t_us[:-1])):
            raise ValueError("rows of a machine must be sorted by ts")
        lengths = np.diff(np.append(starts, n))
        run_of_row = np.repeat(np.arange(len(starts)), lengths)
        row_group = (where >> 32)[run_of_row]
        row_slot = (where & 0xFFFFFFFF)[run_of_row]
        late = np.zeros(n, dtype=bool)
        late[1:] = same_run & (t_us[1:] == t_us[:-1])  # a second reading at the same time
        arrival_us = None
        if arrived_at is not None:
            arrived_at = np.asarray(arrived_at, dtype=np.float64)
            arrival_us = np.where(np.isnan(arrived_at), NO_TIME, np.rint(np.nan_to_num(arrived_at) * 1e6))
            arrival_us = np.maximum.reduceat(arrival_us.astype(np.int64), starts)
        has_codes = None
        if fault_codes:
            has_codes = np.zeros(n, dtype=bool)
            has_codes[[row for row, codes in fault_codes.items() if codes]] = True
        groups = np.unique(where >> 32)
        out: list[tuple[int, str, FaultChange]] = []
        with np.errstate(invalid="ignore", over="ignore"):
            for g in groups.tolist():
                group = self._groups[g]
                if len(groups) == 1:
                    rows = np.arange(n)
                    run_slots = where & 0xFFFFFFFF
                    runs = slice(None)
                else:
                    runs = (where >> 32) == g
                    rows = np.flatnonzero(row_group == g)
                    run_slots = where[runs] & 0xFFFFFFFF
                slots = row_slot[rows]
                late[rows] |= t_us[rows] <= group.engine.a["last_us"][slots]
                if arrival_us is not None:
                    last_arrival = group.engine.a["last_arrival"]
                    last_arrival[run_slots] = np.maximum(last_arrival[run_slots], arrival_us[runs])
                rows = rows[~late[rows]]
                if not len(rows):
                    continue
                self._evaluate_group(group, rows, row_slot[rows], run_of_row[rows], t_us, values, fault_codes,
                                     has_codes, out)
        out.sort(key=operator.itemgetter(0))
        return [(eid, change) for _, eid, change in out], np.flatnonzero(late)

    def _evaluate_group(self, group: _Group, rows: np.ndarray, slots: np.ndarray, runs: np.ndarray,
                        t_us: np.ndarray, values: Mapping[str, np.ndarray], fault_codes: Any,
                        has_codes: np.ndarray | None, out: list) -> None:
        """The k-th reading of every machine, for k = 0, 1, …: each step is vectorised over machines."""
        position = np.arange(len(rows))
        first = np.ones(len(rows), dtype=bool)
        first[1:] = runs[1:] != runs[:-1]
        rank = position - np.maximum.accumulate(np.where(first, position, 0))
        steps: Iterable[tuple[np.ndarray, np.ndarray]]
        if not rank.any():
            steps = [(rows, slots)]
        else:
            order = np.argsort(rank, kind="stable")
            bounds = np.cumsum(np.bincount(rank))[:-1]
            steps = zip(np.split(rows[order], bounds), np.split(slots[order], bounds), strict=True)
        for step_rows, step_slots in steps:
            step = _Step(step_slots, step_rows, t_us[step_rows], values, fault_codes,
                         None if has_codes is None else has_codes[step_rows])
            group.evaluate(step, out)

    def tick(self, now: float) -> list[tuple[str, FaultChange]]:
        """Time passing without readings: Offline raised for machines silent too long (EquipmentEngine.tick)."""
        now_us = round(now * 1e6)
        out: list[tuple[int, str, FaultChange]] = []
        with np.errstate(invalid="ignore", over="ignore"):
            for group in self._groups:
                group.tick(now_us, out)
        return [(eid, change) for _, eid, change in out]

    # --- checkpoints ---

    def export(self, equipment_ids: Sequence[str]) -> bytes:
        """A checkpoint of these machines' state (contexts are not included: restore() is given them)."""
        by_group: dict[int, list[tuple[str, int]]] = {}
        for equipment_id in equipment_ids:
            group, slot = self._locate(equipment_id)
            by_group.setdefault(group.index, []).append((equipment_id, slot))
        arrays: dict[str, np.ndarray] = {}
        meta: dict[str, Any] = {"format": FORMAT_VERSION, "groups": []}
        for g, members in by_group.items():
            group = self._groups[g]
            slots = np.array([slot for _, slot in members], dtype=np.int64)
            index = {slot: i for i, (_, slot) in enumerate(members)}
            prefix = f"g{len(meta['groups'])}"
            sparse: dict[str, dict[str, Any]] = {}
            for part, columns in self._parts(group):
                if isinstance(columns, _RuleColumns) and columns.sparse:
                    entries = {str(index[slot]): data for slot, data in columns.sparse.items() if slot in index}
                    if entries:
                        sparse[part] = entries
            diagnosed = {str(index[slot]): data for slot, data in group.diagnosed.items() if slot in index}
            if diagnosed:
                sparse["diagnosed"] = diagnosed
            layout = _pack(prefix, ((f"{part}.{name}", columns.a[name][slots], fill)
                                    for part, columns in self._parts(group)
                                    for name, (_, fill, _) in columns.spec.items()), arrays)
            meta["groups"].append({"ids": [eid for eid, _ in members], "columns": layout, "sparse": sparse})
        arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
        buffer = io.BytesIO()
        np.savez(buffer, allow_pickle=False, **arrays)
        return buffer.getvalue()

    @staticmethod
    def _parts(group: _Group) -> list[tuple[str, _Columns]]:
        """The exported column sets of a group, named so that a rule's columns follow its key and kind."""
        parts: list[tuple[str, _Columns]] = [("engine", group.engine), ("evidence", group.evidence),
                                             ("load", group.load)]
        parts += [(f"rule:{r.rule.key}:{type(r.rule).__name__}", r) for r in group.rules]
        return parts

    def restore(self, blob: bytes, contexts: Mapping[str, EquipmentContext]) -> None:
        """Add the machines of a checkpoint, each with its context (which may since have changed: a rule
        of its rulebook that the checkpoint does not hold starts afresh, as in EquipmentEngine)."""
        with np.load(io.BytesIO(blob), allow_pickle=False) as npz:
            meta = json.loads(npz["meta"].tobytes())
            if meta.get("format") != FORMAT_VERSION:
                raise ValueError(f"checkpoint format {meta.get('format')!r}; this ShardEngine reads {FORMAT_VERSION}")
            for g, saved in enumerate(meta["groups"]):
                ids = saved["ids"]
                for equipment_id in ids:
                    if equipment_id in self._where:
                        raise ValueError(f"equipment {equipment_id!r} is already in this ShardEngine")
                    if equipment_id not in contexts:
                        raise KeyError(f"no context given for equipment {equipment_id!r}")
                prefix = f"g{g}"
                n = len(ids)
                targets: dict[int, list[int]] = {}
                for i, equipment_id in enumerate(ids):
                    targets.setdefault(self._group(contexts[equipment_id].model).index, []).append(i)
                writers = _unpack(prefix, saved["columns"], npz)
                for target, members in targets.items():
                    group = self._groups[target]
                    index = np.array(members, dtype=np.int64)
                    slots = group.allocate([contexts[ids[i]] for i in members])
                    slot_of = dict(zip(members, slots.tolist(), strict=True))
                    for i, slot in slot_of.items():
                        self._where[ids[i]] = group.index << 32 | slot
                    for part, columns in self._parts(group):
                        for name, (dtype, fill, _) in columns.spec.items():
                            write = writers.get(f"{part}.{name}")
                            if write is None:
                                continue  # not in the checkpoint (a rule new to the rulebook): fresh
                            column = np.full(n, fill, dtype=dtype)
                            write(column)
                            columns.a[name][slots] = column[index]
                        if isinstance(columns, _RuleColumns):
                            for i, data in saved["sparse"].get(part, {}).items():
                                if int(i) in slot_of:
                                    columns.load_sparse(slot_of[int(i)], data)
                    for i, data in saved["sparse"].get("diagnosed", {}).items():
                        if int(i) in slot_of:
                            group.load_diagnosed(slot_of[int(i)], data)
                    # Channels these machines see from now on must come after the ones they have seen.
                    latest = max(int(group.evidence.a[f"born{c}"][slots].max()) for c in range(len(evidence.TRACKED)))
                    group.clock = max(group.clock, latest // 8 + 1)
