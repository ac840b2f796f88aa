"""ISO 15143-3 (AEMP 2.0) telematics interface: fleet snapshot and per-equipment time series, JSON or
XML by the Accept header, paged by ``Links``. A customer's token sees its own fleet only."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import psycopg
from fastapi import APIRouter, HTTPException, Path, Request
from fastapi.responses import JSONResponse, Response

from api import iso15143
from api.auth import Reader
from api.deps import MAX_RANGE, DbConn, SettingsDep, period
from api.tenancy import ensure_visible, not_found
from core.settings import Settings
from ingest import queries

router = APIRouter(prefix="/iso15143", tags=["iso15143"])

JSON_TYPES = ("application/json", "application/*", "*/*")
XML_TYPES = ("application/xml", "text/xml")
_DOCUMENT = {"description": "the ISO 15143-3 document", "content": {
    "application/json": {"schema": {"type": "object"}},
    "application/xml": {"schema": {"type": "string"}}}}
_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: _DOCUMENT, 404: {"description": "no such page, or no such equipment (of the caller's)"},
    406: {"description": "Accept names neither JSON nor XML"}}

Page = Annotated[int, Path(ge=1, le=1_000_000, description="page number, from 1")]
Element = Literal["Locations", "CumulativeOperatingHours", "FuelRemaining", "EngineCondition", "FaultCodes"]


def wants_xml(accept: str | None) -> bool:
    """True for XML, False for JSON (also when Accept is absent); 406 when neither is acceptable."""
    if not accept:
        return False
    best: tuple[float, int] | None = None  # (quality, 1 for JSON so that it wins ties)
    for part in accept.split(","):
        media, *params = [p.strip() for p in part.split(";")]
        quality = 1.0
        for param in params:
            if param.startswith("q="):
                try:
                    quality = float(param[2:])
                except ValueError:
                    quality = 0.0
        media = media.lower()
        if quality <= 0 or (media not in JSON_TYPES and media not in XML_TYPES):
            continue
        candidate = (quality, 1 if media in JSON_TYPES else 0)
        best = candidate if best is None or candidate > best else best
    if best is None:
        raise HTTPException(406, "acceptable: application/json or application/xml")
    return best[1] == 0


def _respond(request: Request, root: str, document: dict) -> Response:
    if wants_xml(request.headers.get("accept")):
        return Response(iso15143.to_xml(root, document), media_type="application/xml")
    return JSONResponse(document)


def _base(settings: Settings, path: str) -> str:
    return (settings.public_url or "").rstrip("/") + path


def _read_only(conn: psycopg.Connection) -> None:
    """The documents are pure reads: the database refuses any write for the rest of the request's
    transaction (setting read-only is allowed at any point of a transaction)."""
    conn.execute("SET TRANSACTION READ ONLY")


@router.get("/Fleet/{page}", responses=_RESPONSES, response_class=Response)
def fleet_snapshot(page: Page, caller: Reader, conn: DbConn,
                   settings: SettingsDep, request: Request) -> Response:
    """The fleet snapshot, 100 machines a page: header, location, operating and idle hours, fuel used
    (total and last 24 h), fuel remaining, engine status. Reads only: the running totals are kept by
    ingest's writer."""
    wants_xml(request.headers.get("accept"))
    _read_only(conn)
    offset = (page - 1) * iso15143.PAGE_SIZE
    machines, total = queries.list_equipment(conn, offline_after_s=settings.offline_after_s, customer=caller.scope,
                                             limit=iso15143.PAGE_SIZE, offset=offset)
    if page > iso15143.page_count(total):
        raise HTTPException(404, f"no page {page}; the last is {iso15143.page_count(total)}")
    document = iso15143.fleet_document(conn, machines, total, page, _base(settings, "/api/v1/iso15143/Fleet"),
                                       datetime.now(UTC), oem_name=settings.iso_oem_name,
                                       tank_litres=settings.fuel_tank_litres)
    return _respond(request, "Fleet", document)


@router.get("/Fleet/Equipment/ID/{equipment_id}/{element}/{start}/{end}/{page}", responses=_RESPONSES,
            response_class=Response)
def equipment_time_series(equipment_id: str, element: Element, start: datetime, end: datetime, page: Page,
                          caller: Reader, conn: DbConn, settings: SettingsDep,
                          request: Request) -> Response:
    """One machine's readings of one data element in [start, end) (UTC; at most 400 days), 100 a page."""
    wants_xml(request.headers.get("accept"))
    start, end = period(start, end, default=MAX_RANGE)
    _read_only(conn)
    ensure_visible(conn, caller, "equipment", equipment_id)
    machine = queries.get_equipment(conn, equipment_id, offline_after_s=settings.offline_after_s)
    if machine is None:
        raise not_found("equipment", equipment_id)
    base = _base(settings, f"/api/v1/iso15143/Fleet/Equipment/ID/{equipment_id}/{element}/"
                          f"{iso15143.stamp(start)}/{iso15143.stamp(end)}")
    document = iso15143.time_series_document(conn, machine, element, start, end, page, base,
                                             oem_name=settings.iso_oem_name)
    pages = int(document["Links"][-1]["href"].rsplit("/", 1)[1])
    if page > pages:
        raise HTTPException(404, f"no page {page}; the last is {pages}")
    return _respond(request, element, document)
