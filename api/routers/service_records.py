"""Services done on a machine: staff record them, anyone who may see the machine reads them.

Recording one raises the machine's last service hours, from which the service-due rule and the
portal count the next service (tickets.service_records says how the rule comes to see it).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, status

from api.auth import Reader, Staff
from api.deps import DbConn, SettingsDep, utc
from api.schemas.service_records import RecordedServiceCreate, RecordedServicePublic, RecordedServicesPublic
from api.tenancy import ensure_visible, not_found
from diagnostics.rulebook import rulebook_for
from diagnostics.rules import ServiceDue
from tickets import service_records

router = APIRouter(prefix="/equipment", tags=["service records"])

MAX_PAGE = 1000


def scheduled_services_h(model: str) -> list[float]:
    """The services of a model's schedule by their interval in engine hours, as its service-due rule
    counts them: the regular interval and the major services."""
    rule = next((r for r in rulebook_for(model).rules if isinstance(r, ServiceDue)), None)
    return [] if rule is None else [rule.interval_h, *rule.major_every_h]


@router.post("/{equipment_id}/service-records", response_model=RecordedServicePublic,
             status_code=status.HTTP_201_CREATED,
             responses={404: {"description": "no such equipment"},
                        422: {"description": "invalid body, a service the machine's schedule does not have, engine "
                                             "hours beyond its hour meter, a time in the future, or a ticket that "
                                             "is not the machine's"}})
def record_service(equipment_id: str, body: RecordedServiceCreate, caller: Staff, conn: DbConn,
                   settings: SettingsDep) -> RecordedServicePublic:
    """Record a service done on the machine, by the signed-in account. The machine's last service hours
    become the highest engine hours recorded, so an open service-due reminder clears with its next
    readings."""
    model = service_records.equipment_model(conn, equipment_id)
    if model is None:
        raise not_found("equipment", equipment_id)
    schedule = scheduled_services_h(model)
    if body.interval_h not in schedule:
        raise HTTPException(422, f"interval_h must name a service of the {model} schedule: "
                                 + (", ".join(f"{h:g}" for h in schedule) or "it has none"))
    new = service_records.NewServiceRecord(
        equipment_id=equipment_id, engine_hours=body.engine_hours, interval_h=body.interval_h,
        work_done=body.work_done, recorded_by=caller.username,
        parts_used=tuple((p.part, p.quantity) for p in body.parts_used),
        performed_at=utc(body.performed_at) if body.performed_at else None, ticket_id=body.ticket_id)
    try:
        record = service_records.record_service(conn, new,
                                                future_tolerance=timedelta(seconds=settings.future_tolerance_s))
    except service_records.UnknownEquipment:
        raise not_found("equipment", equipment_id) from None
    except service_records.ImplausibleServiceRecord as exc:
        raise HTTPException(422, str(exc)) from None
    conn.commit()  # stored, and the last service hours raised, by the time the caller hears so
    return RecordedServicePublic(**record)


@router.get("/{equipment_id}/service-records", response_model=RecordedServicesPublic,
            responses={404: {"description": "no such equipment (of the caller's)"}})
def list_service_records(equipment_id: str, caller: Reader, conn: DbConn,
                         limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
                         offset: Annotated[int, Query(ge=0)] = 0) -> RecordedServicesPublic:
    """The machine's services, the latest done first, and the services its schedule has."""
    ensure_visible(conn, caller, "equipment", equipment_id)
    model = service_records.equipment_model(conn, equipment_id)
    if model is None:  # seen a moment ago; gone only if deleted meanwhile
        raise not_found("equipment", equipment_id)
    rows, count = service_records.list_service_records(conn, equipment_id, limit=limit, offset=offset)
    return RecordedServicesPublic(equipment_id=equipment_id, scheduled_services_h=scheduled_services_h(model),
                                  data=[RecordedServicePublic(**row) for row in rows], count=count)
