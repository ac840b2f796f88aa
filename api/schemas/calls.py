"""The caller on screen (GET /calls/lookup) and the calls record."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from api.schemas.common import ChannelValues
from api.schemas.customers import ContactPublic, CustomerPublic
from tickets.calls import CALL_OUTCOMES

CallOutcome = Literal[CALL_OUTCOMES]  # type: ignore[valid-type]


class PhoneMatchPublic(BaseModel):
    contact_id: int
    customer_id: str
    phone: str = Field(description="the contact's number, E.164")
    exact: bool = Field(description="the whole number matched; otherwise its last digits did")
    matched_digits: int


class ContractPublic(BaseModel):
    tier: str | None = Field(description="None: the default limits")
    respond_h: float
    arrive_h: float
    resolve_h: float
    remote_diagnosis_min: float


class CallerAlarmPublic(BaseModel):
    id: int
    fault_code: str
    severity: str
    raised_at: datetime
    acknowledged: bool
    title: str | None
    diagnosis: dict[str, Any] | None = Field(description="probable causes with remedy steps, most probable first")


class CallerOrderPublic(BaseModel):
    id: int
    title: str
    kind: str
    channel: str
    state: str
    priority: str
    engineer: str | None
    respond_by: datetime | None
    arrive_by: datetime | None
    resolve_by: datetime | None
    eta: datetime | None


class CallerMachinePublic(ChannelValues):
    id: str
    serial: str
    model: str
    kind: str
    site: str | None
    online: bool
    last_ts: datetime | None
    last_service_hours: float | None
    next_service_due_hours: float | None
    alarms: list[CallerAlarmPublic]
    open_orders: list[CallerOrderPublic]


class CallPublic(BaseModel):
    id: int
    started_at: datetime
    ended_at: datetime | None
    phone: str
    phone_e164: str | None
    customer_id: str | None
    contact_id: int | None
    equipment_id: str | None
    agent: str | None
    source: str
    line: str | None
    outcome: str | None
    ticket_id: int | None
    notes: str


class CallerPublic(BaseModel):
    phone: str = Field(description="as asked")
    phone_e164: str | None = Field(description="normalised, when it is a whole number")
    matches: list[PhoneMatchPublic] = Field(description="contacts with this number, best first")
    customer: CustomerPublic | None = Field(description="the best match's customer")
    contact: ContactPublic | None
    contract: ContractPublic | None
    machines: list[CallerMachinePublic] = Field(description="the customer's machines, those with alarms first")
    machines_count: int
    recent_calls: list[CallPublic]


class CallCreate(BaseModel):
    phone: str = Field(min_length=1, max_length=64)
    contact_id: int | None = Field(None, ge=1, description="default: the best match for the number")
    equipment_id: str | None = Field(None, max_length=64)
    outcome: CallOutcome | None = None
    ticket_id: int | None = Field(None, ge=1)
    notes: str = Field("", max_length=5000)


class CallUpdate(BaseModel):
    equipment_id: str | None = Field(None, max_length=64)
    outcome: CallOutcome | None = None
    ticket_id: int | None = Field(None, ge=1)
    notes: str | None = Field(None, max_length=5000)
    ended: bool | None = Field(None, description="true: the call ended now")


class IncomingCall(BaseModel):
    """What a telephony system (CTI) posts when a call rings: the caller's number, and optionally the
    line called and the agent it is routed to."""

    phone: str = Field(min_length=1, max_length=64)
    line: str | None = Field(None, max_length=64)
    agent: str | None = Field(None, max_length=100)


class IncomingCallPublic(BaseModel):
    call: CallPublic
    caller: CallerPublic


class CallsPublic(BaseModel):
    data: list[CallPublic]
    count: int
