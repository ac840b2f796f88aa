"""The customer portal: fleet, track, usage, service record."""

from __future__ import annotations

from datetime import date, datetime

from pydantic import BaseModel, Field

from api.schemas.service_records import RecordedServicePublic
from api.schemas.tickets import TicketPublic


class FleetMachinePublic(BaseModel):
    id: str
    serial: str
    model: str
    kind: str
    site: str | None
    customer: str
    online: bool
    last_ts: datetime | None = Field(description="time of the newest reading")
    lat: float | None
    lon: float | None
    engine_hours: float | None
    fuel_level_pct: float | None
    active_alarms: int
    next_service_due_hours: float | None = Field(description="engine-hour reading at which the next service is due")
    hours_to_next_service: float | None


class FleetPublic(BaseModel):
    data: list[FleetMachinePublic]
    count: int


class TrackPointPublic(BaseModel):
    ts: datetime
    lat: float
    lon: float
    speed_kmh: float | None


class TrackPublic(BaseModel):
    equipment_id: str
    start: datetime
    end: datetime
    bucket_s: float | None
    data: list[TrackPointPublic]
    count: int


class DailyUsagePublic(BaseModel):
    day: date
    samples: int
    engine_hours: float = Field(description="hours on the engine's hour meter that day")
    working_hours: float
    idle_hours: float
    fuel_used_pct: float = Field(description="fuel used, in percent of the tank (sum of the level's drops)")


class UsagePublic(BaseModel):
    equipment_id: str
    start: datetime
    end: datetime
    data: list[DailyUsagePublic]
    count: int


class ServiceRecordPublic(BaseModel):
    equipment_id: str
    data: list[TicketPublic] = Field(description="work orders, newest first, each with its timeline, engineer, "
                                                 "parts used and callback surveys")
    count: int
    services: list[RecordedServicePublic] = Field(description="services done, the latest first")
    services_count: int
    last_service: RecordedServicePublic | None = Field(description="the latest service done")
    last_service_hours: float | None = Field(description="the highest engine hours a service was recorded at: "
                                                         "the next is counted from there")
    engine_hours: float | None
    next_service_due_hours: float | None = Field(description="engine-hour reading at which the next service is due")
    hours_to_next_service: float | None
