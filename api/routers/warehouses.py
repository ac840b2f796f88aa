"""Warehouses and their stock, and the parts held across them. Staff read them; admins and
dispatchers change them."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, HTTPException

from api.auth import ADMIN_OR_DISPATCHER, STAFF_ONLY
from api.deps import DbConn, PartName, ResourceId, one_or_404
from api.schemas.dispatch import (
    PartTotals,
    StockQuantity,
    WarehouseBody,
    WarehousePublic,
)
from tickets import resources, stock

router = APIRouter(tags=["service organisation"])


@router.get("/warehouses", dependencies=STAFF_ONLY, response_model=list[WarehousePublic])
def list_warehouses(conn: DbConn) -> list[dict]:
    return resources.list_warehouses(conn)


@router.get("/warehouses/{warehouse_id}", dependencies=STAFF_ONLY, response_model=WarehousePublic)
def get_warehouse(warehouse_id: ResourceId, conn: DbConn) -> dict:
    return one_or_404(resources.list_warehouses(conn, warehouse_id), "warehouse", warehouse_id)


@router.put("/warehouses/{warehouse_id}", dependencies=ADMIN_OR_DISPATCHER, response_model=WarehousePublic)
def put_warehouse(warehouse_id: ResourceId, body: WarehouseBody, conn: DbConn) -> dict:
    resources.upsert_warehouse(conn, resources.Warehouse(warehouse_id, body.name, body.lat, body.lon,
                                                         tuple((p.part, p.quantity) for p in body.parts)),
                               at=datetime.now(UTC))
    return resources.list_warehouses(conn, warehouse_id)[0]


@router.put("/warehouses/{warehouse_id}/stock/{part}", dependencies=ADMIN_OR_DISPATCHER, response_model=WarehousePublic,
            description="Set the counted stock of one part (a delivery or an inventory count); recorded in the "
                        "stock ledger.")
def put_warehouse_stock(warehouse_id: ResourceId, part: PartName, body: StockQuantity, conn: DbConn) -> dict:
    try:
        resources.set_stock(conn, "warehouse", warehouse_id, part, body.quantity, at=datetime.now(UTC))
    except resources.UnknownResource as exc:
        raise HTTPException(404, str(exc)) from None
    return resources.list_warehouses(conn, warehouse_id)[0]


@router.get("/parts", dependencies=STAFF_ONLY, response_model=list[PartTotals],
            description="Stock of every part, on shelves and in vans.")
def list_parts(conn: DbConn) -> list[dict]:
    return stock.totals_by_part(conn)
