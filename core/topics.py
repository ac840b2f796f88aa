"""MQTT topic names. Every topic is ``<root>/v1/<equipment_id>/<kind>``.

The kind names the payload's codec: ``telemetry`` carries JSON, ``telemetry-bin`` the compact
binary form (core.telemetry_binary), so a controller on MQTT 3.1.1 negotiates it by topic alone.
"""

from __future__ import annotations

import re

PROTOCOL_VERSION = "v1"
TELEMETRY = "telemetry"
TELEMETRY_BINARY = "telemetry-bin"
TELEMETRY_KINDS = (TELEMETRY, TELEMETRY_BINARY)

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
