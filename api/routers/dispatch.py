"""Dispatch resources (stations, engineers, vehicles, warehouses, parts) and proposals.

Staff read all of it; admins and dispatchers change the service organisation and its stock.

A dispatcher reads ``GET /dispatch/proposals`` (every waiting ticket assigned jointly) or
``GET /tickets/{id}/dispatch-options`` (every qualified engineer for one ticket, best first), then
confirms or overrides with ``POST /tickets/{id}/actions/dispatch`` (``engineer``, optional
``warehouse``).
"""

from __future__ import annotations

from datetime import UTC, datetime, time
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path

from api.auth import require
from api.deps import DbConn, SettingsDep
from api.roles import STAFF, Role
from api.schemas.dispatch import (
    DispatchPlanPublic,
    DispatchProposalPublic,
    EngineerBody,
    EngineerPublic,
    PartTotals,
    StationBody,
    StationPublic,
    StockQuantity,
    VehicleBody,
    VehiclePublic,
    WarehouseBody,
    WarehousePublic,
)
from tickets import dispatch, resources, service, stock

router = APIRouter(tags=["dispatch"])

READ = [require(*STAFF)]
CHANGE = [require(Role.admin, Role.dispatcher)]

ResourceId = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]
PartName = Annotated[str, Path(min_length=1, max_length=100)]


def _one(rows: list[dict], what: str, resource_id: str) -> dict:
    if not rows:
        raise HTTPException(404, f"no {what} {resource_id!r}")
    return rows[0]


@router.get("/service-stations", dependencies=READ, response_model=list[StationPublic])
def list_stations(conn: DbConn) -> list[dict]:
    return resources.list_stations(conn)


@router.put("/service-stations/{station_id}", dependencies=CHANGE, response_model=StationPublic)
def put_station(station_id: ResourceId, body: StationBody, conn: DbConn) -> dict:
    resources.upsert_station(conn, resources.Station(station_id, body.name, body.lat, body.lon))
    return {"id": station_id, **body.model_dump()}


def _engineers(conn: DbConn, engineer_id: str | None = None) -> list[dict]:
    rows = resources.list_engineers(conn, datetime.now(UTC), engineer_id)
    return [row | {"shift_start": f"{row['shift_start']:%H:%M}", "shift_end": f"{row['shift_end']:%H:%M}"}
            for row in rows]


@router.get("/engineers", dependencies=READ, response_model=list[EngineerPublic])
def list_engineers(conn: DbConn) -> list[dict]:
    return _engineers(conn)


@router.get("/engineers/{engineer_id}", dependencies=READ, response_model=EngineerPublic)
def get_engineer(engineer_id: ResourceId, conn: DbConn) -> dict:
    return _one(_engineers(conn, engineer_id), "engineer", engineer_id)


@router.put("/engineers/{engineer_id}", dependencies=CHANGE, response_model=EngineerPublic,
            responses={422: {"description": "no such station"}})
def put_engineer(engineer_id: ResourceId, body: EngineerBody, conn: DbConn) -> dict:
    try:
        resources.upsert_engineer(conn, resources.Engineer(
            engineer_id, body.name, body.station_id, tuple(body.skills), time.fromisoformat(body.shift_start),
            time.fromisoformat(body.shift_end), body.timezone, body.active))
    except resources.UnknownResource as exc:
        raise HTTPException(422, str(exc)) from None
    return _engineers(conn, engineer_id)[0]


@router.get("/vehicles", dependencies=READ, response_model=list[VehiclePublic])
def list_vehicles(conn: DbConn) -> list[dict]:
    return resources.list_vehicles(conn)


@router.get("/vehicles/{vehicle_id}", dependencies=READ, response_model=VehiclePublic)
def get_vehicle(vehicle_id: ResourceId, conn: DbConn) -> dict:
    return _one(resources.list_vehicles(conn, vehicle_id), "vehicle", vehicle_id)


@router.put("/vehicles/{vehicle_id}", dependencies=CHANGE, response_model=VehiclePublic,
            responses={422: {"description": "no such station or engineer, or the engineer has a vehicle"}})
def put_vehicle(vehicle_id: ResourceId, body: VehicleBody, conn: DbConn) -> dict:
    try:
        resources.upsert_vehicle(conn, resources.Vehicle(vehicle_id, body.station_id, body.engineer_id,
                                                         tuple((p.part, p.quantity) for p in body.parts)),
                                 at=datetime.now(UTC))
    except resources.UnknownResource as exc:
        raise HTTPException(422, str(exc)) from None
    return resources.list_vehicles(conn, vehicle_id)[0]


@router.get("/warehouses", dependencies=READ, response_model=list[WarehousePublic])
def list_warehouses(conn: DbConn) -> list[dict]:
    return resources.list_warehouses(conn)


@router.get("/warehouses/{warehouse_id}", dependencies=READ, response_model=WarehousePublic)
def get_warehouse(warehouse_id: ResourceId, conn: DbConn) -> dict:
    return _one(resources.list_warehouses(conn, warehouse_id), "warehouse", warehouse_id)


@router.put("/warehouses/{warehouse_id}", dependencies=CHANGE, response_model=WarehousePublic)
def put_warehouse(warehouse_id: ResourceId, body: WarehouseBody, conn: DbConn) -> dict:
    resources.upsert_warehouse(conn, resources.Warehouse(warehouse_id, body.name, body.lat, body.lon,
                                                         tuple((p.part, p.quantity) for p in body.parts)),
                               at=datetime.now(UTC))
    return resources.list_warehouses(conn, warehouse_id)[0]


@router.put("/warehouses/{warehouse_id}/stock/{part}", dependencies=CHANGE, response_model=WarehousePublic,
            description="Set the counted stock of one part (a delivery or an inventory count); recorded in the "
                        "stock ledger.")
def put_warehouse_stock(warehouse_id: ResourceId, part: PartName, body: StockQuantity, conn: DbConn) -> dict:
    try:
        resources.set_stock(conn, "warehouse", warehouse_id, part, body.quantity, at=datetime.now(UTC))
    except resources.UnknownResource as exc:
        raise HTTPException(404, str(exc)) from None
    return resources.list_warehouses(conn, warehouse_id)[0]


@router.get("/parts", dependencies=READ, response_model=list[PartTotals],
            description="Stock of every part, on shelves and in vans.")
def list_parts(conn: DbConn) -> list[dict]:
    return stock.totals_by_part(conn)


@router.get("/dispatch/proposals", dependencies=READ, response_model=DispatchProposalPublic,
            description="Every ticket waiting for a visit, assigned jointly to the available engineers so that "
                        "the sum of priority-weighted arrival times is least. Confirm one with "
                        "`POST /tickets/{id}/actions/dispatch`.")
def get_proposals(conn: DbConn, settings: SettingsDep) -> dict:
    return dispatch.propose(conn, datetime.now(UTC), dispatch.TravelModel.from_settings(settings))


@router.get("/tickets/{ticket_id}/dispatch-options", dependencies=READ, response_model=list[DispatchPlanPublic],
            description="Every available, qualified engineer's best trip to this ticket's machine, best first.")
def get_ticket_options(ticket_id: int, conn: DbConn, settings: SettingsDep) -> list[dict]:
    if service.get_ticket(conn, ticket_id) is None:
        raise HTTPException(404, f"no ticket {ticket_id}")
    now = datetime.now(UTC)
    plans = dispatch.ticket_options(conn, ticket_id, now, dispatch.TravelModel.from_settings(settings))
    return [plan.as_dict(now) for plan in plans]
