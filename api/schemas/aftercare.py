"""After the repair: the callback queue and its calls, complaints with their rounds, service groups."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field, field_validator

from api.schemas.tickets import SurveyScores
from tickets.callbacks import ATTEMPT_OUTCOMES, PURPOSES
from tickets.callbacks import STATES as CALLBACK_STATES
from tickets.complaints import STATES as COMPLAINT_STATES
from tickets.groups import GROUP_KINDS

CallbackPurpose = Literal[PURPOSES]  # type: ignore[valid-type]
CallbackState = Literal[CALLBACK_STATES]  # type: ignore[valid-type]
AttemptOutcome = Literal[ATTEMPT_OUTCOMES]  # type: ignore[valid-type]
GroupKind = Literal[GROUP_KINDS]  # type: ignore[valid-type]
ComplaintState = Literal[COMPLAINT_STATES]  # type: ignore[valid-type]


class CallbackAttemptPublic(BaseModel):
    at: datetime
    agent: str
    outcome: AttemptOutcome
    contact_id: int | None
    note: str


class CallbackPublic(BaseModel):
    id: int
    ticket_id: int
    purpose: CallbackPurpose = Field(description="survey: after the repair; complaint_check: after a department's "
                                                 "answer")
    complaint_id: int | None
    complaint_round: int | None
    contact_id: int | None = Field(description="whom to call")
    contact_name: str | None = None
    contact_phone: str | None = None
    assigned_to: str = Field(description="the call-centre queue, or the agent who took it")
    state: CallbackState
    created_at: datetime
    due_at: datetime
    next_attempt_at: datetime = Field(description="when to call (again)")
    attempts: int
    done_at: datetime | None
    done_by: str | None
    answered_by_contact: int | None = Field(description="the contact who answered")
    warned_at: datetime | None
    breached_at: datetime | None
    overdue: bool | None = None
    equipment_id: str
    customer_id: str
    customer_name: str | None
    ticket_title: str
    engineer: str | None
    attempt_log: list[CallbackAttemptPublic] | None = None


class CallbacksPublic(BaseModel):
    data: list[CallbackPublic]
    count: int


class CallbackClaim(BaseModel):
    agent: str = Field(min_length=1, max_length=100)


class CallbackAttemptCreate(BaseModel):
    """One call of a callback. ``answered`` needs, for a survey, the six scores; for a complaint check,
    ``satisfied`` (or the scores: one of 2 or less is not satisfied)."""

    agent: str = Field(min_length=1, max_length=100)
    outcome: AttemptOutcome
    contact_id: int | None = Field(None, ge=1, description="who answered (or was tried)")
    note: str = Field("", max_length=5000)
    scores: SurveyScores | None = None
    satisfied: bool | None = None
    department: str | None = Field(None, min_length=1, max_length=100,
                                   description="complaint check, not satisfied: send it to this department")


class PlanDay(BaseModel):
    day: str
    planned: int
    done: int
    done_on_time: int
    open: int
    overdue: int
    unreachable: int


class PlanAgent(BaseModel):
    agent: str
    assigned: int
    done: int
    done_on_time: int
    open: int


class CallbackPlan(BaseModel):
    month: str
    totals: dict[str, int]
    days: list[PlanDay]
    agents: list[PlanAgent]


class ComplaintRoundPublic(BaseModel):
    round: int
    department: str
    sent_at: datetime
    answer_due: datetime
    answer: str | None
    answered_by: str | None
    answered_at: datetime | None
    satisfied: bool | None
    verified_by: str | None
    verified_at: datetime | None
    verify_note: str | None
    warned_at: datetime | None
    breached_at: datetime | None


class ComplaintPublic(BaseModel):
    id: int
    ticket_id: int
    equipment_id: str
    customer_id: str
    source: Literal["survey", "direct"]
    indicators: list[str]
    description: str
    state: ComplaintState
    department: str = Field(description="the department the current round is with")
    round: int
    answer_due: datetime = Field(description="the current round's deadline")
    opened_by: str
    opened_at: datetime
    closed_at: datetime | None
    closing_note: str | None
    overdue: bool | None = None
    rounds: list[ComplaintRoundPublic] | None = None


class ComplaintsPublic(BaseModel):
    data: list[ComplaintPublic]
    count: int


class ComplaintCreate(BaseModel):
    ticket_id: int = Field(ge=1)
    department: str = Field(min_length=1, max_length=100)
    description: str = Field("", max_length=5000)
    actor: str = Field(min_length=1, max_length=100)


class ComplaintAnswer(BaseModel):
    answer: str = Field(min_length=1, max_length=5000)
    actor: str = Field(min_length=1, max_length=100, description="who in the department answers")


class ComplaintClose(BaseModel):
    note: str = Field(min_length=1, max_length=5000)
    actor: str = Field(min_length=1, max_length=100)


class GroupMember(BaseModel):
    member: str = Field(min_length=1, max_length=100, description="account name or engineer id")
    name: str = Field(min_length=1, max_length=200)
    email: str | None = Field(None, pattern=r"^[^@\s]+@[^@\s]+$", max_length=254)
    phone: str | None = Field(None, pattern=r"^\+[1-9][0-9]{6,14}$", description="E.164")
    language: str = Field("en", pattern=r"^[a-z]{2}(-[A-Za-z]{2,4})?$")
    preferred_channel: Literal["email", "sms"] = "email"
    skills: list[str] = Field(default_factory=list, max_length=50)


class ServiceGroupPut(BaseModel):
    kind: GroupKind
    description: str = Field("", max_length=1000)
    skills: list[str] = Field(default_factory=list, max_length=50)
    webhook_url: str | None = Field(None, pattern=r"^https?://", max_length=2000)
    members: list[GroupMember] = Field(default_factory=list, max_length=500)

    @field_validator("members")
    @classmethod
    def _each_member_once(cls, members: list[GroupMember]) -> list[GroupMember]:
        names = [m.member for m in members]
        if len(set(names)) != len(names):
            raise ValueError("a member is listed twice")
        return members


class ServiceGroupPublic(ServiceGroupPut):
    name: str
    created_at: datetime
    updated_at: datetime
