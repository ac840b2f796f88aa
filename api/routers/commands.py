"""Talking back to a machine: its presence, and remote commands with their lifecycle."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query

from api.auth import Reader, Staff, require
from api.deps import DbConn, SettingsDep
from api.roles import Principal, Role
from api.schemas.devices import CommandCreate, CommandPublic, CommandsPublic, PresencePublic
from api.tenancy import ensure_visible
from devices import commands, registry

router = APIRouter(prefix="/equipment", tags=["commands"])

MAX_PAGE = 1000


LOCKING = ("lock", "unlock")


def require_admin_for_lock(caller: Principal) -> None:
    """The one place that decides who may lock or unlock a machine (engine start inhibit): an admin."""
    if caller.role is not Role.admin:
        raise HTTPException(403, f"a {caller.role.value} may not lock or unlock a machine; an admin may")


@router.get("/{equipment_id}/presence", response_model=PresencePublic)
def get_presence(equipment_id: str, caller: Reader, conn: DbConn,
                 settings: SettingsDep) -> PresencePublic:
    ensure_visible(conn, caller, "equipment", equipment_id)
    row = registry.presence(conn, equipment_id, offline_after_s=settings.offline_after_s)
    if row is None:
        raise HTTPException(404, f"no equipment {equipment_id!r}")
    return PresencePublic(**row)


@router.post("/{equipment_id}/commands", response_model=CommandPublic, status_code=202)
def create_command(equipment_id: str, body: CommandCreate, conn: DbConn, settings: SettingsDep,
                   caller: Annotated[Principal, require(Role.admin, Role.dispatcher)]) -> CommandPublic:
    """Queue a command; it is sent when the controller is connected. Follow it with GET. Lock and
    unlock are for admins, with a reason; the audit trail names the account that asked."""
    if body.kind in LOCKING:
        require_admin_for_lock(caller)
    try:
        row = commands.create_command(conn, equipment_id, body.kind, body.params,
                                      timeout_s=body.timeout_s or settings.command_timeout_s,
                                      requested_by=caller.username, reason=body.reason)
    except LookupError as exc:
        raise HTTPException(404, str(exc)) from None
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from None
    return CommandPublic(**row)


@router.get("/{equipment_id}/commands", response_model=CommandsPublic)
def list_commands(equipment_id: str, caller: Staff, conn: DbConn,
                  limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
                  offset: Annotated[int, Query(ge=0)] = 0) -> CommandsPublic:
    rows, count = commands.list_commands(conn, equipment_id, limit=limit, offset=offset)
    return CommandsPublic(data=[CommandPublic(**row) for row in rows], count=count)


@router.get("/{equipment_id}/commands/{command_id}", response_model=CommandPublic)
def get_command(equipment_id: str, command_id: str, caller: Staff,
                conn: DbConn) -> CommandPublic:
    row = commands.get_command(conn, command_id, with_events=True)
    if row is None or row["equipment_id"] != equipment_id:
        raise HTTPException(404, f"no command {command_id!r} for {equipment_id!r}")
    return CommandPublic(**row)
