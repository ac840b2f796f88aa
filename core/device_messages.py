"""Device messages besides telemetry: presence status, commands, acknowledgements, provisioning.

Each is a small JSON object with ``"v": 1`` (docs/protocol.md). Decoders never trust the input:
anything malformed raises :class:`core.errors.InvalidTelemetry` with a stable reason code, so the
consumer can count it and dead-letter it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, overload

import orjson

from core.errors import InvalidTelemetry
from core.inbound import check_json_payload, is_version
from core.telemetry import MAX_SEQ
from core.topics import EQUIPMENT_ID_PATTERN

MESSAGE_VERSION = 1
# Device messages other than telemetry are a few hundred bytes; anything much larger is not one of them.
MAX_DEVICE_MESSAGE_BYTES = 4096

COMMAND_KINDS = ("snapshot", "set_report_interval", "lock", "unlock", "resend")
ACK_STATUSES = ("received", "executed", "rejected")
# Bounds of a reporting interval a controller accepts (seconds).
MIN_REPORT_INTERVAL_S = 0.1
MAX_REPORT_INTERVAL_S = 3600.0
MAX_TEXT_CHARS = 200
# A resend names at most this many ranges of message sequence numbers, this many messages in all.
MAX_RESEND_RANGES = 64
MAX_RESEND_MESSAGES = 100_000


def _ts(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _parse_ts(raw: Any, what: str) -> datetime:
    if not isinstance(raw, str) or len(raw) > 40:
        raise InvalidTelemetry("bad_field", f"{what} must be a date-time string")
    try:
        parsed = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError as exc:
        raise InvalidTelemetry("bad_field", f"{what}: {exc}") from None
    if parsed.tzinfo is None:
        raise InvalidTelemetry("bad_field", f"{what} without timezone")
    return parsed


def _load(payload: bytes) -> dict[str, Any]:
    """The message's JSON object. Size and nesting depth are refused before parsing
    (``payload_too_large``, ``too_deep``): the standard library's parser, which this used, raised
    RecursionError on a few KB of brackets, which no caller expected. orjson reads strict JSON only
    (UTF-8; no NaN or Infinity; no lone surrogate in a string)."""
    check_json_payload(payload, max_bytes=MAX_DEVICE_MESSAGE_BYTES)
    try:
        data = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise InvalidTelemetry("not_json", str(exc)[:200]) from None
    if not isinstance(data, dict):
        raise InvalidTelemetry("not_an_object", type(data).__name__)
    if not is_version(data.get("v"), MESSAGE_VERSION):
        raise InvalidTelemetry("unsupported_version", repr(data.get("v"))[:40])
    return data


def _dump(data: dict[str, Any]) -> bytes:
    return json.dumps({"v": MESSAGE_VERSION, **data}, separators=(",", ":")).encode()


@overload
def _text(data: dict[str, Any], key: str, *, required: Literal[True]) -> str: ...
@overload
def _text(data: dict[str, Any], key: str, *, required: bool = False) -> str | None: ...
def _text(data: dict[str, Any], key: str, *, required: bool = False) -> str | None:
    value = data.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value or len(value) > MAX_TEXT_CHARS or "\x00" in value:
        raise InvalidTelemetry("bad_field", f"{key} must be a string of 1-{MAX_TEXT_CHARS} characters, without NUL")
    return value


def _number(data: dict[str, Any], key: str) -> float | None:
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidTelemetry("bad_field", f"{key} must be a number")
    return float(value)


# --- commands (IronSight → controller, <root>/v1/<id>/cmd, QoS 1) ---


@dataclass(frozen=True, slots=True)
class Command:
    id: str
    kind: str
    expires_at: datetime
    params: dict[str, Any] = field(default_factory=dict)


def encode_command(command: Command) -> bytes:
    return _dump({"id": command.id, "kind": command.kind, "params": command.params,
                  "expires_at": _ts(command.expires_at)})


def check_command_params(kind: str, params: dict[str, Any]) -> dict[str, Any]:
    """The parameters a command kind needs, checked; raises ValueError with a readable message."""
    if kind not in COMMAND_KINDS:
        raise ValueError(f"unknown command kind {kind!r}; one of {', '.join(COMMAND_KINDS)}")
    if kind == "set_report_interval":
        interval, duration = _param_number(params, "interval_s"), _param_number(params, "duration_s")
        if not MIN_REPORT_INTERVAL_S <= interval <= MAX_REPORT_INTERVAL_S:
            raise ValueError(f"interval_s must be within {MIN_REPORT_INTERVAL_S}-{MAX_REPORT_INTERVAL_S}")
        if not 0 < duration <= 7 * 86400:
            raise ValueError("duration_s must be within 0-604800 (after it the controller reverts)")
        return {"interval_s": float(interval), "duration_s": float(duration)}
    if kind == "resend":
        return {"ranges": check_resend_ranges(params.get("ranges"))}
    if params:
        raise ValueError(f"{kind} takes no parameters")
    return {}


def check_resend_ranges(ranges: Any) -> list[list[int]]:
    """``[[first, last], …]``: inclusive ranges of sequence numbers, ascending and apart."""
    if not isinstance(ranges, list) or not 0 < len(ranges) <= MAX_RESEND_RANGES:
        raise ValueError(f"resend needs ranges: a list of 1-{MAX_RESEND_RANGES} [first, last] pairs")
    checked: list[list[int]] = []
    for pair in ranges:
        if (not isinstance(pair, list) or len(pair) != 2
                or not all(isinstance(n, int) and not isinstance(n, bool) and 0 <= n <= MAX_SEQ for n in pair)
                or pair[0] > pair[1]):
            raise ValueError("each range is [first, last] with 0 <= first <= last")
        if checked and pair[0] <= checked[-1][1]:
            raise ValueError("ranges must be ascending and must not overlap")
        checked.append([pair[0], pair[1]])
    if sum(last - first + 1 for first, last in checked) > MAX_RESEND_MESSAGES:
        raise ValueError(f"resend asks for at most {MAX_RESEND_MESSAGES} messages")
    return checked


def _param_number(params: dict[str, Any], name: str) -> float:
    value = params.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"set_report_interval needs a number {name}")
    return value


def decode_command(payload: bytes) -> Command:
    data = _load(payload)
    command_id = _text(data, "id", required=True)
    kind = data.get("kind")
    if kind not in COMMAND_KINDS:
        raise InvalidTelemetry("bad_field", f"unknown kind {str(kind)[:40]!r}")
    params = data.get("params", {})
    if not isinstance(params, dict):
        raise InvalidTelemetry("bad_field", "params must be an object")
    try:
        params = check_command_params(kind, params)
    except ValueError as exc:
        raise InvalidTelemetry("bad_field", str(exc)) from None
    return Command(command_id, kind, _parse_ts(data.get("expires_at"), "expires_at"), params)


# --- acknowledgements (controller → IronSight, <root>/v1/<id>/ack, QoS 1) ---


@dataclass(frozen=True, slots=True)
class Ack:
    command_id: str
    status: str  # one of ACK_STATUSES
    detail: str | None = None
    result: dict[str, Any] | None = None


def encode_ack(ack: Ack) -> bytes:
    data: dict[str, Any] = {"id": ack.command_id, "status": ack.status}
    if ack.detail:
        data["detail"] = ack.detail[:MAX_TEXT_CHARS]
    if ack.result:
        data["result"] = ack.result
    return _dump(data)


def decode_ack(payload: bytes) -> Ack:
    data = _load(payload)
    command_id = _text(data, "id", required=True)
    status = data.get("status")
    if status not in ACK_STATUSES:
        raise InvalidTelemetry("bad_field", f"status must be one of {', '.join(ACK_STATUSES)}")
    result = data.get("result")
    if result is not None and not isinstance(result, dict):
        raise InvalidTelemetry("bad_field", "result must be an object")
    return Ack(command_id, status, _text(data, "detail"), result)


# --- presence (controller → IronSight, <root>/v1/<id>/status, QoS 1, retained; also the last will) ---


@dataclass(frozen=True, slots=True)
class Status:
    online: bool
    # "clean" (the controller said goodbye) or "lost" (the broker published its last will); online: None.
    reason: str | None = None
    firmware: str | None = None
    signal_dbm: float | None = None
    report_interval_s: float | None = None
    locked: bool | None = None


STATUS_REASONS = ("clean", "lost")


def encode_status(status: Status) -> bytes:
    data: dict[str, Any] = {"online": status.online}
    for key in ("reason", "firmware", "signal_dbm", "report_interval_s", "locked"):
        value = getattr(status, key)
        if value is not None:
            data[key] = value
    return _dump(data)


def decode_status(payload: bytes) -> Status:
    data = _load(payload)
    online = data.get("online")
    if not isinstance(online, bool):
        raise InvalidTelemetry("bad_field", "online must be true or false")
    reason = data.get("reason")
    if reason is not None and reason not in STATUS_REASONS:
        raise InvalidTelemetry("bad_field", f"reason must be one of {', '.join(STATUS_REASONS)}")
    signal = _number(data, "signal_dbm")
    if signal is not None and not -150 <= signal <= 0:
        raise InvalidTelemetry("bad_field", "signal_dbm must be within -150-0")
    locked = data.get("locked")
    if locked is not None and not isinstance(locked, bool):
        raise InvalidTelemetry("bad_field", "locked must be true or false")
    return Status(online, reason, _text(data, "firmware"), signal, _number(data, "report_interval_s"), locked)


# --- provisioning (<root>/provisioning/<client_id>/request and …/response, QoS 1) ---


@dataclass(frozen=True, slots=True)
class ProvisioningRequest:
    serial: str
    model: str
    firmware: str | None = None


@dataclass(frozen=True, slots=True)
class ProvisioningResponse:
    accepted: bool
    equipment_id: str | None = None
    username: str | None = None
    password: str | None = None
    reason: str | None = None  # when refused


def encode_provisioning_request(request: ProvisioningRequest) -> bytes:
    data: dict[str, Any] = {"serial": request.serial, "model": request.model}
    if request.firmware:
        data["firmware"] = request.firmware
    return _dump(data)


def decode_provisioning_request(payload: bytes) -> ProvisioningRequest:
    data = _load(payload)
    serial = _text(data, "serial", required=True)
    if not EQUIPMENT_ID_PATTERN.match(serial):
        raise InvalidTelemetry("bad_field", "serial must match ^[A-Za-z0-9_.-]{1,64}$")
    return ProvisioningRequest(serial, _text(data, "model", required=True), _text(data, "firmware"))


def encode_provisioning_response(response: ProvisioningResponse) -> bytes:
    if response.accepted:
        return _dump({"status": "accepted", "equipment_id": response.equipment_id,
                      "username": response.username, "password": response.password})
    return _dump({"status": "refused", "reason": response.reason})


def decode_provisioning_response(payload: bytes) -> ProvisioningResponse:
    data = _load(payload)
    if data.get("status") == "accepted":
        return ProvisioningResponse(True, _text(data, "equipment_id", required=True),
                                    _text(data, "username", required=True), _text(data, "password", required=True))
    if data.get("status") == "refused":
        return ProvisioningResponse(False, reason=_text(data, "reason"))
    raise InvalidTelemetry("bad_field", "status must be accepted or refused")


def command_expired(command: Command, now: datetime | None = None) -> bool:
    return (now or datetime.now(UTC)) >= command.expires_at
