"""Request and response models of the API (``XCreate`` in, ``XPublic`` / ``XsPublic`` out)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, Field, StringConstraints, field_validator, model_validator

from api.roles import Role
from core.device_messages import COMMAND_KINDS
from core.vocabulary import SEVERITIES
from devices.commands import FINAL_STATES, OPEN_STATES

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
    vehicle_id: str | None = None
    pickup_warehouse_id: str | None = Field(None, description="where the part is collected on the way")
    required_part: str | None = Field(None, description="the spare part the diagnosis names")
    part_picked_up_at: datetime | None = None
    eta: datetime | None = Field(None, description="estimated arrival, updated from the vehicle's position")
    eta_updated_at: datetime | None = None
    late_warned_at: datetime | None = Field(None, description="when the ETA first passed arrive_by")
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
    engineer: str | None = Field(None, min_length=1, max_length=100, description="dispatch: the engineer's id")
    warehouse: str | None = Field(None, min_length=1, max_length=100,
                                  description="dispatch: collect the part at this warehouse (default: the best)")
    arrive_by: datetime | None = Field(None, description="promised arrival (dispatch); default: the ETA + a "
                                                         "margin, or respond_by + 4 h without a route")
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


# --- device registry, presence, remote commands ---

DeviceState = Literal["pending", "active", "revoked"]
CommandKind = Literal[COMMAND_KINDS]  # type: ignore[valid-type]
CommandState = Literal[(*OPEN_STATES, *FINAL_STATES)]  # type: ignore[valid-type]
Identifier = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]


class DeviceCreate(BaseModel):
    """A controller registered on a machine. Give the machine's details (model, kind, customer) to
    register the machine at the same time; leave them out for a machine already registered."""

    equipment_id: Identifier
    serial: Identifier = Field(description="the controller's serial, which it provisions with")
    firmware: str | None = Field(None, max_length=64)
    commissioned_on: date | None = None
    report_interval_s: float = Field(1.0, gt=0, le=3600)
    equipment_serial: str | None = Field(None, max_length=64, description="the machine's own serial")
    model: str | None = Field(None, max_length=64)
    kind: str | None = Field(None, max_length=64)
    customer: str | None = Field(None, max_length=128)
    site: str | None = Field(None, max_length=128)


class DeviceUpdate(BaseModel):
    """Only the fields given change; customer, kind and site are the machine's."""

    firmware: str | None = Field(None, max_length=64)
    commissioned_on: date | None = None
    report_interval_s: float | None = Field(None, gt=0, le=3600)
    customer: str | None = Field(None, min_length=1, max_length=128)
    kind: str | None = Field(None, min_length=1, max_length=64)
    site: str | None = Field(None, max_length=128)

    @model_validator(mode="after")
    def _required_fields_are_not_cleared(self) -> DeviceUpdate:
        # Absent means "unchanged"; null would clear, which these fields cannot be.
        cleared = [name for name in ("report_interval_s", "customer", "kind")
                   if name in self.model_fields_set and getattr(self, name) is None]
        if cleared:
            raise ValueError(f"{', '.join(cleared)} cannot be null")
        return self


class DevicePublic(BaseModel):
    equipment_id: str
    serial: str
    equipment_serial: str
    model: str
    kind: str
    customer: str
    site: str | None
    firmware: str | None
    commissioned_on: date | None
    report_interval_s: float
    state: DeviceState
    credential_issued_at: datetime | None
    revoked_at: datetime | None
    created_at: datetime
    updated_at: datetime


class DevicesPublic(BaseModel):
    data: list[DevicePublic]
    count: int


class CredentialPublic(BaseModel):
    """Shown once: only a hash is kept."""

    equipment_id: str
    username: str
    password: str


class PresencePublic(BaseModel):
    equipment_id: str
    online: bool = Field(description="connected (status topic) and heard from within the offline limit")
    connected: bool | None = Field(description="what the retained status topic says; None: never reported")
    disconnect_reason: str | None = Field(description="clean (said goodbye) or lost (last will)")
    changed_at: datetime | None
    status_at: datetime | None
    last_seen: datetime | None
    last_telemetry_at: datetime | None
    signal_dbm: float | None
    firmware: str | None
    report_interval_s: float | None
    locked: bool | None


class CommandCreate(BaseModel):
    kind: CommandKind
    params: dict[str, Any] = Field(default_factory=dict,
                                   description="set_report_interval: interval_s and duration_s; others: none")
    timeout_s: float | None = Field(None, gt=0, le=7 * 86400, description="validity; default from settings")
    reason: str | None = Field(None, max_length=500, description="required for lock and unlock")


class CommandEventPublic(BaseModel):
    at: datetime
    state: str
    actor: str | None
    detail: str | None


class CommandPublic(BaseModel):
    id: str
    equipment_id: str
    kind: CommandKind
    params: dict[str, Any]
    state: CommandState
    requested_by: str | None
    reason: str | None
    created_at: datetime
    expires_at: datetime
    sent_at: datetime | None
    send_count: int
    acknowledged_at: datetime | None
    finished_at: datetime | None
    detail: str | None
    result: dict[str, Any] | None
    events: list[CommandEventPublic] | None = None


class CommandsPublic(BaseModel):
    data: list[CommandPublic]
    count: int


RoleName = Literal[tuple(role.value for role in Role)]  # type: ignore[misc]
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
