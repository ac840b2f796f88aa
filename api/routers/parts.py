"""The spare-parts catalogue. Staff read it, admins and dispatchers maintain it; customers look up
the parts that fit their own machines, with the nearest warehouse holding each."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query

from api.auth import ADMIN_OR_DISPATCHER, STAFF_ONLY, Reader
from api.deps import DbConn
from api.schemas.parts import (
    PART_NUMBER_MAX_CHARS,
    PART_NUMBER_PATTERN,
    MachinePartsPublic,
    PartCatalogueBody,
    PartCataloguePublic,
    PartsCataloguePublic,
)
from api.tenancy import ensure_visible, not_found
from tickets import parts_catalogue

router = APIRouter(tags=["parts"])

MAX_PAGE = 500
# A customer picks from a list on a screen; more than this means the query should be narrower.
MAX_MACHINE_PARTS = 100
MAX_OFFSET = 1_000_000

PartNumber = Annotated[str, Path(min_length=1, max_length=PART_NUMBER_MAX_CHARS, pattern=PART_NUMBER_PATTERN)]
SearchText = Annotated[str | None, Query(max_length=100, description="part number or name contains this, any case")]


@router.get("/parts-catalogue", dependencies=STAFF_ONLY, response_model=PartsCataloguePublic)
def list_catalogue(conn: DbConn, q: SearchText = None,
                   model: Annotated[str | None, Query(max_length=64, description="fits this equipment model")] = None,
                   limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
                   offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0) -> dict:
    rows, count = parts_catalogue.search(conn, text=q, model=model, limit=limit, offset=offset)
    return {"data": rows, "count": count}


@router.put("/parts-catalogue/{part_number}", dependencies=ADMIN_OR_DISPATCHER, response_model=PartCataloguePublic,
            responses={409: {"description": "another part number already has this name"}},
            description="Add or replace a catalogue entry. Its name is the one stock is counted under "
                        "(PUT /warehouses/{id}/stock/{part}).")
def put_catalogue_part(part_number: PartNumber, body: PartCatalogueBody, conn: DbConn) -> dict:
    part = parts_catalogue.CataloguePart(part_number, body.name, body.description, tuple(body.models),
                                         body.list_price, body.currency)
    try:
        return parts_catalogue.upsert_part(conn, part, at=datetime.now(UTC))
    except parts_catalogue.NameTaken as exc:
        raise HTTPException(409, str(exc)) from None


@router.get("/portal/equipment/{equipment_id}/parts", response_model=MachinePartsPublic, tags=["portal"],
            responses={404: {"description": "no such equipment (of the caller's)"}})
def machine_parts(equipment_id: str, caller: Reader, conn: DbConn, q: SearchText = None,
                  limit: Annotated[int, Query(ge=1, le=MAX_MACHINE_PARTS)] = 20) -> dict:
    """Spare parts that fit this machine's model, each with its stock in all warehouses and the
    nearest warehouse holding it (great-circle distance from the machine's last position, or its
    site's centre)."""
    ensure_visible(conn, caller, "equipment", equipment_id)
    found = parts_catalogue.parts_for_equipment(conn, equipment_id, text=q, limit=limit)
    if found is None:
        raise not_found("equipment", equipment_id)
    return found
