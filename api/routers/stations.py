"""Service stations. Staff read them; admins and dispatchers change them."""

from __future__ import annotations

from fastapi import APIRouter

from api.auth import ADMIN_OR_DISPATCHER, STAFF_ONLY
from api.deps import DbConn, ResourceId
from api.schemas.dispatch import (
    StationBody,
    StationPublic,
)
from tickets import resources

router = APIRouter(tags=["service organisation"])


@router.get("/service-stations", dependencies=STAFF_ONLY, response_model=list[StationPublic])
def list_stations(conn: DbConn) -> list[dict]:
    return resources.list_stations(conn)


@router.put("/service-stations/{station_id}", dependencies=ADMIN_OR_DISPATCHER, response_model=StationPublic)
def put_station(station_id: ResourceId, body: StationBody, conn: DbConn) -> dict:
    resources.upsert_station(conn, resources.Station(station_id, body.name, body.lat, body.lon))
    return {"id": station_id, **body.model_dump()}
