"""Service-vehicle position messages (v1, JSON) on ``<root>/v1/vehicles/<vehicle_id>/position``.

``{"v": 1, "ts": "2026-01-15T09:00:00Z", "lat": 48.1, "lon": 11.5, "speed_kmh": 54.0}``; ``speed_kmh``
is optional. A malformed message raises :class:`core.errors.InvalidTelemetry` with a reason.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypeGuard

import orjson

from core.errors import InvalidTelemetry
from core.inbound import check_json_payload, is_version
from core.telemetry import format_ts, parse_ts
from core.topics import EQUIPMENT_ID_PATTERN, PROTOCOL_VERSION

MAX_POSITION_BYTES = 1024
VEHICLES = "vehicles"
POSITION = "position"


@dataclass(frozen=True, slots=True)
class Position:
    ts: datetime
    lat: float
    lon: float
    speed_kmh: float | None = None


def position_topic(root: str, vehicle_id: str) -> str:
    return f"{root}/{PROTOCOL_VERSION}/{VEHICLES}/{vehicle_id}/{POSITION}"


def position_subscription(root: str) -> str:
    return f"{root}/{PROTOCOL_VERSION}/{VEHICLES}/+/{POSITION}"


def vehicle_id_from_topic(root: str, topic: str) -> str | None:
    parts = topic.split("/")
    if (len(parts) != 5 or parts[0] != root or parts[1] != PROTOCOL_VERSION or parts[2] != VEHICLES
            or parts[4] != POSITION or not EQUIPMENT_ID_PATTERN.match(parts[3])):
        return None
    return parts[3]


def encode_position(position: Position) -> bytes:
    body = {"v": 1, "ts": format_ts(position.ts), "lat": position.lat, "lon": position.lon}
    if position.speed_kmh is not None:
        body["speed_kmh"] = position.speed_kmh
    return json.dumps(body, separators=(",", ":")).encode()


def decode_position(payload: bytes, *, now: datetime, future_tolerance_s: float) -> Position:
    # Size and nesting depth before parsing (core.inbound.check_json_payload); then strict JSON
    # (orjson: UTF-8 only, no NaN or Infinity, no lone surrogates).
    check_json_payload(payload, max_bytes=MAX_POSITION_BYTES)
    try:
        body = orjson.loads(payload)
    except orjson.JSONDecodeError:
        raise InvalidTelemetry("bad_json", payload[:50].decode("utf-8", "replace")) from None
    if not isinstance(body, dict) or not is_version(body.get("v"), 1):
        raise InvalidTelemetry("bad_version", repr(body)[:50])
    ts = parse_ts(body.get("ts"), now + timedelta(seconds=future_tolerance_s))
    lat, lon, speed = body.get("lat"), body.get("lon"), body.get("speed_kmh")
    if not _finite(lat) or not -90 <= lat <= 90 or not _finite(lon) or not -180 <= lon <= 180:
        raise InvalidTelemetry("bad_position", f"lat={lat!r} lon={lon!r}"[:80])
    if speed is not None and (not _finite(speed) or not 0 <= speed <= 300):
        raise InvalidTelemetry("bad_speed", repr(speed)[:50])
    return Position(ts, float(lat), float(lon), None if speed is None else float(speed))


def _finite(value: object) -> TypeGuard[float]:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
