from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query

from api.auth import Reader
from api.deps import DbConn, SettingsDep, parse_bucket, period
from api.schemas.equipment import EquipmentPublic, EquipmentsPublic, ReadingPublic, ReadingsPublic
from api.tenancy import customer_filter, ensure_visible, not_found
from ingest import queries

router = APIRouter(prefix="/equipment", tags=["equipment"])

MAX_PAGE = 1000
MAX_POINTS = 10_000
# Raw readings are for zooming in; longer ranges must name a bucket.
MAX_RAW_RANGE = timedelta(days=7)
@router.get("", response_model=EquipmentsPublic)
def list_equipment(caller: Reader, conn: DbConn, settings: SettingsDep,
                   customer: str | None = None,
                   limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
                   offset: Annotated[int, Query(ge=0)] = 0) -> EquipmentsPublic:
    rows, count = queries.list_equipment(conn, offline_after_s=settings.offline_after_s,
                                         customer=customer_filter(caller, customer),
                                         limit=limit, offset=offset)
    return EquipmentsPublic(data=[EquipmentPublic(**row) for row in rows], count=count)


@router.get("/{equipment_id}", response_model=EquipmentPublic)
def get_equipment(equipment_id: str, caller: Reader, conn: DbConn,
                  settings: SettingsDep) -> EquipmentPublic:
    row = queries.get_equipment(conn, equipment_id, offline_after_s=settings.offline_after_s)
    if row is None or (caller.scope is not None and row["customer"] != caller.scope):
        raise not_found("equipment", equipment_id)
    return EquipmentPublic(**row)


@router.get("/{equipment_id}/readings", response_model=ReadingsPublic)
def get_readings(
    equipment_id: str,
    caller: Reader,
    conn: DbConn,
    settings: SettingsDep,
    start: datetime | None = None,
    end: datetime | None = None,
    bucket: Annotated[str | None, Query(description="downsample: 30s, 5m, 1h, 1d …")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_POINTS)] = MAX_POINTS,
) -> ReadingsPublic:
    start, end = period(start, end, default=timedelta(hours=1))
    span = end - start
    step = parse_bucket(bucket) if bucket else None
    if step is None and span > MAX_RAW_RANGE:
        raise HTTPException(422, f"raw readings cover at most {MAX_RAW_RANGE.days} days; give a bucket")
    if step is not None and span / step > MAX_POINTS:
        raise HTTPException(422, f"bucket too small: more than {MAX_POINTS} points; choose a larger one")
    ensure_visible(conn, caller, "equipment", equipment_id)
    rows = queries.readings(conn, equipment_id, start, end, step, limit)
    return ReadingsPublic(equipment_id=equipment_id, start=start, end=end,
                          bucket_s=step.total_seconds() if step else None,
                          data=[ReadingPublic(**row) for row in rows], count=len(rows))
