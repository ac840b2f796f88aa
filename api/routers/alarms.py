from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query

from alarms import queries
from api.deps import DbConn
from api.schemas import AlarmsPublic

router = APIRouter(prefix="/alarms", tags=["alarms"])


@router.get("", response_model=AlarmsPublic)
def list_alarms(conn: DbConn, equipment_id: str | None = None,
                state: Literal["active", "cleared"] | None = None,
                limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                offset: Annotated[int, Query(ge=0)] = 0) -> AlarmsPublic:
    rows, count = queries.list_alarms(conn, equipment_id=equipment_id, state=state, limit=limit, offset=offset)
    return AlarmsPublic(data=rows, count=count)
