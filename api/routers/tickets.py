from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, HTTPException, Query, Response, status

from api.deps import DbConn
from api.schemas import TicketCreate, TicketPublic, TicketsPublic
from tickets import service

router = APIRouter(prefix="/tickets", tags=["tickets"])


@router.post("", response_model=TicketPublic, status_code=status.HTTP_201_CREATED,
             responses={200: {"description": "the ticket an earlier identical request created"},
                        409: {"description": "idempotency key reused for another equipment"},
                        422: {"description": "unknown equipment or invalid body"}})
def create_ticket(
    body: TicketCreate,
    conn: DbConn,
    response: Response,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> TicketPublic:
    new = service.NewTicket(
        equipment_id=body.equipment_id, title=body.title, description=body.description, priority=body.priority,
        fault_code=body.fault_code, source_alarm_id=body.source_alarm_id, idempotency_key=idempotency_key,
        created_by="alarms" if body.source_alarm_id else "api", diagnosis=body.diagnosis,
        remote_resolvable=body.remote_resolvable,
    )
    try:
        ticket, created = service.create_ticket(conn, new)
    except service.UnknownEquipment:
        raise HTTPException(422, f"no equipment {body.equipment_id!r}") from None
    except service.IdempotencyConflict as exc:
        raise HTTPException(409, str(exc)) from None
    if not created:
        response.status_code = status.HTTP_200_OK
    return TicketPublic(**ticket)


@router.get("", response_model=TicketsPublic)
def list_tickets(conn: DbConn, equipment_id: str | None = None, state: str | None = None,
                 limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                 offset: Annotated[int, Query(ge=0)] = 0) -> TicketsPublic:
    rows, count = service.list_tickets(conn, equipment_id=equipment_id, state=state, limit=limit, offset=offset)
    return TicketsPublic(data=rows, count=count)


@router.get("/{ticket_id}", response_model=TicketPublic)
def get_ticket(ticket_id: int, conn: DbConn) -> TicketPublic:
    ticket = service.get_ticket(conn, ticket_id)
    if ticket is None:
        raise HTTPException(404, f"no ticket {ticket_id}")
    return TicketPublic(**ticket)
