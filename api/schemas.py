"""Request and response models of the API (``XCreate`` in, ``XPublic`` / ``XsPublic`` out)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, StringConstraints

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
    created_at: datetime | None = None
    last_raised_at: datetime | None = None
    acknowledged_at: datetime | None = None
    acknowledged_by: str | None = None
    assignee: str | None = None
    shelved_until: datetime | None = None
    shelved_by: str | None = None
    flap_count: int = Field(0, description="times the alarm cleared and came back within the flap window")
    flapping: bool = False
    escalation_level: int = Field(0, description="highest escalation level reached (0: not escalated)")


class AlarmsPublic(BaseModel):
    data: list[AlarmPublic]
    count: int


# Who acts on an alarm, as the history shows it: named in the body, since a dispatcher may record what a
# colleague did on the phone; who may act at all is the route's access declaration.
AlarmActor = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100,
                                              pattern=r"^[\w][\w .@'-]*$")]


class AlarmAck(BaseModel):
    actor: AlarmActor
    note: str | None = Field(None, max_length=1000)


class AlarmCommentCreate(BaseModel):
    actor: AlarmActor
    text: str = Field(min_length=1, max_length=5000)


class AlarmAssigneeUpdate(BaseModel):
    actor: AlarmActor
    assignee: AlarmActor | None = Field(description="who handles the alarm; null removes the assignee")


class AlarmShelve(BaseModel):
    actor: AlarmActor
    minutes: int = Field(ge=1, description="how long the alarm stays shelved (bounded, see the error for the maximum)")
    reason: str | None = Field(None, max_length=1000)


class AlarmUnshelve(BaseModel):
    actor: AlarmActor


class AlarmEventPublic(BaseModel):
    id: int
    at: datetime
    kind: str
    actor: str
    detail: dict[str, Any]


class AlarmEscalationPublic(BaseModel):
    level: int
    status: Literal["pending", "sent", "unsent"]
    created_at: datetime
    attempts: int
    next_try_at: datetime
    last_error: str | None
    sent_at: datetime | None


class AlarmDetailPublic(AlarmPublic):
    history: list[AlarmEventPublic]
    escalations: list[AlarmEscalationPublic]


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
    sla: dict[str, SlaTimerPublic] | None = Field(None, description="respond / arrive / resolve timers")
    surveys: list[SurveyPublic] | None = None


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
    engineer: str | None = Field(None, min_length=1, max_length=100)
    arrive_by: datetime | None = Field(None, description="promised arrival (dispatch); default respond_by + 4 h")
    expert_group: str | None = Field(None, min_length=1, max_length=100, description="e.g. R&D, supplier")
    work_done: str | None = Field(None, max_length=5000)
    parts_used: list[PartUsed] | None = None
    first_time_fix: bool | None = None
    survey: SurveyScores | None = Field(None, description="second_callback: the customer's scores again")


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
    tickets: int
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


RoleName = Literal["admin", "dispatcher", "engineer", "customer", "service"]
Username = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,99}$")]


class TokenPublic(BaseModel):
    access_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int = Field(description="seconds until the token expires")
    expires_at: datetime


class MePublic(BaseModel):
    username: str
    role: RoleName
    customer: str | None


class UserCreate(BaseModel):
    username: Username
    role: RoleName
    password: str | None = Field(None, min_length=12, max_length=200,
                                 description="for people (password flow); service accounts use API keys")
    customer: str | None = Field(None, min_length=1, max_length=100, description="required for role customer")


class UserPublic(BaseModel):
    id: int
    username: str
    role: RoleName
    customer: str | None
    active: bool
    created_at: datetime


class UsersPublic(BaseModel):
    data: list[UserPublic]
    count: int


class UserActiveUpdate(BaseModel):
    active: bool = Field(description="false disables the account and revokes its tokens")


class ApiKeyCreate(BaseModel):
    name: str = Field(min_length=1, max_length=100)
    user_id: int | None = Field(None, ge=1, description="admin only: the key's owner (default: the caller)")
    expires_in_days: int | None = Field(None, ge=1, le=3650, description="default: until revoked")


class ApiKeyPublic(BaseModel):
    id: int
    user_id: int
    name: str | None
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None


class ApiKeyCreated(ApiKeyPublic):
    key: str = Field(description="shown once; only its hash is stored")


class ApiKeysPublic(BaseModel):
    data: list[ApiKeyPublic]
    count: int


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
