"""Machines and their readings."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from api.schemas.common import ChannelValues


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
