"""Request and response models of the API (``XCreate`` in, ``XPublic`` / ``XsPublic`` out)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

Severity = Literal["critical", "major", "minor", "warning"]


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


class EquipmentPublic(ChannelValues):
    id: str
    serial: str
    model: str
    kind: str
    customer: str
    site: str | None
    online: bool
    last_ts: datetime | None
    last_received_at: datetime | None


class EquipmentsPublic(BaseModel):
    data: list[EquipmentPublic]
    count: int


class ReadingPublic(ChannelValues):
    ts: datetime
    samples: int | None = Field(None, description="readings averaged into this bucket (bucketed queries only)")
    fault_codes: list[dict[str, int]] | None = None


class ReadingsPublic(BaseModel):
    equipment_id: str
    start: datetime
    end: datetime
    bucket_s: float | None
    data: list[ReadingPublic]
    count: int


class AlarmPublic(BaseModel):
    id: int
    equipment_id: str
    fault_code: str
    severity: Severity
    state: Literal["active", "cleared"]
    raised_at: datetime
    cleared_at: datetime | None
    occurrences: int
    ticket_id: int | None
    ticket_error: str | None
    title: str | None = None
    diagnosis: dict[str, Any] | None = None


class AlarmsPublic(BaseModel):
    data: list[AlarmPublic]
    count: int


class TicketCreate(BaseModel):
    equipment_id: str = Field(min_length=1, max_length=64)
    title: str = Field(min_length=1, max_length=200)
    description: str = Field("", max_length=5000)
    priority: Severity = "major"
    fault_code: str | None = Field(None, max_length=64)
    source_alarm_id: int | None = Field(None, ge=1)
    diagnosis: dict[str, Any] | None = Field(None, description="probable causes and remedies, from diagnostics")
    remote_resolvable: bool | None = None


class TicketEventPublic(BaseModel):
    at: datetime
    actor: str
    event: str
    detail: dict[str, Any]


class TicketPublic(BaseModel):
    id: int
    equipment_id: str
    title: str
    description: str
    priority: Severity
    state: str
    fault_code: str | None
    source_alarm_id: int | None
    created_by: str
    created_at: datetime
    updated_at: datetime
    diagnosis: dict[str, Any] | None = None
    remote_resolvable: bool | None = None
    history: list[TicketEventPublic] | None = None


class TicketsPublic(BaseModel):
    data: list[TicketPublic]
    count: int


class FaultPublic(BaseModel):
    id: int
    equipment_id: str
    fault_code: str
    title: str | None
    severity: str
    rule: str
    rule_version: int
    started_at: datetime
    ended_at: datetime | None
    evidence: dict[str, Any]
    diagnosis: dict[str, Any] | None
    remote_resolvable: bool | None
    backfilled: bool


class FaultsPublic(BaseModel):
    data: list[FaultPublic]
    count: int


class Health(BaseModel):
    status: Literal["ok", "degraded"]
    database: bool
    detail: str | None = None
