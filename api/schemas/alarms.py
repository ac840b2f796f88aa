"""Alarms, their actions and history."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, StringConstraints

from api.schemas.common import Severity


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
