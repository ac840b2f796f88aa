"""Service KPIs."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field


class SlaKpi(BaseModel):
    decided: int
    met: int
    compliance: float | None
    warnings: int
    breaches: int


class DurationKpi(BaseModel):
    count: int
    mean: float | None
    p90: float | None


class SurveyKpi(BaseModel):
    count: int
    complaints: int
    means: dict[str, float | None]


class KpisPublic(BaseModel):
    start: datetime
    end: datetime
    customer: str | None
    engineer: str | None
    station: str | None = None
    tickets: int
    late_arrival_warnings: int = Field(0, description="visits whose tracked ETA passed the promised arrival")
    resolved: int
    resolved_remotely: int
    resolved_on_site: int
    closed: int
    remote_resolution_rate: float | None
    first_time_fix_rate: float | None
    sla: dict[str, SlaKpi]
    time_to_respond_h: DurationKpi
    time_to_resolve_h: DurationKpi
    backlog: dict[str, int]
    backlog_total: int
    survey: SurveyKpi
