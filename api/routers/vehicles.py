"""Service vans. Staff read them; admins and dispatchers change them and give each van's position
tracker its broker credential."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, HTTPException, Response

from api.auth import ADMIN_OR_DISPATCHER, STAFF_ONLY
from api.deps import DbConn, ResourceId, SettingsDep, one_or_404
from api.schemas.dispatch import (
    VehicleBody,
    VehiclePublic,
)
from api.schemas.trackers import TrackerCredentialPublic
from core.positions import position_topic
from devices import registry
from devices.broker_auth import tracker_username
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


@router.post("/vehicles/{vehicle_id}/tracker-credential", dependencies=ADMIN_OR_DISPATCHER, status_code=201,
             response_model=TrackerCredentialPublic, responses={404: {"description": "no such vehicle"}})
def issue_tracker_credential(vehicle_id: ResourceId, conn: DbConn, settings: SettingsDep) -> TrackerCredentialPublic:
    """A broker credential for the van's position tracker, shown once: it may publish that van's
    positions and nothing else. An earlier credential of the van stops working."""
    one_or_404(resources.list_vehicles(conn, vehicle_id), "vehicle", vehicle_id)
    try:
        password = registry.issue_tracker_credential(conn, vehicle_id)
    except registry.RegistryError as exc:
        raise HTTPException(exc.status, str(exc)) from None
    conn.commit()  # the password is shown once: it must work by the time the caller has it
    return TrackerCredentialPublic(vehicle_id=vehicle_id, username=tracker_username(vehicle_id), password=password,
                                   topic=position_topic(settings.topic_root, vehicle_id))


@router.delete("/vehicles/{vehicle_id}/tracker-credential", dependencies=ADMIN_OR_DISPATCHER, status_code=204,
               responses={404: {"description": "no such vehicle, or it never had a tracker credential"}})
def revoke_tracker_credential(vehicle_id: ResourceId, conn: DbConn) -> Response:
    """Withdraw the van's tracker credential: the broker drops the tracker and refuses it from then on."""
    one_or_404(resources.list_vehicles(conn, vehicle_id), "vehicle", vehicle_id)
    if registry.revoke_tracker_credential(conn, vehicle_id) is None:
        raise HTTPException(404, f"vehicle {vehicle_id!r} has no tracker credential")
    conn.commit()  # revoked (and the devices worker told) before the caller hears so
    return Response(status_code=204)
