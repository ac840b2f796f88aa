from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from api.auth import Reader
from api.deps import DbConn
from api.schemas.faults import FaultPublic, FaultsPublic
from diagnostics import queries

router = APIRouter(prefix="/faults", tags=["faults"])


@router.get("", response_model=FaultsPublic)
def list_faults(caller: Reader, conn: DbConn,
                equipment_id: str | None = None, fault_code: str | None = None,
                active: bool | None = None, limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                offset: Annotated[int, Query(ge=0)] = 0) -> FaultsPublic:
    """Diagnosed faults, newest first, each with its evidence and ranked probable causes."""
    rows, count = queries.list_faults(conn, equipment_id=equipment_id, fault_code=fault_code, active=active,
                                      limit=limit, offset=offset, customer=caller.scope)
    return FaultsPublic(data=[FaultPublic(**row) for row in rows], count=count)
