"""Service stations, engineers, vans, warehouses and stock, dispatch proposals."""

from __future__ import annotations

from datetime import datetime
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, Field, field_validator

# --- dispatch -------------------------------------------------------------------------------------

_ID = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")


class StationBody(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)


class StationPublic(StationBody):
    id: str


class EngineerBody(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    station_id: str = _ID
    skills: list[str] = Field(default_factory=list, max_length=100, description="equipment models")
    shift_start: str = Field("00:00", pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$",
                             description="HH:MM, local time at the station")
    shift_end: str = Field("00:00", pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$",
                           description="HH:MM; before shift_start: a night shift over midnight; equal: all day")
    timezone: str = Field("UTC", max_length=64)
    active: bool = True
    phone: str | None = Field(None, pattern=r"^\+[1-9][0-9]{6,14}$", description="E.164; new jobs by SMS")
    email: str | None = Field(None, pattern=r"^[^@\s]+@[^@\s]+$", max_length=254)
    language: str = Field("en", pattern=r"^[a-z]{2}(-[A-Za-z]{2,4})?$", description="of the notifications")
    preferred_channel: Literal["sms", "email"] = "sms"

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}") from None
        return value


class EngineerPublic(EngineerBody):
    id: str
    vehicle_id: str | None
    current_ticket_id: int | None
    on_shift: bool
    available: bool


class StockLine(BaseModel):
    part: str = Field(min_length=1, max_length=100)
    quantity: int = Field(ge=0, le=1_000_000)


class VehicleBody(BaseModel):
    station_id: str = _ID
    engineer_id: str | None = _ID
    parts: list[StockLine] = Field(default_factory=list, max_length=500)


class VehiclePublic(BaseModel):
    id: str
    station_id: str
    engineer_id: str | None
    lat: float
    lon: float
    speed_kmh: float | None
    reported_at: datetime | None
    current_ticket_id: int | None
    parts: dict[str, int]


class WarehouseBody(StationBody):
    parts: list[StockLine] = Field(default_factory=list, max_length=500)


class WarehousePublic(StationBody):
    id: str
    parts: dict[str, int]


class StockQuantity(BaseModel):
    quantity: int = Field(ge=0, le=1_000_000)


class PartTotals(BaseModel):
    part: str
    in_warehouses: int | None
    in_vehicles: int | None


class DispatchPlanPublic(BaseModel):
    ticket_id: int
    engineer_id: str
    vehicle_id: str
    warehouse_id: str | None = Field(description="collect the part here on the way; None: straight to the site")
    part: str | None
    part_on_board: bool = Field(description="false: no warehouse holds the part, the engineer would arrive without")
    distance_km: float
    travel_min: float
    eta: datetime


class DispatchProposalPublic(BaseModel):
    at: datetime
    proposals: list[DispatchPlanPublic]
    unassigned: list[int] = Field(description="waiting tickets no available engineer can take now")
    waiting: int
    crews_available: int
    weighted_hours: float = Field(description="sum of priority-weighted travel hours of this proposal")
    greedy_weighted_hours: float = Field(description="the same for nearest-first assignment, for comparison")
