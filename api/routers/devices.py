"""The device registry: controllers on machines, their credentials, revocation."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Response

from api.auth import require
from api.deps import DbConn
from api.roles import Role
from api.schemas.devices import CredentialPublic, DeviceCreate, DevicePublic, DevicesPublic, DeviceState, DeviceUpdate
from core.register import EquipmentRecord
from devices import registry

# The registry and the controllers' credentials are an administrator's business.
router = APIRouter(prefix="/devices", tags=["devices"], dependencies=[require(Role.admin)])

MAX_PAGE = 1000


@router.post("", response_model=DevicePublic, status_code=201,
             responses={404: {"description": "no such machine, and no details to register it"},
                        409: {"description": "the machine already has a device, or the serial is taken"}})
def create_device(body: DeviceCreate, conn: DbConn) -> DevicePublic:
    model, kind, customer = body.model, body.kind, body.customer
    machine = (model, kind, customer)
    if any(machine) and not all(machine):
        raise HTTPException(422, "to register the machine too, give model, kind and customer")
    equipment = EquipmentRecord(body.equipment_id, body.equipment_serial or body.serial, model, kind,
                                customer, body.site) if model and kind and customer else None
    try:
        row = registry.create_device(conn, equipment=equipment, equipment_id=body.equipment_id, serial=body.serial,
                                     firmware=body.firmware, commissioned_on=body.commissioned_on,
                                     report_interval_s=body.report_interval_s)
    except registry.RegistryError as exc:
        raise HTTPException(exc.status, str(exc)) from None
    return DevicePublic(**row)


@router.get("", response_model=DevicesPublic)
def list_devices(conn: DbConn, state: DeviceState | None = None,
                 limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
                 offset: Annotated[int, Query(ge=0)] = 0) -> DevicesPublic:
    rows, count = registry.list_devices(conn, state=state, limit=limit, offset=offset)
    return DevicesPublic(data=[DevicePublic(**row) for row in rows], count=count)


@router.get("/{equipment_id}", response_model=DevicePublic)
def get_device(equipment_id: str, conn: DbConn) -> DevicePublic:
    return DevicePublic(**_found(registry.get_device(conn, equipment_id), equipment_id))


@router.patch("/{equipment_id}", response_model=DevicePublic)
def update_device(equipment_id: str, body: DeviceUpdate, conn: DbConn) -> DevicePublic:
    row = registry.update_device(conn, equipment_id, body.model_dump(exclude_unset=True))
    return DevicePublic(**_found(row, equipment_id))


@router.delete("/{equipment_id}", status_code=204)
def delete_device(equipment_id: str, conn: DbConn) -> Response:
    if not registry.delete_device(conn, equipment_id):
        raise HTTPException(404, f"no device on {equipment_id!r}")
    return Response(status_code=204)


@router.post("/{equipment_id}/credential", response_model=CredentialPublic, status_code=201,
             responses={404: {"description": "no device on the machine"},
                        409: {"description": "the device is not pending (provisioned or revoked)"}})
def issue_credential(equipment_id: str, conn: DbConn) -> CredentialPublic:
    """A new broker password for the controller (also reinstates a revoked one); the old one stops working."""
    try:
        password = registry.issue_credential(conn, equipment_id)
    except registry.RegistryError as exc:
        raise HTTPException(exc.status, str(exc)) from None
    return CredentialPublic(equipment_id=equipment_id, username=equipment_id, password=password)


@router.post("/{equipment_id}/revoke", response_model=DevicePublic)
def revoke(equipment_id: str, conn: DbConn) -> DevicePublic:
    """The broker refuses the controller from its next reload on, and drops its connection."""
    return DevicePublic(**_found(registry.revoke(conn, equipment_id), equipment_id))


def _found(row, equipment_id: str):
    if row is None:
        raise HTTPException(404, f"no device on {equipment_id!r}")
    return row
