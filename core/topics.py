"""MQTT topic names. Every topic is ``<root>/v1/<equipment_id>/<kind>``."""

from __future__ import annotations

import re

PROTOCOL_VERSION = "v1"
TELEMETRY = "telemetry"

# Equipment ids travel in topics and URLs: keep them to a safe, bounded alphabet.
EQUIPMENT_ID_PATTERN = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def telemetry_topic(root: str, equipment_id: str) -> str:
    return f"{root}/{PROTOCOL_VERSION}/{equipment_id}/{TELEMETRY}"


def telemetry_subscription(root: str, share_group: str | None = None) -> str:
    """The wildcard a consumer subscribes to; with a group, an MQTT 5 shared subscription."""
    pattern = f"{root}/{PROTOCOL_VERSION}/+/{TELEMETRY}"
    return f"$share/{share_group}/{pattern}" if share_group else pattern


def equipment_id_from_topic(root: str, topic: str) -> str | None:
    """The equipment id of a telemetry topic, or None when the topic is not one of ours."""
    parts = topic.split("/")
    if len(parts) != 4 or parts[0] != root or parts[1] != PROTOCOL_VERSION or parts[3] != TELEMETRY:
        return None
    equipment_id = parts[2]
    return equipment_id if EQUIPMENT_ID_PATTERN.match(equipment_id) else None
