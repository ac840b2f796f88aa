"""The compact binary codec: the same content and the same validation as JSON, in far fewer bytes."""

import struct
from datetime import UTC, datetime, timedelta

import pytest

from core.errors import InvalidTelemetry
from core.telemetry import FaultCode, Reading, encode_message
from core.telemetry_binary import decode_binary, encode_binary

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def reading(seconds_ago: float, **overrides) -> Reading:
    values = dict(oil_temp_c=86.43, engine_rpm=1812.5, hydraulic_pressure_bar=243.1, coolant_temp_c=84.2,
                  fuel_level_pct=61.35, engine_hours=2210.417, lat=51.949011, lon=4.142035, speed_kmh=12.3)
    return Reading(ts=NOW - timedelta(seconds=seconds_ago), **{**values, **overrides})


def decode(payload: bytes):
    return decode_binary(payload, now=NOW, future_tolerance_s=300)


def test_round_trip_keeps_every_channel_to_its_resolution_and_the_fault_codes():
    readings = [reading(10 - i) for i in range(9)] + [
        reading(0.5, lat=None, lon=None, speed_kmh=None,
                fault_codes=(FaultCode(175, 0, 3), FaultCode(524287, 31, 126)))]
    decoded = decode(encode_binary(42, readings))
    assert decoded.seq == 42 and decoded.rejected == []
    assert len(decoded.readings) == 10
    for sent, got in zip(readings, decoded.readings, strict=True):
        assert got.ts == sent.ts
        assert got.fault_codes == sent.fault_codes
        for name, step in (("oil_temp_c", 0.01), ("engine_hours", 0.001), ("lat", 1e-7), ("engine_rpm", 0.1)):
            sent_value = getattr(sent, name)
            assert (getattr(got, name) is None) if sent_value is None else getattr(got, name) == pytest.approx(
                sent_value, abs=step)


def test_binary_is_several_times_smaller_than_json():
    readings = [reading(10 - i) for i in range(10)]
    assert len(encode_binary(1, readings)) * 6 < len(encode_message(1, readings))


def test_readings_out_of_order_in_one_message_keep_their_times():
    readings = [reading(5), reading(20), reading(1)]  # a negative delta in the middle
    assert [r.ts for r in decode(encode_binary(1, readings)).readings] == [r.ts for r in readings]


@pytest.mark.parametrize("payload, reason", [
    (b"\x02\x01\x01" + b"\x00" * 8, "unsupported_version"),
    (b"\x01\x01\x00" + b"\x00" * 8, "no_readings"),
    (b"\x01\x01\x01\x00", "bad_binary"),  # truncated inside the base time
    (b"\x01" + b"\xff" * 12, "bad_binary"),  # a varint that never ends
    (b"x" * (256 * 1024 + 1), "payload_too_large"),
])
def test_whole_message_refusals(payload, reason):
    with pytest.raises(InvalidTelemetry) as error:
        decode(payload)
    assert error.value.reason == reason


def test_trailing_bytes_are_refused():
    with pytest.raises(InvalidTelemetry) as error:
        decode(encode_binary(1, [reading(1)]) + b"\x00")
    assert error.value.reason == "bad_binary"


@pytest.mark.parametrize("bad, reason", [
    (reading(-3600), "ts_in_future"),
    (Reading(ts=datetime(1970, 1, 2, tzinfo=UTC), oil_temp_c=20.0), "ts_too_old"),
    (reading(1, oil_temp_c=300.0), "out_of_range"),  # representable in the field, not physical
    (reading(1, fault_codes=(FaultCode(100, 1, 127),)), "bad_dtc"),
])
def test_a_bad_reading_is_rejected_alone(bad, reason):
    decoded = decode(encode_binary(1, [reading(3), bad, reading(2)]))
    assert len(decoded.readings) == 2
    assert [(r.index, r.reason) for r in decoded.rejected] == [(1, reason)]


def test_unknown_presence_bits_reject_the_reading():
    payload = bytearray(encode_binary(1, [Reading(ts=NOW, oil_temp_c=80.0)]))
    mask_at = 1 + 1 + 1 + 8 + 1  # version, seq, count, base time, time delta
    assert struct.unpack(">H", payload[mask_at:mask_at + 2])[0] == 1
    payload[mask_at:mask_at + 2] = struct.pack(">H", 1 | 1 << 12)
    assert decode(bytes(payload)).rejected[0].reason == "bad_binary"
