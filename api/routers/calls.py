"""The front desk: the caller on screen before the agent says a word, and the record of every call.

``GET /calls/lookup?phone=…`` finds the caller's contact and customer from any common spelling of
the number (exact first, else ranked partial matches) and returns the customer and its contract,
and each of its machines with live state, active alarms with the diagnosis and remedy steps, open
work orders with their deadlines and the last service. ``POST /calls/incoming`` is the same for a
telephony system (CTI): it records the call and answers with the caller.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import psycopg
from fastapi import APIRouter, HTTPException, Query, status
from psycopg.rows import dict_row

from api.auth import Staff, require
from api.deps import DbConn, SettingsDep, utc
from api.roles import STAFF, Principal, Role
from api.routers.portal import next_service_due
from api.schemas.calls import (
    CallCreate,
    CallerPublic,
    CallPublic,
    CallsPublic,
    CallUpdate,
    IncomingCall,
    IncomingCallPublic,
)
from core import customers
from ingest import queries
from tickets import calls, sla

router = APIRouter(prefix="/calls", tags=["calls"])

# A customer with more machines than this shows those in alarm first, then by id, up to it.
MAX_MACHINES = 200
RECENT_CALLS = 5
MAX_PAGE = 500


@router.get("/lookup", response_model=CallerPublic)
def lookup(caller: Staff, conn: DbConn, settings: SettingsDep,
           phone: Annotated[str, Query(min_length=1, max_length=64, description="any common spelling")]
           ) -> CallerPublic:
    """Who is calling: the contact and customer with this number, its contract, and its machines as
    they are now. No match is an answer too (empty ``matches``)."""
    return CallerPublic(**caller_on_screen(conn, phone, settings.phone_region, settings.offline_after_s))


@router.post("/incoming", response_model=IncomingCallPublic, status_code=status.HTTP_201_CREATED)
def incoming(body: IncomingCall, caller: Annotated[Principal, require(*STAFF, Role.service)], conn: DbConn,
             settings: SettingsDep) -> IncomingCallPublic:
    """For a telephony system (CTI): a call rings. Records it (source ``cti``) with the caller found
    from the number, and answers with the caller on screen and the call's id, to be completed with
    ``PATCH /calls/{id}``."""
    screen = caller_on_screen(conn, body.phone, settings.phone_region, settings.offline_after_s)
    call = calls.record_call(conn, phone=body.phone, phone_e164=screen["phone_e164"],
                             customer_id=(screen["customer"] or {}).get("id"),
                             contact_id=(screen["contact"] or {}).get("id"), equipment_id=None,
                             agent=body.agent or caller.username, source="cti", line=body.line)
    return IncomingCallPublic(call=CallPublic(**call), caller=CallerPublic(**screen))


@router.post("", response_model=CallPublic, status_code=status.HTTP_201_CREATED)
def record(body: CallCreate, caller: Staff, conn: DbConn, settings: SettingsDep) -> CallPublic:
    """Record a call the agent took: the number, and what it was about and came to."""
    matches = customers.find_by_phone(conn, body.phone, settings.phone_region, limit=1)
    contact_id = body.contact_id or (matches[0].contact_id if matches else None)
    customer_id = None
    if contact_id is not None:
        found = customers.get_contacts(conn, [contact_id]).get(contact_id)
        if found is None:
            raise HTTPException(422, f"no contact {contact_id}")
        customer_id = found["customer_id"]
    _check_refs(conn, body.equipment_id, body.ticket_id)
    call = calls.record_call(conn, phone=body.phone, phone_e164=_e164(body.phone, settings.phone_region),
                             customer_id=customer_id, contact_id=contact_id, equipment_id=body.equipment_id,
                             agent=caller.username, source="agent", outcome=body.outcome, ticket_id=body.ticket_id,
                             notes=body.notes)
    return CallPublic(**call)


@router.patch("/{call_id}", response_model=CallPublic)
def update(call_id: int, body: CallUpdate, caller: Staff, conn: DbConn) -> CallPublic:
    fields = body.model_dump(exclude_unset=True)
    if fields.get("notes", "") is None:
        raise HTTPException(422, "notes cannot be null")
    _check_refs(conn, fields.get("equipment_id"), fields.get("ticket_id"))
    row = calls.update_call(conn, call_id, fields)
    if row is None:
        raise HTTPException(404, f"no call {call_id}")
    return CallPublic(**row)


@router.get("", response_model=CallsPublic)
def list_calls(caller: Staff, conn: DbConn, customer: Annotated[str | None, Query(max_length=128)] = None,
               since: datetime | None = None, limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
               offset: Annotated[int, Query(ge=0)] = 0) -> CallsPublic:
    rows, count = calls.list_calls(conn, customer=customer, since=utc(since) if since else None, limit=limit,
                                   offset=offset)
    return CallsPublic(data=[CallPublic(**r) for r in rows], count=count)


def _e164(phone: str, region: str) -> str | None:
    try:
        return customers.normalise_phone(phone, region)
    except customers.InvalidPhone:
        return None


def _check_refs(conn: psycopg.Connection, equipment_id: str | None, ticket_id: int | None) -> None:
    if equipment_id is not None and conn.execute("SELECT 1 FROM equipment WHERE id = %s",
                                                 (equipment_id,)).fetchone() is None:
        raise HTTPException(422, f"no equipment {equipment_id!r}")
    if ticket_id is not None and conn.execute("SELECT 1 FROM tickets WHERE id = %s", (ticket_id,)).fetchone() is None:
        raise HTTPException(422, f"no ticket {ticket_id}")


_ALARMS = """
SELECT a.id, a.equipment_id, a.fault_code, a.severity, a.raised_at, a.acknowledged_at IS NOT NULL AS acknowledged,
       f.title, f.diagnosis
FROM alarms a LEFT JOIN faults f ON f.id = a.last_fault_id
WHERE a.equipment_id = ANY(%s) AND a.state = 'active'
ORDER BY CASE a.severity WHEN 'critical' THEN 0 WHEN 'major' THEN 1 WHEN 'minor' THEN 2 ELSE 3 END, a.raised_at
"""
_OPEN_ORDERS = """
SELECT id, equipment_id, title, kind, channel, state, priority, engineer, respond_by, arrive_by, resolve_by, eta
FROM tickets WHERE equipment_id = ANY(%s) AND ended_at IS NULL ORDER BY created_at
"""


def caller_on_screen(conn: psycopg.Connection, phone: str, region: str, offline_after_s: float) -> dict[str, Any]:
    """Everything the agent needs when ``phone`` calls (the body of GET /calls/lookup)."""
    matches = customers.find_by_phone(conn, phone, region)
    screen: dict[str, Any] = {
        "phone": phone, "phone_e164": _e164(phone, region),
        "matches": [{"contact_id": m.contact_id, "customer_id": m.customer_id, "phone": m.e164, "exact": m.exact,
                     "matched_digits": m.matched_digits} for m in matches],
        "customer": None, "contact": None, "contract": None, "machines": [], "machines_count": 0,
        "recent_calls": []}
    if not matches:
        return screen
    best = matches[0]
    screen["customer"] = customers.get_customer(conn, best.customer_id)
    screen["contact"] = customers.get_contacts(conn, [best.contact_id]).get(best.contact_id)
    machines, count = queries.list_equipment(conn, offline_after_s=offline_after_s, customer=best.customer_id,
                                             limit=MAX_MACHINES, offset=0)
    screen["machines_count"] = count
    ids = [m["id"] for m in machines]
    with conn.cursor(row_factory=dict_row) as cur:
        alarms: dict[str, list[dict[str, Any]]] = {}
        for alarm in cur.execute(_ALARMS, (ids,)):
            alarms.setdefault(alarm.pop("equipment_id"), []).append(alarm)
        orders: dict[str, list[dict[str, Any]]] = {}
        for order in cur.execute(_OPEN_ORDERS, (ids,)):
            orders.setdefault(order.pop("equipment_id"), []).append(order)
        serviced = {r["id"]: r["last_service_hours"] for r in cur.execute(
            "SELECT id, last_service_hours FROM equipment WHERE id = ANY(%s)", (ids,))}
    for machine in machines:
        machine["alarms"] = alarms.get(machine["id"], [])
        machine["open_orders"] = orders.get(machine["id"], [])
        machine["last_service_hours"] = serviced.get(machine["id"])
        machine["next_service_due_hours"] = next_service_due(machine["model"], machine["engine_hours"],
                                                             machine["last_service_hours"])
    machines.sort(key=lambda m: (not m["alarms"], m["id"]))
    screen["machines"] = machines
    contract = sla.contract_for_customer(conn, best.customer_id)
    screen["contract"] = {"tier": contract.tier, "respond_h": contract.respond_h, "arrive_h": contract.arrive_h,
                          "resolve_h": contract.resolve_h, "remote_diagnosis_min": contract.remote_diagnosis_min}
    screen["recent_calls"] = calls.recent_calls(conn, best.customer_id, RECENT_CALLS)
    conn.rollback()  # read only: leave no transaction open on the request's connection
    return screen
