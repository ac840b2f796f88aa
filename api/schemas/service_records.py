"""Services done on a machine: what an engineer records, and what anyone who may see the machine reads."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from api.schemas.tickets import PartUsed
from core.telemetry import CHANNEL_BOUNDS

ENGINE_HOURS_MIN, ENGINE_HOURS_MAX = CHANNEL_BOUNDS["engine_hours"]
MAX_PARTS_PER_SERVICE = 100


class RecordedServiceCreate(BaseModel):
    performed_at: datetime | None = Field(None, description="when the service was done (UTC when no zone is given); "
                                                            "default: now")
    engine_hours: float = Field(ge=ENGINE_HOURS_MIN, le=ENGINE_HOURS_MAX, allow_inf_nan=False,
                                description="the hour meter at the service: at most the machine's last reported "
                                            "hours plus the time since then (and a little for rounding)")
    interval_h: float = Field(gt=0, le=ENGINE_HOURS_MAX, allow_inf_nan=False,
                              description="which scheduled service, by its interval in engine hours: one of the "
                                          "machine's `scheduled_services_h` (GET of this path)")
    work_done: str = Field(min_length=1, max_length=5000)
    parts_used: list[PartUsed] = Field(default_factory=list, max_length=MAX_PARTS_PER_SERVICE)
    ticket_id: int | None = Field(None, ge=1, description="the work order it was done under; one of the machine's")


class RecordedServicePublic(BaseModel):
    id: int
    equipment_id: str
    performed_at: datetime
    engine_hours: float
    interval_h: float = Field(description="which scheduled service, by its interval in engine hours")
    work_done: str
    parts_used: list[PartUsed]
    ticket_id: int | None
    recorded_by: str = Field(description="the account that recorded it")
    recorded_at: datetime


class RecordedServicesPublic(BaseModel):
    equipment_id: str
    scheduled_services_h: list[float] = Field(description="the services of the machine's schedule, by interval in "
                                                          "engine hours: what `interval_h` may name")
    data: list[RecordedServicePublic] = Field(description="the latest done first")
    count: int
