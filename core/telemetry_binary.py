"""Telemetry message v1, compact binary codec: the same content as the JSON body in ~30 bytes a
reading instead of ~220, for GPRS links where every byte costs. Specified in docs/protocol.md.

Layout (all integers big-endian; "varint" is unsigned LEB128, "zigzag" a signed varint):

    u8      format version (1)
    varint  seq
    varint  number of readings (1 … MAX_READINGS_PER_MESSAGE)
    i64     base time, milliseconds since the Unix epoch (UTC)
    then per reading:
      zigzag  milliseconds from the previous reading's time (the first: from the base time)
      u16     presence mask: bit i set = channel i present (CHANNELS order), bit 15 = fault codes
      per present channel, in CHANNELS order, a scaled integer (see _FIELDS)
      if bit 15: u8 count, then per code u32 = spn << 13 | fmi << 8 | occurrence count
"""

from __future__ import annotations

import functools
import struct
from datetime import UTC, datetime, timedelta
from operator import mul

from core.errors import InvalidTelemetry
from core.telemetry import (
    CHANNELS,
    EARLIEST_VALID_TS,
    MAX_FAULT_CODES_PER_READING,
    MAX_PAYLOAD_BYTES,
    MAX_READINGS_PER_MESSAGE,
    MAX_SEQ,
    DecodedMessage,
    FaultCode,
    Reading,
    RejectedReading,
    check_channels,
    check_time,
)

FORMAT_VERSION = 1
_DTC_BIT = 1 << 15
# Per channel: struct format and the value of one unit.
_FIELDS: dict[str, tuple[str, float]] = {
    "oil_temp_c": (">h", 0.01),
    "engine_rpm": (">H", 0.1),
    "hydraulic_pressure_bar": (">H", 0.1),
    "coolant_temp_c": (">h", 0.01),
    "fuel_level_pct": (">H", 0.01),
    "engine_hours": (">I", 0.001),
    "lat": (">i", 1e-7),
    "lon": (">i", 1e-7),
    "speed_kmh": (">H", 0.1),
    # Added after the first controllers shipped: bit 9 of the presence mask, which their payloads never
    # set, so they decode as before; a decoder older than it refuses the bit (bad_binary).
    "ambient_temp_c": (">h", 0.01),
}
_STRUCTS = {name: struct.Struct(fmt) for name, (fmt, _) in _FIELDS.items()}
_U16, _U32, _I64 = struct.Struct(">H"), struct.Struct(">I"), struct.Struct(">q")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MILLISECOND = timedelta(milliseconds=1)


def varint(value: int) -> bytes:
    """Unsigned LEB128: 7 bits per byte, low group first (also MQTT's variable byte integer)."""
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _epoch_ms(ts: datetime) -> int:
    return round((ts - _EPOCH).total_seconds() * 1000)


def encode_binary(seq: int, readings: list[Reading]) -> bytes:
    base = _epoch_ms(readings[0].ts)
    out = bytearray([FORMAT_VERSION])
    out += varint(seq) + varint(len(readings)) + _I64.pack(base)
    previous = base
    for reading in readings:
        now = _epoch_ms(reading.ts)
        delta = now - previous
        previous = now
        out += varint((delta << 1) ^ (delta >> 63))  # zigzag
        mask = _DTC_BIT if reading.fault_codes else 0
        body = bytearray()
        for bit, name in enumerate(CHANNELS):
            value = getattr(reading, name)
            if value is not None:
                mask |= 1 << bit
                body += _STRUCTS[name].pack(round(value / _FIELDS[name][1]))
        out += _U16.pack(mask) + body
        if reading.fault_codes:
            out.append(len(reading.fault_codes))
            for code in reading.fault_codes:
                out += _U32.pack(code.spn << 13 | code.fmi << 8 | code.oc)
    return bytes(out)


def _varint_at(data: bytes, pos: int) -> tuple[int, int]:
    """The varint starting at ``pos`` and the position after it."""
    try:
        byte = data[pos]
        if not byte & 0x80:
            return byte, pos + 1
        result, shift = byte & 0x7F, 7
        while True:
            pos += 1
            byte = data[pos]
            result |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return result, pos + 1
            shift += 7
            if shift > 63:
                raise InvalidTelemetry("bad_binary", f"varint too long at byte {pos}")
    except IndexError:
        raise InvalidTelemetry("bad_binary", f"truncated at byte {pos}") from None


_CHANNEL_BITS = (1 << len(CHANNELS)) - 1


@functools.cache
def _layout(channel_mask: int) -> tuple[struct.Struct, tuple[int, ...], tuple[float, ...]]:
    """For one set of present channels: one struct for all their values, their indexes and units."""
    present = tuple(i for i in range(len(CHANNELS)) if channel_mask & (1 << i))
    packed = struct.Struct(">" + "".join(_FIELDS[CHANNELS[i]][0].lstrip(">") for i in present))
    return packed, present, tuple(_FIELDS[CHANNELS[i]][1] for i in present)


def decode_binary(payload: bytes, *, now: datetime, future_tolerance_s: float) -> DecodedMessage:
    """Decode and validate like core.telemetry.decode_message: whole-message problems raise,
    a bad reading is rejected alone. A reading that cannot be framed ends the message there."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise InvalidTelemetry("payload_too_large", f"{len(payload)} bytes > {MAX_PAYLOAD_BYTES}")
    if not payload:
        raise InvalidTelemetry("bad_binary", "truncated at byte 0")
    if payload[0] != FORMAT_VERSION:
        raise InvalidTelemetry("unsupported_version", str(payload[0]))
    seq, pos = _varint_at(payload, 1)
    count, pos = _varint_at(payload, pos)
    if seq > MAX_SEQ:
        raise InvalidTelemetry("bad_seq", str(seq))
    if not 1 <= count <= MAX_READINGS_PER_MESSAGE:
        raise InvalidTelemetry("no_readings" if count == 0 else "too_many_readings", str(count))
    end = len(payload)
    if pos + 8 > end:
        raise InvalidTelemetry("bad_binary", f"truncated at byte {pos}")
    at_ms = _I64.unpack_from(payload, pos)[0]
    pos += 8
    latest_allowed_ms = (now - _EPOCH) // _MILLISECOND + round(future_tolerance_s * 1000)
    earliest_ms = (EARLIEST_VALID_TS - _EPOCH) // _MILLISECOND
    decoded = DecodedMessage(seq=seq)
    empty = [None] * len(CHANNELS)
    for index in range(count):
        zigzag, pos = _varint_at(payload, pos)
        at_ms += (zigzag >> 1) ^ -(zigzag & 1)
        if pos + 2 > end:
            raise InvalidTelemetry("bad_binary", f"truncated at byte {pos}")
        mask = _U16.unpack_from(payload, pos)[0]
        pos += 2
        packed, present, units = _layout(mask & _CHANNEL_BITS)
        if pos + packed.size > end:
            raise InvalidTelemetry("bad_binary", f"truncated at byte {pos}")
        if len(present) == len(CHANNELS):  # the common case: every channel reported
            values = list(map(mul, packed.unpack_from(payload, pos), units))
        else:
            values = empty.copy()
            for i, scaled in zip(present, map(mul, packed.unpack_from(payload, pos), units), strict=True):
                values[i] = scaled
        pos += packed.size
        codes: tuple[FaultCode, ...] = ()
        if mask & _DTC_BIT:
            if pos >= end:
                raise InvalidTelemetry("bad_binary", f"truncated at byte {pos}")
            code_count = payload[pos]
            pos += 1
            if pos + 4 * code_count > end:
                raise InvalidTelemetry("bad_binary", f"truncated at byte {pos}")
            words = struct.unpack_from(f">{code_count}I", payload, pos)
            pos += 4 * code_count
            codes = tuple(FaultCode(w >> 13, (w >> 8) & 0x1F, w & 0x7F) for w in words)
        try:
            if mask & ~(_DTC_BIT | _CHANNEL_BITS):
                raise InvalidTelemetry("bad_binary", f"unknown presence bits {mask:#06x}")
            if len(codes) > MAX_FAULT_CODES_PER_READING or any(c.oc == 127 for c in codes):
                raise InvalidTelemetry("bad_dtc", f"{len(codes)} codes")
            if not earliest_ms <= at_ms <= latest_allowed_ms:
                try:
                    check_time(_EPOCH + timedelta(milliseconds=at_ms), now + timedelta(seconds=future_tolerance_s))
                except OverflowError:
                    raise InvalidTelemetry("bad_ts", str(at_ms)) from None
            check_channels(values)
            decoded.readings.append(Reading._make((_EPOCH + _MILLISECOND * at_ms, *values, codes)))
        except InvalidTelemetry as exc:
            named = {name: value for name, value in zip(CHANNELS, values, strict=True) if value is not None}
            decoded.rejected.append(RejectedReading(index, exc.reason, exc.detail,
                                                    {"ts_ms": at_ms, **named, "dtc": [c.__repr__() for c in codes]}))
    if pos != end:
        raise InvalidTelemetry("bad_binary", f"{end - pos} bytes after the last reading")
    return decoded
