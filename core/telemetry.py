"""Telemetry message v1: the JSON body a controller publishes, its decoding and validation.

The wire format is specified in docs/protocol.md. Decoding never trusts the device: anything
malformed raises :class:`InvalidTelemetry` (whole message) or becomes a :class:`RejectedReading`
(one reading), so that the good readings of a message are kept.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple, TypeGuard

import orjson

from core.errors import InvalidTelemetry
from core.inbound import check_json_payload, is_version

MESSAGE_VERSION = 1
# A store-and-forward upload after a long GPRS outage is split by the controller into messages
# of at most this many readings; more in one message is refused rather than buffered.
MAX_READINGS_PER_MESSAGE = 1000
MAX_PAYLOAD_BYTES = 256 * 1024
MAX_FAULT_CODES_PER_READING = 32
# Controllers whose RTC lost power report 1970; nothing this old is a real reading.
EARLIEST_VALID_TS = datetime(2000, 1, 1, tzinfo=UTC)

# Bounds of what a sensor can physically report. Values outside are broken data, not machine
# faults; values inside but beyond a model's normal range are for diagnostics to judge.
CHANNEL_BOUNDS: dict[str, tuple[float, float]] = {
    "oil_temp_c": (-60.0, 250.0),
    "engine_rpm": (0.0, 5000.0),
    "hydraulic_pressure_bar": (0.0, 1000.0),
    "coolant_temp_c": (-60.0, 200.0),
    "fuel_level_pct": (0.0, 100.0),
    "engine_hours": (0.0, 1_000_000.0),
    "lat": (-90.0, 90.0),
    "lon": (-180.0, 180.0),
    "speed_kmh": (0.0, 300.0),
    # J1939 SPN 171 "Ambient Air Temperature": the coldest and hottest air a machine works in, with room
    # for a sensor in the sun; a reading beyond is a broken sensor, not weather.
    "ambient_temp_c": (-60.0, 70.0),
}
CHANNELS: tuple[str, ...] = tuple(CHANNEL_BOUNDS)
J1939_MAX_SPN = 524287  # 19 bits
J1939_MAX_FMI = 31  # 5 bits
J1939_MAX_OC = 126  # 7 bits; 127 means "not available"
MAX_SEQ = 2**63 - 1  # stored as bigint


@dataclass(frozen=True, slots=True)
class FaultCode:
    """A J1939 DM1 diagnostic trouble code."""

    spn: int
    fmi: int
    oc: int = 0


class Reading(NamedTuple):
    """One time-stamped set of channel values. A named tuple rather than a frozen dataclass: ingest
    builds one per reading, tens of thousands a second, and a tuple is several times cheaper."""

    ts: datetime
    oil_temp_c: float | None = None
    engine_rpm: float | None = None
    hydraulic_pressure_bar: float | None = None
    coolant_temp_c: float | None = None
    fuel_level_pct: float | None = None
    engine_hours: float | None = None
    lat: float | None = None
    lon: float | None = None
    speed_kmh: float | None = None
    ambient_temp_c: float | None = None
    fault_codes: tuple[FaultCode, ...] = ()


@dataclass(frozen=True, slots=True)
class RejectedReading:
    index: int
    reason: str
    detail: str
    raw: Any


@dataclass(frozen=True, slots=True)
class DecodedMessage:
    seq: int
    readings: list[Reading] = field(default_factory=list)
    rejected: list[RejectedReading] = field(default_factory=list)


def format_ts(ts: datetime) -> str:
    return ts.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _reading_to_dict(reading: Reading) -> dict[str, Any]:
    body: dict[str, Any] = {"ts": format_ts(reading.ts)}
    for name in CHANNELS:
        value = getattr(reading, name)
        if value is not None:
            body[name] = value
    if reading.fault_codes:
        body["dtc"] = [{"spn": c.spn, "fmi": c.fmi, "oc": c.oc} for c in reading.fault_codes]
    return body


def encode_message(seq: int, readings: list[Reading]) -> bytes:
    body = {"v": MESSAGE_VERSION, "seq": seq, "readings": [_reading_to_dict(r) for r in readings]}
    return json.dumps(body, separators=(",", ":"), allow_nan=False).encode()


def _reject_nan_constant(name: str) -> float:
    # json.loads accepts NaN/Infinity by default; a device sending them is sending garbage.
    raise ValueError(f"non-finite number {name}")


def _parse_json(payload: bytes) -> Any:
    """orjson first: several times faster on these small documents. What it refuses is read again
    by the standard library, which decides: a number too large for a double, which orjson refuses
    outright, is then one out-of-range reading and the message's other readings are kept. The
    standard library gets text decoded as UTF-8: given bytes, it would also read UTF-16 and UTF-32,
    which the depth check (on the raw bytes) does not see through."""
    try:
        return orjson.loads(payload)
    except orjson.JSONDecodeError:
        return json.loads(payload.decode("utf-8"), parse_constant=_reject_nan_constant)


def decode_message(payload: bytes, *, now: datetime, future_tolerance_s: float) -> DecodedMessage:
    # Size and nesting depth before any parser sees it (core.inbound.check_json_payload).
    check_json_payload(payload, max_bytes=MAX_PAYLOAD_BYTES)
    try:
        body = _parse_json(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidTelemetry("not_json", str(exc)[:200] or type(exc).__name__) from None
    except RecursionError:  # cannot happen after the depth check; kept as the last line of defence
        raise InvalidTelemetry("too_deep", "nesting beyond the interpreter's recursion limit") from None
    if not isinstance(body, dict):
        raise InvalidTelemetry("not_an_object", type(body).__name__)
    if not is_version(body.get("v"), MESSAGE_VERSION):
        raise InvalidTelemetry("unsupported_version", repr(body.get("v"))[:50])
    seq = body.get("seq")
    if not _is_int(seq) or not 0 <= seq <= MAX_SEQ:
        raise InvalidTelemetry("bad_seq", repr(seq)[:50])
    raw_readings = body.get("readings")
    if not isinstance(raw_readings, list) or not raw_readings:
        raise InvalidTelemetry("no_readings", "readings must be a non-empty list")
    if len(raw_readings) > MAX_READINGS_PER_MESSAGE:
        raise InvalidTelemetry("too_many_readings", f"{len(raw_readings)} > {MAX_READINGS_PER_MESSAGE}")

    latest_allowed = now + timedelta(seconds=future_tolerance_s)
    decoded = DecodedMessage(seq=seq)
    for index, raw in enumerate(raw_readings):
        try:
            decoded.readings.append(_parse_reading(raw, latest_allowed))
        except InvalidTelemetry as exc:
            decoded.rejected.append(RejectedReading(index, exc.reason, exc.detail, raw))
    return decoded


def _is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _parse_reading(raw: Any, latest_allowed: datetime) -> Reading:
    if type(raw) is not dict:
        raise InvalidTelemetry("reading_not_an_object", type(raw).__name__)
    ts = parse_ts(raw.get("ts"), latest_allowed)
    values: list[float | None] = []
    for name in CHANNELS:
        value = raw.get(name)
        if value is not None and type(value) is not float:
            if not _is_number(value):
                raise InvalidTelemetry("bad_type", f"{name}={value!r}"[:100])
            try:
                value = float(value)
            except OverflowError:  # an integer too long for a float
                raise InvalidTelemetry("out_of_range", f"{name} has {len(str(value))} digits") from None
        values.append(value)
    check_channels(values)
    # _make: one field per channel from the list (mypy cannot count a starred list against the fields).
    return Reading._make((ts, *values, _parse_fault_codes(raw.get("dtc"))))


_BOUNDS = tuple(CHANNEL_BOUNDS.values())
_LAT, _LON = CHANNELS.index("lat"), CHANNELS.index("lon")


def check_channels(values: list[float | None]) -> None:
    """The checks every codec's readings pass: finite, within physical bounds, a whole position.

    ``values`` holds one entry per channel, in CHANNELS order; None is an absent channel.
    """
    for value, (low, high) in zip(values, _BOUNDS, strict=True):
        if value is not None and not low <= value <= high:  # also true for NaN and the infinities
            _raise_for_first_bad_value(values)
    if values.count(None) == len(values):
        raise InvalidTelemetry("no_channels", "a reading needs at least one channel")
    if (values[_LAT] is None) != (values[_LON] is None):
        raise InvalidTelemetry("half_position", "lat and lon come together")


def _raise_for_first_bad_value(values: list[float | None]) -> None:
    for index, value in enumerate(values):
        low, high = _BOUNDS[index]
        if value is not None and not low <= value <= high:
            if not math.isfinite(value):
                raise InvalidTelemetry("not_finite", CHANNELS[index])
            raise InvalidTelemetry("out_of_range", f"{CHANNELS[index]}={value} not in [{low}, {high}]")


def check_time(ts: datetime, latest_allowed: datetime) -> datetime:
    if ts > latest_allowed:
        raise InvalidTelemetry("ts_in_future", _describe(ts))
    if ts < EARLIEST_VALID_TS:
        raise InvalidTelemetry("ts_too_old", _describe(ts))
    return ts


def _describe(ts: datetime) -> str:
    try:
        return format_ts(ts)
    except OverflowError:  # 9999-12-31T23:59:59-14:00 is after the last instant UTC can write
        return ts.isoformat()


def parse_ts(raw_ts: Any, latest_allowed: datetime) -> datetime:
    if not isinstance(raw_ts, str) or len(raw_ts) > 40:
        raise InvalidTelemetry("bad_ts", repr(raw_ts)[:50])
    try:
        ts = datetime.fromisoformat(raw_ts)
    except ValueError:
        raise InvalidTelemetry("bad_ts", raw_ts) from None
    if ts.tzinfo is None:
        raise InvalidTelemetry("ts_without_timezone", raw_ts)
    return check_time(ts, latest_allowed)


def _parse_fault_codes(raw: Any) -> tuple[FaultCode, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list) or len(raw) > MAX_FAULT_CODES_PER_READING:
        raise InvalidTelemetry("bad_dtc", f"dtc must be a list of at most {MAX_FAULT_CODES_PER_READING} codes")
    codes = []
    for item in raw:
        if not isinstance(item, dict):
            raise InvalidTelemetry("bad_dtc", repr(item)[:50])
        spn, fmi, oc = item.get("spn"), item.get("fmi"), item.get("oc", 0)
        if not (_is_int(spn) and 0 <= spn <= J1939_MAX_SPN and _is_int(fmi) and 0 <= fmi <= J1939_MAX_FMI
                and _is_int(oc) and 0 <= oc <= J1939_MAX_OC):
            raise InvalidTelemetry("bad_dtc", repr(item)[:80])
        codes.append(FaultCode(spn, fmi, oc))
    return tuple(codes)
