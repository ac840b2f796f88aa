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


# A person's name as an alarm's history shows it (someone an action is recorded for, an assignee).
AlarmActor = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100,
                                              pattern=r"^[\w][\w .@'-]*$")]


class AlarmActionBody(BaseModel):
    """Who acts on an alarm is the signed-in account, always; a dispatcher recording what a colleague
    did on the phone names that colleague in ``on_behalf_of``, which the history keeps beside it."""

    on_behalf_of: AlarmActor | None = Field(None, description="the person the signed-in account acts for, "
                                                              "kept in the event's detail")
    actor: AlarmActor | None = Field(None, json_schema_extra={"deprecated": True},
                                     description="deprecated name of on_behalf_of: a name other than the signed-in "
                                                 "account's is recorded as on_behalf_of, never as the actor")

    def on_behalf_of_for(self, username: str) -> str | None:
        """The person to record beside ``username`` (None: the account acts for itself). ValueError when
        ``actor`` and ``on_behalf_of`` name different people."""
        if self.actor is not None and self.on_behalf_of is not None and self.actor != self.on_behalf_of:
            raise ValueError("actor (deprecated) and on_behalf_of name different people; send on_behalf_of only")
        named = self.on_behalf_of or self.actor
        return named if named is not None and named != username else None


class AlarmAck(AlarmActionBody):
    note: str | None = Field(None, max_length=1000)


class AlarmCommentCreate(AlarmActionBody):
    text: str = Field(min_length=1, max_length=5000)


class AlarmAssigneeUpdate(AlarmActionBody):
    assignee: AlarmActor | None = Field(description="who handles the alarm; null removes the assignee")


class AlarmShelve(AlarmActionBody):
    minutes: int = Field(ge=1, description="how long the alarm stays shelved (bounded, see the error for the maximum)")
    reason: str | None = Field(None, max_length=1000)


class AlarmUnshelve(AlarmActionBody):
    pass


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
