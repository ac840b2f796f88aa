"""Customers as records: the company, its contract tier, its contacts and their numbers. Admins and
dispatchers keep them; a customer account reads its own."""

from __future__ import annotations

from typing import Annotated

import psycopg
from fastapi import APIRouter, HTTPException, Path, Query, Response, status

from api.auth import Reader, Staff, require
from api.deps import DbConn, SettingsDep
from api.roles import Role
from api.schemas.customers import (
    ContactCreate,
    ContactFields,
    ContactPublic,
    ContractTierPublic,
    ContractTierPut,
    CustomerCreate,
    CustomerFields,
    CustomerPublic,
    CustomersPublic,
)
from api.tenancy import ensure_visible, not_found
from core import customers
from tickets import sla

router = APIRouter(tags=["customers"])

KEEPERS = [require(Role.admin, Role.dispatcher)]
MAX_PAGE = 500


@router.get("/customers", response_model=CustomersPublic)
def list_customers(caller: Staff, conn: DbConn, q: Annotated[str | None, Query(max_length=100)] = None,
                   limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
                   offset: Annotated[int, Query(ge=0)] = 0) -> CustomersPublic:
    """Customers by id; ``q`` finds a part of the id or the name."""
    rows, count = customers.list_customers(conn, query=q, limit=limit, offset=offset)
    return CustomersPublic(data=[CustomerPublic(**r) for r in rows], count=count)


@router.post("/customers", response_model=CustomerPublic, status_code=status.HTTP_201_CREATED, dependencies=KEEPERS,
             responses={409: {"description": "a customer with this id exists"}})
def create_customer(body: CustomerCreate, conn: DbConn) -> CustomerPublic:
    try:
        row = customers.upsert_customer(conn, body.id, body.model_dump(exclude={"id"}, exclude_none=True),
                                        create=True)
    except LookupError as exc:
        raise HTTPException(422, str(exc)) from None
    except psycopg.errors.UniqueViolation:
        raise HTTPException(409, f"customer {body.id!r} exists") from None
    return CustomerPublic(**row)  # type: ignore[arg-type]


@router.get("/customers/{customer_id}", response_model=CustomerPublic)
def get_customer(customer_id: str, caller: Reader, conn: DbConn) -> CustomerPublic:
    ensure_visible(conn, caller, "customer", customer_id)
    row = customers.get_customer(conn, customer_id)
    if row is None:
        raise not_found("customer", customer_id)
    return CustomerPublic(**row)


@router.patch("/customers/{customer_id}", response_model=CustomerPublic, dependencies=KEEPERS)
def update_customer(customer_id: str, body: CustomerFields, conn: DbConn) -> CustomerPublic:
    """Only the fields given change; ``tier: null`` puts the customer back on the default limits."""
    fields = body.model_dump(exclude_unset=True)
    for required in ("name", "notes"):
        if required in fields and fields[required] is None:
            raise HTTPException(422, f"{required} cannot be null")
    try:
        row = customers.upsert_customer(conn, customer_id, fields, create=False)
    except LookupError as exc:
        raise HTTPException(422, str(exc)) from None
    if row is None:
        raise not_found("customer", customer_id)
    return CustomerPublic(**row)


@router.delete("/customers/{customer_id}", status_code=status.HTTP_204_NO_CONTENT,
               dependencies=[require(Role.admin)], responses={409: {"description": "it still has machines"}})
def delete_customer(customer_id: str, conn: DbConn) -> Response:
    try:
        deleted = customers.delete_customer(conn, customer_id)
    except ValueError as exc:
        raise HTTPException(409, str(exc)) from None
    if not deleted:
        raise not_found("customer", customer_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/customers/{customer_id}/contacts", response_model=list[ContactPublic])
def list_contacts(customer_id: str, caller: Reader, conn: DbConn) -> list[ContactPublic]:
    ensure_visible(conn, caller, "customer", customer_id)
    return [ContactPublic(**r) for r in customers.list_contacts(conn, customer_id)]


@router.post("/customers/{customer_id}/contacts", response_model=ContactPublic, status_code=status.HTTP_201_CREATED,
             dependencies=KEEPERS)
def create_contact(customer_id: str, body: ContactCreate, conn: DbConn, settings: SettingsDep) -> ContactPublic:
    if customers.get_customer(conn, customer_id) is None:
        raise not_found("customer", customer_id)
    return _save_contact(conn, customer_id, None, body.model_dump(exclude_none=True), settings.phone_region)


@router.patch("/customers/{customer_id}/contacts/{contact_id}", response_model=ContactPublic, dependencies=KEEPERS)
def update_contact(customer_id: str, contact_id: int, body: ContactFields, conn: DbConn,
                   settings: SettingsDep) -> ContactPublic:
    """Only the fields given change; ``phones`` replaces the contact's numbers."""
    fields = body.model_dump(exclude_unset=True)
    for required in ("name", "role", "preferred_channel", "language"):
        if required in fields and fields[required] is None:
            raise HTTPException(422, f"{required} cannot be null")
    return _save_contact(conn, customer_id, contact_id, fields, settings.phone_region)


@router.delete("/customers/{customer_id}/contacts/{contact_id}", status_code=status.HTTP_204_NO_CONTENT,
               dependencies=KEEPERS)
def delete_contact(customer_id: str, contact_id: int, conn: DbConn) -> Response:
    if not customers.delete_contact(conn, customer_id, contact_id):
        raise not_found("contact", contact_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


def _save_contact(conn: psycopg.Connection, customer_id: str, contact_id: int | None, fields: dict,
                  region: str) -> ContactPublic:
    try:
        row = customers.save_contact(conn, customer_id, contact_id, fields, region)
    except customers.InvalidPhone as exc:
        raise HTTPException(422, str(exc)) from None
    if row is None:
        raise not_found("contact", contact_id)
    return ContactPublic(**row)


@router.get("/contract-tiers", response_model=list[ContractTierPublic])
def list_contract_tiers(caller: Staff, conn: DbConn) -> list[ContractTierPublic]:
    return [ContractTierPublic(**r) for r in sla.list_tiers(conn)]


@router.put("/contract-tiers/{name}", response_model=ContractTierPublic, dependencies=KEEPERS)
def put_contract_tier(name: Annotated[str, Path(min_length=1, max_length=100)], body: ContractTierPut,
                      conn: DbConn) -> ContractTierPublic:
    """Create or replace a tier: its limits for faults, and other ones per kind of request. Tickets
    created from then on for its customers follow it."""
    row = sla.put_tier(conn, name, description=body.description, respond_h=body.respond_h, arrive_h=body.arrive_h,
                       resolve_h=body.resolve_h, remote_diagnosis_min=body.remote_diagnosis_min,
                       callback_h=body.callback_h,
                       limits={k: (v.respond_h, v.resolve_h) for k, v in body.limits.items()})
    return ContractTierPublic(**row)
