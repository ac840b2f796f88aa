"""Shared pieces: severity, and the channel values readings and machines carry."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

from core.vocabulary import SEVERITIES

Severity = Literal[SEVERITIES]  # type: ignore[valid-type]


class ChannelValues(BaseModel):
    """The telemetry channels (units in docs/protocol.md); None where not reported."""

    oil_temp_c: float | None
    engine_rpm: float | None
    hydraulic_pressure_bar: float | None
    coolant_temp_c: float | None
    fuel_level_pct: float | None
    engine_hours: float | None
    lat: float | None
    lon: float | None
    speed_kmh: float | None
    ambient_temp_c: float | None
