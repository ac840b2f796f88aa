from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query, status

from alarms import lifecycle, queries
from api.auth import Reader, Staff
from api.deps import DbConn
from api.roles import Principal
from api.schemas.alarms import (
    AlarmAck,
    AlarmActionBody,
    AlarmAssigneeUpdate,
    AlarmCommentCreate,
    AlarmDetailPublic,
    AlarmEventPublic,
    AlarmPublic,
    AlarmShelve,
    AlarmsPublic,
    AlarmUnshelve,
)
from api.tenancy import ensure_visible

router = APIRouter(prefix="/alarms", tags=["alarms"])

_NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "no such alarm"}}
_ACTS = ("The signed-in account is recorded as the actor; `on_behalf_of` (or the deprecated `actor`, when it "
         "names someone else) is kept beside it in the event's detail.")


def _on_behalf_of(body: AlarmActionBody, caller: Principal) -> str | None:
    try:
        return body.on_behalf_of_for(caller.username)
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from None


@router.get("", response_model=AlarmsPublic)
def list_alarms(caller: Reader, conn: DbConn, equipment_id: str | None = None,
                state: Literal["active", "cleared"] | None = None,
                acknowledged: bool | None = None,
                include_shelved: Annotated[bool, Query(description="also list alarms that are shelved now")] = False,
                limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                offset: Annotated[int, Query(ge=0)] = 0) -> AlarmsPublic:
    rows, count = queries.list_alarms(conn, equipment_id=equipment_id, state=state, acknowledged=acknowledged,
                                      include_shelved=include_shelved, limit=limit, offset=offset,
                                      customer=caller.scope)
    return AlarmsPublic(data=[AlarmPublic(**row) for row in rows], count=count)


@router.get("/{alarm_id}", response_model=AlarmDetailPublic, responses=_NOT_FOUND)
def get_alarm(alarm_id: int, caller: Reader, conn: DbConn) -> AlarmDetailPublic:
    """One alarm with its whole history (raised, occurrences, acknowledgement, comments … cleared)."""
    ensure_visible(conn, caller, "alarm", alarm_id)
    try:
        return AlarmDetailPublic(**lifecycle.get_alarm_with_history(conn, alarm_id))
    except lifecycle.AlarmNotFound as exc:
        raise HTTPException(404, str(exc)) from None


@router.post("/{alarm_id}/ack", response_model=AlarmPublic, responses=_NOT_FOUND)
def acknowledge(alarm_id: int, body: AlarmAck, caller: Staff, conn: DbConn) -> AlarmPublic:
    """Acknowledge the alarm. Acknowledging it again is harmless: 200 with the first acknowledgement.

    The signed-in account is recorded as the actor (and as `acknowledged_by`); `on_behalf_of` (or the
    deprecated `actor`, when it names someone else) is kept beside it in the event's detail."""
    on_behalf_of = _on_behalf_of(body, caller)
    try:
        alarm, _ = lifecycle.acknowledge(conn, alarm_id, caller.username, note=body.note, on_behalf_of=on_behalf_of)
    except lifecycle.AlarmNotFound as exc:
        raise HTTPException(404, str(exc)) from None
    return AlarmPublic(**alarm)


@router.post("/{alarm_id}/comments", response_model=AlarmEventPublic, status_code=status.HTTP_201_CREATED,
             responses=_NOT_FOUND, description=_ACTS)
def add_comment(alarm_id: int, body: AlarmCommentCreate, caller: Staff, conn: DbConn) -> AlarmEventPublic:
    on_behalf_of = _on_behalf_of(body, caller)
    try:
        return AlarmEventPublic(**lifecycle.add_comment(conn, alarm_id, caller.username, body.text,
                                                        on_behalf_of=on_behalf_of))
    except lifecycle.AlarmNotFound as exc:
        raise HTTPException(404, str(exc)) from None


@router.put("/{alarm_id}/assignee", response_model=AlarmPublic, responses=_NOT_FOUND, description=_ACTS)
def set_assignee(alarm_id: int, body: AlarmAssigneeUpdate, caller: Staff, conn: DbConn) -> AlarmPublic:
    on_behalf_of = _on_behalf_of(body, caller)
    try:
        return AlarmPublic(**lifecycle.assign(conn, alarm_id, caller.username, body.assignee,
                                              on_behalf_of=on_behalf_of))
    except lifecycle.AlarmNotFound as exc:
        raise HTTPException(404, str(exc)) from None


@router.post("/{alarm_id}/shelve", response_model=AlarmPublic,
             responses=_NOT_FOUND | {422: {"description": "minutes out of bounds or invalid body"}})
def shelve(alarm_id: int, body: AlarmShelve, caller: Staff, conn: DbConn) -> AlarmPublic:
    """Hide the alarm from the default listing and hold its escalation for ``minutes``; it comes back
    by itself when the period ends.

    The signed-in account is recorded as the actor (and as `shelved_by`); `on_behalf_of` (or the
    deprecated `actor`, when it names someone else) is kept beside it in the event's detail."""
    if body.minutes > lifecycle.SHELVE_MAX_MINUTES:
        raise HTTPException(422, f"an alarm is shelved for at most {lifecycle.SHELVE_MAX_MINUTES} minutes")
    on_behalf_of = _on_behalf_of(body, caller)
    try:
        return AlarmPublic(**lifecycle.shelve(conn, alarm_id, caller.username, body.minutes, reason=body.reason,
                                              on_behalf_of=on_behalf_of))
    except lifecycle.AlarmNotFound as exc:
        raise HTTPException(404, str(exc)) from None


@router.post("/{alarm_id}/unshelve", response_model=AlarmPublic, responses=_NOT_FOUND, description=_ACTS)
def unshelve(alarm_id: int, body: AlarmUnshelve, caller: Staff, conn: DbConn) -> AlarmPublic:
    on_behalf_of = _on_behalf_of(body, caller)
    try:
        return AlarmPublic(**lifecycle.unshelve(conn, alarm_id, caller.username, on_behalf_of=on_behalf_of))
    except lifecycle.AlarmNotFound as exc:
        raise HTTPException(404, str(exc)) from None
