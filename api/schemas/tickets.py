"""Work orders: creation, actions, history, SLA timers, parts and callback surveys."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from api.schemas.common import Severity
from tickets.service import TICKET_CHANNELS
from tickets.sla import TICKET_KINDS

TicketKind = Literal[TICKET_KINDS]  # type: ignore[valid-type]
TicketChannel = Literal[TICKET_CHANNELS]  # type: ignore[valid-type]


class TicketCreate(BaseModel):
    equipment_id: str = Field(min_length=1, max_length=64)
    title: str = Field(min_length=1, max_length=200)
    description: str = Field("", max_length=5000)
    priority: Severity = "major"
    kind: TicketKind = Field("fault", description="deadlines come from the customer's contract tier for this kind")
    channel: TicketChannel | None = Field(None, description="how it came in; default: alarm for an alarm's "
                                                            "ticket, otherwise phone")
    contact_id: int | None = Field(None, ge=1, description="the customer's contact who raised it")
    fault_code: str | None = Field(None, max_length=64)
    source_alarm_id: int | None = Field(None, ge=1)
    diagnosis: dict[str, Any] | None = Field(None, description="probable causes and remedies, from diagnostics")
    remote_resolvable: bool | None = None


class CustomerRequestCreate(BaseModel):
    """A fault report, a question or a complaint a customer raises for one of its machines."""

    equipment_id: str = Field(min_length=1, max_length=64)
    kind: TicketKind = "fault"
    title: str = Field(min_length=1, max_length=200)
    description: str = Field("", max_length=5000)
    contact_id: int | None = Field(None, ge=1, description="who at the customer raised it")


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
    kind: TicketKind = "fault"
    channel: TicketChannel = "phone"
    contact_id: int | None = None
    fault_code: str | None
    source_alarm_id: int | None
    created_by: str
    created_at: datetime
    updated_at: datetime
    diagnosis: dict[str, Any] | None = None
    remote_resolvable: bool | None = None
    history: list[TicketEventPublic] | None = None
    engineer: str | None = None
    expert_group: str | None = None
    escalated_from: str | None = None
    resolution: Literal["remote", "on_site"] | None = None
    first_time_fix: bool | None = None
    work_done: str | None = None
    parts_used: list[dict[str, Any]] | None = None
    respond_by: datetime | None = None
    arrive_by: datetime | None = None
    resolve_by: datetime | None = None
    responded_at: datetime | None = None
    dispatched_at: datetime | None = None
    arrived_at: datetime | None = None
    resolved_at: datetime | None = None
    ended_at: datetime | None = None
    vehicle_id: str | None = None
    pickup_warehouse_id: str | None = Field(None, description="where the part is collected on the way")
    required_part: str | None = Field(None, description="the spare part the diagnosis names")
    part_picked_up_at: datetime | None = None
    eta: datetime | None = Field(None, description="estimated arrival, updated from the vehicle's position")
    eta_updated_at: datetime | None = None
    late_warned_at: datetime | None = Field(None, description="when the ETA first passed arrive_by")
    sla: dict[str, SlaTimerPublic] | None = Field(None, description="respond / arrive / resolve timers")
    surveys: list[SurveyPublic] | None = None
    consultations: list[ConsultationPublic] | None = Field(None, description="expert groups asked, and their answers")
    callbacks: list[dict[str, Any]] | None = Field(None, description="its callbacks (`/callbacks/{id}` for one)")
    complaints: list[dict[str, Any]] | None = Field(None, description="its complaints (`/complaints/{id}` for one)")


class ConsultationPublic(BaseModel):
    id: int
    group_name: str
    question: str
    asked_by: str
    asked_at: datetime
    answered_by: str | None
    answered_at: datetime | None
    outcome: str | None


class TicketsPublic(BaseModel):
    data: list[TicketPublic]
    count: int


class SlaTimerPublic(BaseModel):
    due: datetime | None
    stopped_at: datetime | None
    status: Literal["none", "running", "warning", "met", "breached"]
    warned_at: datetime | None
    breached_at: datetime | None


class PartUsed(BaseModel):
    part: str = Field(min_length=1, max_length=100)
    quantity: int = Field(1, ge=1)


class SurveyScores(BaseModel):
    """Six indicators on a five-point scale (5 best)."""

    product_quality: int = Field(ge=1, le=5)
    overall_service: int = Field(ge=1, le=5)
    timeliness: int = Field(ge=1, le=5)
    attitude: int = Field(ge=1, le=5)
    engineer_skill: int = Field(ge=1, le=5)
    parts_supply: int = Field(ge=1, le=5)


class SurveyCreate(SurveyScores):
    actor: str = Field(min_length=1, max_length=100, description="who made the callback")
    comment: str = Field("", max_length=5000)


class SurveyPublic(SurveyScores):
    round: int = Field(description="1: the callback after resolution; 2: the callback after a complaint")
    comment: str
    actor: str
    at: datetime


class TicketActionBody(BaseModel):
    """The body of ``POST /tickets/{id}/actions/{action}``; which fields an action needs is listed
    with the endpoint (e.g. dispatch: engineer; resolve: work_done and first_time_fix)."""

    actor: str = Field(min_length=1, max_length=100)
    reason: str | None = Field(None, max_length=2000)
    note: str | None = Field(None, max_length=5000)
    engineer: str | None = Field(None, min_length=1, max_length=100, description="dispatch: the engineer's id")
    warehouse: str | None = Field(None, min_length=1, max_length=100,
                                  description="dispatch: collect the part at this warehouse (default: the best)")
    arrive_by: datetime | None = Field(None, description="promised arrival (dispatch); default: the ETA + a "
                                                         "margin, or respond_by + 4 h without a route")
    expert_group: str | None = Field(None, min_length=1, max_length=100, description="e.g. R&D, supplier")
    work_done: str | None = Field(None, max_length=5000)
    parts_used: list[PartUsed] | None = None
    first_time_fix: bool | None = None
    outcome: str | None = Field(None, max_length=5000, description="reassign: what the expert group found")
