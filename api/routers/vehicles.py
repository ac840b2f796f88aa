"""Service vans. Staff read them; admins and dispatchers change them."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, HTTPException

from api.auth import ADMIN_OR_DISPATCHER, STAFF_ONLY
from api.deps import DbConn, ResourceId, one_or_404
from api.schemas.dispatch import (
    VehicleBody,
    VehiclePublic,
)
from tickets import resources

router = APIRouter(tags=["service organisation"])


@router.get("/vehicles", dependencies=STAFF_ONLY, response_model=list[VehiclePublic])
def list_vehicles(conn: DbConn) -> list[dict]:
    return resources.list_vehicles(conn)


@router.get("/vehicles/{vehicle_id}", dependencies=STAFF_ONLY, response_model=VehiclePublic)
def get_vehicle(vehicle_id: ResourceId, conn: DbConn) -> dict:
    return one_or_404(resources.list_vehicles(conn, vehicle_id), "vehicle", vehicle_id)


@router.put("/vehicles/{vehicle_id}", dependencies=ADMIN_OR_DISPATCHER, response_model=VehiclePublic,
            responses={422: {"description": "no such station or engineer, or the engineer has a vehicle"}})
def put_vehicle(vehicle_id: ResourceId, body: VehicleBody, conn: DbConn) -> dict:
    try:
        resources.upsert_vehicle(conn, resources.Vehicle(vehicle_id, body.station_id, body.engineer_id,
                                                         tuple((p.part, p.quantity) for p in body.parts)),
                                 at=datetime.now(UTC))
    except resources.UnknownResource as exc:
        raise HTTPException(422, str(exc)) from None
    return resources.list_vehicles(conn, vehicle_id)[0]
