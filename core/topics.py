"""MQTT topic names. Every device topic is ``<root>/v1/<equipment_id>/<kind>``.

For telemetry the kind names the payload's codec: ``telemetry`` carries JSON, ``telemetry-bin`` the
compact binary form (core.telemetry_binary), so a controller on MQTT 3.1.1 negotiates it by topic
alone. ``status`` (retained presence, also the last will), ``ack`` (command acknowledgements) go
up; ``cmd`` (commands) comes down. Provisioning, before a controller has an equipment id, uses
``<root>/provisioning/<client_id>/request`` and ``…/response``.
"""

from __future__ import annotations

import re

PROTOCOL_VERSION = "v1"
TELEMETRY = "telemetry"
TELEMETRY_BINARY = "telemetry-bin"
TELEMETRY_KINDS = (TELEMETRY, TELEMETRY_BINARY)
STATUS = "status"
ACK = "ack"
COMMAND = "cmd"
# What a controller may publish to, each under its own equipment id only (the broker ACL enforces it).
DEVICE_UPLINK_KINDS = (*TELEMETRY_KINDS, STATUS, ACK)
PROVISIONING = "provisioning"

# Equipment ids travel in topics and URLs: keep them to a safe, bounded alphabet.
EQUIPMENT_ID_PATTERN = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def telemetry_topic(root: str, equipment_id: str, kind: str = TELEMETRY) -> str:
    return f"{root}/{PROTOCOL_VERSION}/{equipment_id}/{kind}"


def telemetry_subscription(root: str, share_group: str | None = None, kind: str = TELEMETRY) -> str:
    """The wildcard a consumer subscribes to; with a group, an MQTT 5 shared subscription."""
    pattern = f"{root}/{PROTOCOL_VERSION}/+/{kind}"
    return f"$share/{share_group}/{pattern}" if share_group else pattern


def parse_telemetry_topic(root: str, topic: str) -> tuple[str, str] | None:
    """(equipment id, kind) of a telemetry topic, or None when the topic is not one of ours."""
    parts = topic.split("/")
    if len(parts) != 4 or parts[0] != root or parts[1] != PROTOCOL_VERSION or parts[3] not in TELEMETRY_KINDS:
        return None
    equipment_id = parts[2]
    return (equipment_id, parts[3]) if EQUIPMENT_ID_PATTERN.match(equipment_id) else None


def equipment_id_from_topic(root: str, topic: str) -> str | None:
    """The equipment id of a telemetry topic (either codec), or None when the topic is not one of ours."""
    parsed = parse_telemetry_topic(root, topic)
    return parsed[0] if parsed else None


def device_topic(root: str, equipment_id: str, kind: str) -> str:
    return f"{root}/{PROTOCOL_VERSION}/{equipment_id}/{kind}"


def device_subscription(root: str, kind: str, share_group: str | None = None) -> str:
    pattern = f"{root}/{PROTOCOL_VERSION}/+/{kind}"
    return f"$share/{share_group}/{pattern}" if share_group else pattern


def parse_device_topic(root: str, topic: str, kind: str) -> str | None:
    """The equipment id of ``<root>/v1/<id>/<kind>``, or None when the topic is not that."""
    parts = topic.split("/")
    if len(parts) != 4 or parts[0] != root or parts[1] != PROTOCOL_VERSION or parts[3] != kind:
        return None
    return parts[2] if EQUIPMENT_ID_PATTERN.match(parts[2]) else None


def provisioning_topic(root: str, client_id: str, direction: str) -> str:
    """``direction`` is ``request`` (controller → IronSight) or ``response`` (IronSight → controller)."""
    return f"{root}/{PROVISIONING}/{client_id}/{direction}"


def provisioning_subscription(root: str) -> str:
    return f"{root}/{PROVISIONING}/+/request"


def parse_provisioning_topic(root: str, topic: str) -> str | None:
    """The client id of a provisioning request topic, or None."""
    parts = topic.split("/")
    if len(parts) != 4 or parts[0] != root or parts[1] != PROVISIONING or parts[3] != "request":
        return None
    return parts[2] if EQUIPMENT_ID_PATTERN.match(parts[2]) else None
