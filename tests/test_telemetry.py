import json
from datetime import UTC, datetime, timedelta

import pytest

from core import topics
from core.errors import InvalidTelemetry
from core.telemetry import FaultCode, Reading, decode_message, encode_message

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def decode(body) -> object:
    payload = body if isinstance(body, bytes) else json.dumps(body).encode()
    return decode_message(payload, now=NOW, future_tolerance_s=300)


def test_round_trip_keeps_every_channel_and_fault_code():
    reading = Reading(ts=NOW - timedelta(seconds=5), oil_temp_c=88.5, engine_rpm=1800.0,
                      hydraulic_pressure_bar=210.0, coolant_temp_c=84.0, fuel_level_pct=55.5, engine_hours=1234.5,
                      lat=51.9, lon=4.1, speed_kmh=0.0, fault_codes=(FaultCode(175, 0, 3),))
    decoded = decode(encode_message(7, [reading]))
    assert decoded.seq == 7
    assert decoded.readings == [reading]
    assert decoded.rejected == []


@pytest.mark.parametrize("payload, reason", [
    (b"\xff\xfe not json", "not_json"),
    (b"[1, 2, 3]", "not_an_object"),
    ({"v": 2, "seq": 1, "readings": [{"ts": "2026-11-23T11:59:00Z", "oil_temp_c": 80}]}, "unsupported_version"),
    ({"v": 1, "readings": [{"ts": "2026-11-23T11:59:00Z", "oil_temp_c": 80}]}, "bad_seq"),
    ({"v": 1, "seq": True, "readings": [{"ts": "2026-11-23T11:59:00Z", "oil_temp_c": 80}]}, "bad_seq"),
    ({"v": 1, "seq": 1, "readings": []}, "no_readings"),
    ({"v": 1, "seq": 1, "readings": [{"ts": "2026-11-23T11:59:00Z", "oil_temp_c": 1}] * 1001}, "too_many_readings"),
    (b'{"v":1,"seq":1,"readings":[{"ts":"2026-11-23T11:59:00Z","oil_temp_c":NaN}]}', "not_json"),
    (b"x" * (256 * 1024 + 1), "payload_too_large"),
    (b"[" * 100_000 + b"]" * 100_000, "too_deep"),
    (b'{"v":1,"seq":1,"readings":[' + b"[" * 1000 + b"]" * 1000 + b"]}", "too_deep"),
    ({"v": True, "seq": 1, "readings": [{"ts": "2026-11-23T11:59:00Z", "oil_temp_c": 80}]}, "unsupported_version"),
    ({"v": 1.0, "seq": 1, "readings": [{"ts": "2026-11-23T11:59:00Z", "oil_temp_c": 80}]}, "unsupported_version"),
    ("\ufeff{}".encode("utf-16"), "not_json"),
    ({"v": 1, "seq": 2**63, "readings": [{"ts": "2026-11-23T11:59:00Z", "oil_temp_c": 80}]}, "bad_seq"),
])
def test_whole_message_refusals(payload, reason):
    with pytest.raises(InvalidTelemetry) as error:
        decode(payload)
    assert error.value.reason == reason


@pytest.mark.parametrize("reading, reason", [
    ({"oil_temp_c": 80}, "bad_ts"),
    ({"ts": "yesterday", "oil_temp_c": 80}, "bad_ts"),
    ({"ts": "2026-11-23T11:59:00", "oil_temp_c": 80}, "ts_without_timezone"),
    ({"ts": "2026-11-23T12:06:00Z", "oil_temp_c": 80}, "ts_in_future"),
    ({"ts": "1970-01-01T00:00:00Z", "oil_temp_c": 80}, "ts_too_old"),
    # Instants UTC cannot write (an offset past year 9999 or before year 1) are refused, not raised.
    ({"ts": "9999-12-31T23:59:59.999999-14:00", "oil_temp_c": 80}, "ts_in_future"),
    ({"ts": "0001-01-01T00:00:00+14:00", "oil_temp_c": 80}, "ts_too_old"),
    ({"ts": "2026-11-23T11:59:00Z", "oil_temp_c": "hot"}, "bad_type"),
    ({"ts": "2026-11-23T11:59:00Z", "engine_rpm": False}, "bad_type"),
    ({"ts": "2026-11-23T11:59:00Z", "oil_temp_c": 1e9}, "out_of_range"),
    ({"ts": "2026-11-23T11:59:00Z", "oil_temp_c": 10**400}, "out_of_range"),
    ({"ts": "2026-11-23T11:59:00Z"}, "no_channels"),
    ({"ts": "2026-11-23T11:59:00Z", "lat": 51.0}, "half_position"),
    ({"ts": "2026-11-23T11:59:00Z", "oil_temp_c": 80, "dtc": [{"spn": 175, "fmi": 40}]}, "bad_dtc"),
    ("not a reading", "reading_not_an_object"),
])
def test_a_bad_reading_is_rejected_alone(reading, reason):
    good = {"ts": "2026-11-23T11:58:00Z", "oil_temp_c": 80.0}
    decoded = decode({"v": 1, "seq": 3, "readings": [good, reading, good | {"ts": "2026-11-23T11:58:01Z"}]})
    assert [r.oil_temp_c for r in decoded.readings] == [80.0, 80.0]
    assert [(r.index, r.reason) for r in decoded.rejected] == [(1, reason)]


def test_future_tolerance_admits_small_clock_drift():
    decoded = decode({"v": 1, "seq": 1, "readings": [{"ts": "2026-11-23T12:04:00+00:00", "oil_temp_c": 80}]})
    assert len(decoded.readings) == 1


def test_topics_round_trip_and_refuse_foreign_topics():
    topic = topics.telemetry_topic("ironsight", "EX-001")
    assert topic == "ironsight/v1/EX-001/telemetry"
    assert topics.equipment_id_from_topic("ironsight", topic) == "EX-001"
    assert topics.equipment_id_from_topic("ironsight", "other/v1/EX-001/telemetry") is None
    assert topics.equipment_id_from_topic("ironsight", "ironsight/v1/EX 001/telemetry") is None
    assert topics.telemetry_subscription("ironsight", "ingest") == "$share/ingest/ironsight/v1/+/telemetry"
