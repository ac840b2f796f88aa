"""Service KPIs."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

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


class CallbacksKpi(BaseModel):
    """The callbacks due in the period (their tickets filtered like the others)."""

    due: int
    done: int
    done_on_time: int = Field(description="done by their due time")
    unreachable: int
    cancelled: int
    open: int
    overdue: int = Field(description="still open, past their due time now")
    decided: int = Field(description="done, unreachable, or still open past their due time")
    on_time_rate: float | None = Field(description="done on time / decided")
    attempts_per_done: float | None = Field(description="mean attempts of the callbacks done")


class ComplaintAnswersKpi(BaseModel):
    decided: int = Field(description="rounds answered by their department, or past the answer deadline")
    on_time: int
    on_time_rate: float | None


class ComplaintsKpi(BaseModel):
    """The complaints opened in the period (their tickets filtered like the others)."""

    opened: int
    by_state: dict[str, int]
    closed_within_week: int = Field(description="satisfied or closed by management within 7 days of opening")
    week_decided: int = Field(description="closed, or opened more than 7 days ago")
    closed_within_week_rate: float | None
    sent_back: int = Field(description="sent back to a department at least once (round > 1)")
    escalated: int = Field(description="escalated to management (escalated now, or closed by management)")
    answers: ComplaintAnswersKpi = Field(description="the departments' answers of every round, against the deadline")


class RemoteDiagnosisKpi(BaseModel):
    """The tickets that entered remote diagnosis in the period, until the next step out of it."""

    entered: int
    duration_min: DurationKpi = Field(description="minutes in remote diagnosis, of those that left it")
    decided: int = Field(description="left remote diagnosis, or still in it past their tier's limit")
    within_limit: int = Field(description="left it within their customer's tier's remote_diagnosis_min")
    within_limit_rate: float | None


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
    callbacks: CallbacksKpi
    complaints: ComplaintsKpi
    remote_diagnosis: RemoteDiagnosisKpi


SatisfactionGrouping = Literal["engineer", "station"]


class SatisfactionRowPublic(BaseModel):
    id: str = Field(description="the engineer's or the station's id")
    name: str
    station: str | None = Field(description="the engineer's service station (the station itself when by station)")
    surveys: int = Field(description="first callback surveys of the tickets created in the period")
    means: dict[str, float | None] = Field(description="mean of each indicator, 1-5")
    overall: float | None = Field(description="mean of all six indicators")
    low_surveys: int = Field(description="surveys with a score low enough to open a complaint")
    complaints: int = Field(description="complaints recorded against these tickets (from a survey or direct)")


class SatisfactionPublic(BaseModel):
    start: datetime
    end: datetime
    by: SatisfactionGrouping
    data: list[SatisfactionRowPublic] = Field(description="worst overall mean first")
    count: int
