"""Service groups: expert groups, departments, management and the call centre, with their members
(who are notified when a group is needed)."""

from __future__ import annotations

from typing import Annotated

import psycopg
from fastapi import APIRouter, HTTPException, Path, status

from api.auth import Staff, require
from api.deps import DbConn
from api.roles import Role
from api.schemas.aftercare import GroupKind, ServiceGroupPublic, ServiceGroupPut
from api.tenancy import not_found
from tickets import groups

router = APIRouter(prefix="/service-groups", tags=["service groups"])
GroupName = Annotated[str, Path(min_length=1, max_length=100)]


@router.get("", response_model=list[ServiceGroupPublic])
def list_groups(caller: Staff, conn: DbConn, kind: GroupKind | None = None) -> list[ServiceGroupPublic]:
    return [ServiceGroupPublic(**g) for g in groups.list_groups(conn, kind)]


@router.get("/{name}", response_model=ServiceGroupPublic)
def get_group(name: GroupName, caller: Staff, conn: DbConn) -> ServiceGroupPublic:
    group = groups.get_group(conn, name)
    if group is None:
        raise not_found("service group", name)
    return ServiceGroupPublic(**group)


@router.put("/{name}", response_model=ServiceGroupPublic, dependencies=[require(Role.admin)])
def put_group(name: GroupName, body: ServiceGroupPut, conn: DbConn) -> ServiceGroupPublic:
    """Create or replace a group and its members."""
    return ServiceGroupPublic(**groups.put_group(
        conn, name, kind=body.kind, description=body.description, skills=body.skills, webhook_url=body.webhook_url,
        members=[m.model_dump() for m in body.members]))


@router.delete("/{name}", status_code=status.HTTP_204_NO_CONTENT, dependencies=[require(Role.admin)],
               responses={409: {"description": "tickets or complaints refer to the group"}})
def delete_group(name: GroupName, conn: DbConn) -> None:
    try:
        deleted = groups.delete_group(conn, name)
    except psycopg.errors.ForeignKeyViolation:
        raise HTTPException(409, f"tickets or complaints refer to {name!r}") from None
    if not deleted:
        raise not_found("service group", name)
