"""The callback queue: customers to call back after a repair and after a complaint's answer."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Query

from api.auth import Staff
from api.deps import DbConn
from api.schemas.aftercare import (
    CallbackAttemptCreate,
    CallbackClaim,
    CallbackPlan,
    CallbackPublic,
    CallbackPurpose,
    CallbacksPublic,
    CallbackState,
)
from api.tenancy import not_found
from tickets import aftercare, callbacks, complaints, groups, service, workflow

router = APIRouter(prefix="/callbacks", tags=["callbacks"])


@router.get("", response_model=CallbacksPublic)
def list_callbacks(caller: Staff, conn: DbConn, state: CallbackState | None = "open",
                   due: Literal["all", "now", "overdue", "today"] = "all",
                   assigned_to: Annotated[str | None, Query(max_length=100)] = None,
                   purpose: CallbackPurpose | None = None,
                   limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                   offset: Annotated[int, Query(ge=0)] = 0) -> CallbacksPublic:
    """The queue, nearest due first: ``due=now`` those whose next attempt has come, ``overdue`` past
    their due time, ``today`` due before the end of the day (UTC); ``assigned_to`` an agent, or the
    ``call centre`` queue."""
    rows, count = callbacks.list_callbacks(conn, now=datetime.now(UTC), state=state, due=due,
                                           assigned_to=assigned_to, purpose=purpose, limit=limit, offset=offset)
    return CallbacksPublic(data=[CallbackPublic(**r) for r in rows], count=count)


@router.get("/plan", response_model=CallbackPlan)
def month_plan(caller: Staff, conn: DbConn,
               month: Annotated[str | None, Query(pattern=r"^(19|2[0-9])[0-9]{2}-(0[1-9]|1[0-2])$",
                                                  description="YYYY-MM; this month by default")] = None
               ) -> CallbackPlan:
    """The month's callbacks by the day they are due: planned, done, on time, open, overdue,
    unreachable; and per agent."""
    now = datetime.now(UTC)
    first = date(int(month[:4]), int(month[5:]), 1) if month else now.date().replace(day=1)
    plan = callbacks.month_plan(conn, first, now=now)
    plan["days"] = [d | {"day": d["day"].isoformat()} for d in plan["days"]]
    return CallbackPlan(**plan)


@router.get("/{callback_id}", response_model=CallbackPublic)
def get_callback(callback_id: int, caller: Staff, conn: DbConn) -> CallbackPublic:
    row = callbacks.get_callback(conn, callback_id)
    if row is None:
        raise not_found("callback", callback_id)
    return CallbackPublic(**row)


@router.post("/{callback_id}/claim", response_model=CallbackPublic,
             responses={404: {"description": "no such callback"}, 409: {"description": "not open"}})
def claim(callback_id: int, body: CallbackClaim, caller: Staff, conn: DbConn) -> CallbackPublic:
    """An agent takes the callback from the queue."""
    try:
        return CallbackPublic(**callbacks.claim(conn, callback_id, body.agent))
    except callbacks.CallbackNotFound:
        raise not_found("callback", callback_id) from None
    except callbacks.CallbackClosed as exc:
        raise HTTPException(409, str(exc)) from None


@router.post("/{callback_id}/attempts", response_model=CallbackPublic,
             responses={404: {"description": "no such callback"},
                        409: {"description": "the callback is not open, or its ticket or complaint moved on"},
                        422: {"description": "answered without scores / satisfied, or an unknown contact or "
                                             "department"}})
def record_attempt(callback_id: int, body: CallbackAttemptCreate, caller: Staff, conn: DbConn) -> CallbackPublic:
    """One call. Nobody reached: recorded and rescheduled (after five attempts the customer is
    unreachable: the ticket closes, an unchecked complaint goes to management). Answered: the survey
    closes the ticket or opens a complaint; a complaint check closes it or sends it back."""
    try:
        row = aftercare.record_callback(
            conn, callback_id, agent=body.agent, outcome=body.outcome, contact_id=body.contact_id, note=body.note,
            scores=body.scores.model_dump() if body.scores else None, satisfied=body.satisfied,
            department=body.department)
    except callbacks.CallbackNotFound:
        raise not_found("callback", callback_id) from None
    except (callbacks.CallbackClosed, workflow.TransitionError, complaints.ComplaintStateError) as exc:
        raise HTTPException(409, str(exc)) from None
    except (workflow.MissingFields, service.UnknownContact, groups.UnknownGroup) as exc:
        raise HTTPException(422, str(exc)) from None
    return CallbackPublic(**row)
