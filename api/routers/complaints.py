"""Complaints: sent to the responsible department with a week to answer, checked by a callback,
sent back until the customer is satisfied or management closes them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, status

from api.auth import Reader, Staff, require
from api.deps import DbConn
from api.roles import Principal, Role
from api.schemas.aftercare import (
    ComplaintAnswer,
    ComplaintClose,
    ComplaintCreate,
    ComplaintPublic,
    ComplaintsPublic,
    ComplaintState,
)
from api.tenancy import customer_filter, ensure_visible, not_found
from tickets import aftercare, complaints, groups, service

router = APIRouter(prefix="/complaints", tags=["complaints"])


@router.get("", response_model=ComplaintsPublic)
def list_complaints(caller: Reader, conn: DbConn, state: ComplaintState | None = None,
                    department: Annotated[str | None, Query(max_length=100)] = None,
                    open: bool = False, overdue: bool = False,
                    customer: Annotated[str | None, Query(max_length=128)] = None,
                    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                    offset: Annotated[int, Query(ge=0)] = 0) -> ComplaintsPublic:
    """Complaints, open ones first by their answer deadline; a customer sees its own."""
    rows, count = complaints.list_complaints(conn, now=datetime.now(UTC), state=state, department=department,
                                             open_only=open, overdue=overdue,
                                             customer=customer_filter(caller, customer), limit=limit, offset=offset)
    return ComplaintsPublic(data=[ComplaintPublic(**r) for r in rows], count=count)


@router.post("", response_model=ComplaintPublic, status_code=status.HTTP_201_CREATED,
             responses={409: {"description": "the ticket has an open complaint"},
                        422: {"description": "no such department"}})
def raise_complaint(body: ComplaintCreate, caller: Staff, conn: DbConn) -> ComplaintPublic:
    """A complaint raised directly about a work order, sent to a department with a week to answer."""
    ensure_visible(conn, caller, "ticket", body.ticket_id)
    try:
        row = aftercare.raise_complaint(conn, body.ticket_id, department=body.department, actor=body.actor,
                                        description=body.description)
    except service.TicketNotFound:
        raise not_found("ticket", body.ticket_id) from None
    except complaints.ComplaintStateError as exc:
        raise HTTPException(409, str(exc)) from None
    except groups.UnknownGroup as exc:
        raise HTTPException(422, str(exc)) from None
    return ComplaintPublic(**row)


def _visible(conn: DbConn, caller: Principal, complaint_id: int) -> dict[str, Any]:
    ensure_visible(conn, caller, "complaint", complaint_id)
    row = complaints.get_complaint(conn, complaint_id)
    if row is None:
        raise not_found("complaint", complaint_id)
    return row


@router.get("/{complaint_id}", response_model=ComplaintPublic)
def get_complaint(complaint_id: int, caller: Reader, conn: DbConn) -> ComplaintPublic:
    """The complaint with every round: department, deadline, answer, what the checking callback heard."""
    return ComplaintPublic(**_visible(conn, caller, complaint_id))


@router.post("/{complaint_id}/answer", response_model=ComplaintPublic,
             responses={409: {"description": "the complaint is not with a department"}})
def answer(complaint_id: int, body: ComplaintAnswer, caller: Staff, conn: DbConn) -> ComplaintPublic:
    """The department's answer; the customer's checking callback goes into the queue."""
    _visible(conn, caller, complaint_id)
    try:
        return ComplaintPublic(**aftercare.answer_complaint(conn, complaint_id, answer=body.answer, actor=body.actor))
    except complaints.ComplaintStateError as exc:
        raise HTTPException(409, str(exc)) from None


@router.post("/{complaint_id}/close", response_model=ComplaintPublic, dependencies=[require(Role.admin)],
             responses={409: {"description": "the complaint is not escalated to management"}})
def close(complaint_id: int, body: ComplaintClose, conn: DbConn) -> ComplaintPublic:
    """Management closes an escalated complaint, and the work order waiting on it."""
    try:
        return ComplaintPublic(**aftercare.close_complaint(conn, complaint_id, note=body.note, actor=body.actor))
    except complaints.ComplaintNotFound:
        raise not_found("complaint", complaint_id) from None
    except complaints.ComplaintStateError as exc:
        raise HTTPException(409, str(exc)) from None
