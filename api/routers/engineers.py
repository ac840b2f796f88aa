"""Engineers with their skills and shifts. Staff read them; admins and dispatchers change them."""

from __future__ import annotations

from datetime import UTC, datetime, time

from fastapi import APIRouter, HTTPException

from api.auth import ADMIN_OR_DISPATCHER, STAFF_ONLY
from api.deps import DbConn, ResourceId, one_or_404
from api.schemas.dispatch import (
    EngineerBody,
    EngineerPublic,
)
from tickets import resources

router = APIRouter(tags=["service organisation"])


def _engineers(conn: DbConn, engineer_id: str | None = None) -> list[dict]:
    rows = resources.list_engineers(conn, datetime.now(UTC), engineer_id)
    return [row | {"shift_start": f"{row['shift_start']:%H:%M}", "shift_end": f"{row['shift_end']:%H:%M}"}
            for row in rows]


@router.get("/engineers", dependencies=STAFF_ONLY, response_model=list[EngineerPublic])
def list_engineers(conn: DbConn) -> list[dict]:
    return _engineers(conn)


@router.get("/engineers/{engineer_id}", dependencies=STAFF_ONLY, response_model=EngineerPublic)
def get_engineer(engineer_id: ResourceId, conn: DbConn) -> dict:
    return one_or_404(_engineers(conn, engineer_id), "engineer", engineer_id)


@router.put("/engineers/{engineer_id}", dependencies=ADMIN_OR_DISPATCHER, response_model=EngineerPublic,
            responses={422: {"description": "no such station"}})
def put_engineer(engineer_id: ResourceId, body: EngineerBody, conn: DbConn) -> dict:
    try:
        resources.upsert_engineer(conn, resources.Engineer(
            engineer_id, body.name, body.station_id, tuple(body.skills), time.fromisoformat(body.shift_start),
            time.fromisoformat(body.shift_end), body.timezone, body.active, body.phone, body.email, body.language,
            body.preferred_channel))
    except resources.UnknownResource as exc:
        raise HTTPException(422, str(exc)) from None
    return _engineers(conn, engineer_id)[0]
