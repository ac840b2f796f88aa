from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, HTTPException, Path, Query, Response, status

from api.auth import Reader, Staff, require
from api.deps import DbConn, SettingsDep
from api.roles import STAFF, Principal, Role
from api.schemas.tickets import (
    CustomerRequestCreate,
    SurveyCreate,
    TicketActionBody,
    TicketCreate,
    TicketPublic,
    TicketsPublic,
)
from api.tenancy import ensure_visible, not_found
from tickets import dispatch, groups, service, stock, workflow

router = APIRouter(prefix="/tickets", tags=["tickets"])


@router.post("", response_model=TicketPublic, status_code=status.HTTP_201_CREATED,
             responses={200: {"description": "the ticket an earlier identical request created"},
                        409: {"description": "idempotency key reused for another equipment"},
                        422: {"description": "unknown equipment, a source_alarm_id that is not an alarm of this "
                                             "equipment (but from the alarms service), or invalid body"}})
def create_ticket(
    body: TicketCreate,
    caller: Annotated[Principal, require(*STAFF, Role.service)],
    conn: DbConn,
    response: Response,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> TicketPublic:
    new = service.NewTicket(
        equipment_id=body.equipment_id, title=body.title, description=body.description, priority=body.priority,
        fault_code=body.fault_code, source_alarm_id=body.source_alarm_id, idempotency_key=idempotency_key,
        created_by=caller.username, diagnosis=body.diagnosis,
        remote_resolvable=body.remote_resolvable, kind=body.kind, channel=body.channel, contact_id=body.contact_id,
    )
    # The alarms service opens its alarm's ticket as the alarm is stored; anyone else names an alarm that exists.
    return _open(conn, new, response, check_alarm=caller.role is not Role.service)


def _open(conn: DbConn, new: service.NewTicket, response: Response, *, check_alarm: bool) -> TicketPublic:
    """Create the ticket (201), or answer with the one an identical earlier request made (200)."""
    try:
        ticket, created = service.create_ticket(conn, new, check_alarm=check_alarm)
    except service.UnknownEquipment:
        raise HTTPException(422, f"no equipment {new.equipment_id!r}") from None
    except (service.UnknownAlarm, service.UnknownContact) as exc:
        raise HTTPException(422, str(exc)) from None
    except service.IdempotencyConflict as exc:
        raise HTTPException(409, str(exc)) from None
    if not created:
        response.status_code = status.HTTP_200_OK
    return TicketPublic(**ticket)


@router.post("/requests", response_model=TicketPublic, status_code=status.HTTP_201_CREATED,
             responses={200: {"description": "the request an earlier identical request (Idempotency-Key) created"}})
def raise_request(body: CustomerRequestCreate, caller: Reader, conn: DbConn, response: Response,
                  idempotency_key: Annotated[str | None, Header(max_length=200)] = None) -> TicketPublic:
    """A fault report, question, complaint, suggestion or maintenance request for one of the caller's
    machines (a customer: its own only), through the portal; its deadlines come from the customer's
    contract tier for that kind. Staff use ``POST /tickets`` with a channel."""
    ensure_visible(conn, caller, "equipment", body.equipment_id)
    new = service.NewTicket(
        equipment_id=body.equipment_id, title=body.title, description=body.description,
        priority="major" if body.kind == "fault" else "minor", kind=body.kind, channel="portal",
        contact_id=body.contact_id, created_by=caller.username,
        idempotency_key=None if idempotency_key is None else f"{caller.username}:{idempotency_key}")
    return _open(conn, new, response, check_alarm=True)


@router.get("", response_model=TicketsPublic)
def list_tickets(caller: Reader, conn: DbConn,
                 equipment_id: str | None = None, state: str | None = None,
                 engineer: str | None = None,
                 limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                 offset: Annotated[int, Query(ge=0)] = 0) -> TicketsPublic:
    rows, count = service.list_tickets(conn, equipment_id=equipment_id, state=state, engineer=engineer,
                                       limit=limit, offset=offset, customer=caller.scope)
    return TicketsPublic(data=[TicketPublic(**row) for row in rows], count=count)


@router.get("/{ticket_id}", response_model=TicketPublic)
def get_ticket(ticket_id: int, caller: Reader, conn: DbConn) -> TicketPublic:
    ensure_visible(conn, caller, "ticket", ticket_id)
    ticket = service.get_ticket(conn, ticket_id)
    if ticket is None:
        raise not_found("ticket", ticket_id)
    return TicketPublic(**ticket)


def _actions_table() -> str:
    lines = ["| action | from | to | needs |", "|---|---|---|---|"]
    for t in workflow.TRANSITIONS:
        if t.own_endpoint:
            continue
        target = {None: "(same state)", workflow.PREVIOUS: "(state before escalation)"}.get(t.target, t.target)
        sources = "any open state" if t.sources == workflow.OPEN_STATES else ", ".join(t.sources)
        lines.append(f"| `{t.action}` | {sources} | {target} | {', '.join(t.requires) or '-'} |")
    return "\n".join(lines)


@router.post("/{ticket_id}/actions/{action}", response_model=TicketPublic,
             description="Move the ticket through its work-order loop; every action is recorded in its history "
                         "with the signed-in account as actor (and `on_behalf_of` when the body's `actor` names "
                         "someone else) and the time.\n\n" + _actions_table(),
             responses={404: {"description": "no such ticket or action"},
                        409: {"description": "the action is not allowed in the ticket's current state"},
                        422: {"description": "a field the action needs is missing, or the engineer cannot be "
                                             "sent (unknown, no vehicle, not qualified)"}})
def take_action(ticket_id: int, action: Annotated[str, Path(examples=list(workflow.ACTIONS))],
                body: TicketActionBody, conn: DbConn, settings: SettingsDep,
                caller: Staff) -> TicketPublic:
    fields = body.model_dump(exclude={"actor"}, exclude_none=True)
    # The history names the signed-in account; a step recorded for someone else (an engineer calling it
    # in) keeps that person too.
    if body.actor != caller.username:
        fields["on_behalf_of"] = body.actor
    try:
        ticket = service.apply_action(conn, ticket_id, action, actor=caller.username, fields=fields,
                                      travel=dispatch.TravelModel.from_settings(settings))
    except (service.TicketNotFound, workflow.UnknownAction) as exc:
        raise HTTPException(404, str(exc)) from None
    except (workflow.TransitionError, stock.OutOfStock) as exc:
        raise HTTPException(409, str(exc)) from None
    except (workflow.MissingFields, dispatch.DispatchRefused, groups.UnknownGroup) as exc:
        raise HTTPException(422, str(exc)) from None
    return TicketPublic(**ticket)


@router.post("/{ticket_id}/survey", response_model=TicketPublic,
             description="The callback survey of a resolved ticket (completes its callback). Without a score of 2 "
                         "or less the ticket is closed; otherwise it enters `complaint` and a complaint goes to the "
                         "department responsible for the lowest score (`/complaints`).",
             responses={404: {"description": "no such ticket"},
                        409: {"description": "the ticket is not resolved (or already surveyed)"}})
def submit_survey(ticket_id: int, body: SurveyCreate, conn: DbConn,
                  caller: Annotated[Principal, require(*STAFF, Role.customer)]) -> TicketPublic:
    ensure_visible(conn, caller, "ticket", ticket_id)
    scores = body.model_dump(include=set(service.SURVEY_INDICATORS))
    # A customer answers for itself; staff record the callback they made under the name they give.
    actor = caller.username if caller.role is Role.customer else body.actor
    try:
        ticket = service.submit_survey(conn, ticket_id, scores, actor=actor, comment=body.comment)
    except service.TicketNotFound as exc:
        raise HTTPException(404, str(exc)) from None
    except workflow.TransitionError as exc:
        raise HTTPException(409, str(exc)) from None
    return TicketPublic(**ticket)
