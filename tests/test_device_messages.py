"""Device messages besides telemetry: round trips, and every malformed form refused with its reason."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from core.device_messages import (
    Ack,
    Command,
    ProvisioningRequest,
    ProvisioningResponse,
    Status,
    decode_ack,
    decode_command,
    decode_provisioning_request,
    decode_provisioning_response,
    decode_status,
    encode_ack,
    encode_command,
    encode_provisioning_request,
    encode_provisioning_response,
    encode_status,
)
from core.errors import InvalidTelemetry

EXPIRES = datetime(2026, 11, 23, 8, 16, 42, 250000, tzinfo=UTC)


def test_round_trips():
    command = Command("c-1", "set_report_interval", EXPIRES, {"interval_s": 0.5, "duration_s": 600.0})
    assert decode_command(encode_command(command)) == command
    ack = Ack("c-1", "executed", None, {"seq": 7})
    assert decode_ack(encode_ack(ack)) == ack
    status = Status(True, None, "2.1.0", -71.0, 1.0, False)
    assert decode_status(encode_status(status)) == status
    assert decode_status(b'{"v":1,"online":false,"reason":"lost"}') == Status(False, "lost")
    request = ProvisioningRequest("CTL-1", "EX210", "2.1.0")
    assert decode_provisioning_request(encode_provisioning_request(request)) == request
    for response in (ProvisioningResponse(True, "EQ-1", "EQ-1", "pw"), ProvisioningResponse(False, reason="revoked")):
        assert decode_provisioning_response(encode_provisioning_response(response)) == response


@pytest.mark.parametrize(("payload", "reason"), [
    (b"", "not_json"),
    (b"\xff\xfe", "not_json"),
    (b'{"v":1,"id":"a","status":"executed"} x', "not_json"),
    (b'{"v":1,"id":"a","status":"executed","result":{"x":NaN}}', "not_json"),
    (b"[1]", "not_an_object"),
    (b'{"id":"a","status":"executed"}', "unsupported_version"),
    (b'{"v":true,"id":"a","status":"executed"}', "unsupported_version"),
    (b'{"v":2,"id":"a","status":"executed"}', "unsupported_version"),
    (b'{"v":1,"status":"executed"}', "bad_field"),
    (b'{"v":1,"id":"","status":"executed"}', "bad_field"),
    (b'{"v":1,"id":"a","status":"done"}', "bad_field"),
    (b'{"v":1,"id":"a","status":"executed","result":[1]}', "bad_field"),
    (b'{"v":1,"id":"a","status":"executed","detail":"' + b"x" * 300 + b'"}', "bad_field"),
    (b'{"v":1,"id":"a","status":"executed","detail":"' + b"x" * 5000 + b'"}', "payload_too_large"),
    (b'{"v":1.0,"id":"a","status":"executed"}', "unsupported_version"),
    (b'{"v":1,"id":"a","status":"executed","result":' + b"[" * 2000 + b"]" * 2000 + b"}", "too_deep"),
    (b'{"v":1,"id":"a","status":"executed","detail":"\\u0000"}', "bad_field"),
    (b'{"v":1,"id":"\\ud800","status":"executed"}', "not_json"),
])
def test_malformed_acks(payload, reason):
    with pytest.raises(InvalidTelemetry) as refused:
        decode_ack(payload)
    assert refused.value.reason == reason


@pytest.mark.parametrize("payload", [
    b'{"v":1,"online":"yes"}',
    b'{"v":1,"online":true,"signal_dbm":20}',
    b'{"v":1,"online":true,"signal_dbm":true}',
    b'{"v":1,"online":false,"reason":"bored"}',
    b'{"v":1,"online":true,"locked":1}',
])
def test_malformed_statuses(payload):
    with pytest.raises(InvalidTelemetry):
        decode_status(payload)


@pytest.mark.parametrize("payload", [
    b'{"v":1,"id":"a","kind":"self_destruct","expires_at":"2026-11-23T08:00:00Z"}',
    b'{"v":1,"id":"a","kind":"snapshot","expires_at":"2026-11-23T08:00:00"}',
    b'{"v":1,"id":"a","kind":"snapshot","expires_at":"tomorrow"}',
    b'{"v":1,"id":"a","kind":"snapshot","params":{"x":1},"expires_at":"2026-11-23T08:00:00Z"}',
    b'{"v":1,"id":"a","kind":"set_report_interval","params":{"interval_s":0},"expires_at":"2026-11-23T08:00:00Z"}',
])
def test_malformed_commands(payload):
    with pytest.raises(InvalidTelemetry):
        decode_command(payload)


def test_provisioning_request_serial_must_be_a_safe_identifier():
    with pytest.raises(InvalidTelemetry):
        decode_provisioning_request(b'{"v":1,"serial":"a/b","model":"EX210"}')
    with pytest.raises(InvalidTelemetry):
        decode_provisioning_request(b'{"v":1,"serial":"CTL-1"}')


def test_brackets_inside_strings_do_not_count_as_nesting():
    firmware = "[" * 100 + '\\"{' * 30
    status = Status(True, None, firmware[:200], -71.0, 1.0, False)
    assert decode_status(encode_status(status)) == status
