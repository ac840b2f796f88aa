from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query, status

from alarms import lifecycle, queries
from api.auth import Reader, require
from api.deps import DbConn
from api.roles import STAFF
from api.schemas.alarms import (
    AlarmAck,
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


@router.post("/{alarm_id}/ack", response_model=AlarmPublic, dependencies=[require(*STAFF)], responses=_NOT_FOUND)
def acknowledge(alarm_id: int, body: AlarmAck, conn: DbConn) -> AlarmPublic:
    """Acknowledge the alarm. Acknowledging it again is harmless: 200 with the first acknowledgement."""
    try:
        alarm, _ = lifecycle.acknowledge(conn, alarm_id, body.actor, note=body.note)
    except lifecycle.AlarmNotFound as exc:
        raise HTTPException(404, str(exc)) from None
    return AlarmPublic(**alarm)


@router.post("/{alarm_id}/comments", response_model=AlarmEventPublic, dependencies=[require(*STAFF)],
             status_code=status.HTTP_201_CREATED,
             responses=_NOT_FOUND)
def add_comment(alarm_id: int, body: AlarmCommentCreate, conn: DbConn) -> AlarmEventPublic:
    try:
        return AlarmEventPublic(**lifecycle.add_comment(conn, alarm_id, body.actor, body.text))
    except lifecycle.AlarmNotFound as exc:
        raise HTTPException(404, str(exc)) from None


@router.put("/{alarm_id}/assignee", response_model=AlarmPublic, dependencies=[require(*STAFF)], responses=_NOT_FOUND)
def set_assignee(alarm_id: int, body: AlarmAssigneeUpdate, conn: DbConn) -> AlarmPublic:
    try:
        return AlarmPublic(**lifecycle.assign(conn, alarm_id, body.actor, body.assignee))
    except lifecycle.AlarmNotFound as exc:
        raise HTTPException(404, str(exc)) from None


@router.post("/{alarm_id}/shelve", response_model=AlarmPublic, dependencies=[require(*STAFF)],
             responses=_NOT_FOUND | {422: {"description": "minutes out of bounds or invalid body"}})
def shelve(alarm_id: int, body: AlarmShelve, conn: DbConn) -> AlarmPublic:
    """Hide the alarm from the default listing and hold its escalation for ``minutes``; it comes back
    by itself when the period ends."""
    if body.minutes > lifecycle.SHELVE_MAX_MINUTES:
        raise HTTPException(422, f"an alarm is shelved for at most {lifecycle.SHELVE_MAX_MINUTES} minutes")
    try:
        return AlarmPublic(**lifecycle.shelve(conn, alarm_id, body.actor, body.minutes, reason=body.reason))
    except lifecycle.AlarmNotFound as exc:
        raise HTTPException(404, str(exc)) from None


@router.post("/{alarm_id}/unshelve", response_model=AlarmPublic, dependencies=[require(*STAFF)], responses=_NOT_FOUND)
def unshelve(alarm_id: int, body: AlarmUnshelve, conn: DbConn) -> AlarmPublic:
    try:
        return AlarmPublic(**lifecycle.unshelve(conn, alarm_id, body.actor))
    except lifecycle.AlarmNotFound as exc:
        raise HTTPException(404, str(exc)) from None
