"""Customers as records, their contacts, and contract tiers (core.customers, tickets.sla)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Literal

from pydantic import BaseModel, Field, StringConstraints

from core.customers import PREFERRED_CHANNELS
from tickets.sla import TICKET_KINDS

CustomerId = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=r"^[^\x00-\x1f]+$")]
PreferredChannel = Literal[PREFERRED_CHANNELS]  # type: ignore[valid-type]
TicketKindName = Literal[TICKET_KINDS]  # type: ignore[valid-type]
Hours = Annotated[float, Field(gt=0, le=24 * 365)]


class CustomerFields(BaseModel):
    name: str | None = Field(None, min_length=1, max_length=200, description="the company's name")
    tier: str | None = Field(None, max_length=100, description="its contract tier (GET /contract-tiers)")
    contract_number: str | None = Field(None, max_length=100)
    contract_until: date | None = None
    notes: str | None = Field(None, max_length=5000)


class CustomerCreate(CustomerFields):
    id: CustomerId = Field(description="the label its machines carry (equipment.customer)")


class CustomerPublic(BaseModel):
    id: str
    name: str
    tier: str | None
    contract_number: str | None
    contract_until: date | None
    notes: str
    created_at: datetime
    updated_at: datetime


class CustomersPublic(BaseModel):
    data: list[CustomerPublic]
    count: int


class ContactFields(BaseModel):
    name: str | None = Field(None, min_length=1, max_length=200)
    role: str | None = Field(None, max_length=100)
    email: str | None = Field(None, max_length=254, pattern=r"^[^@\s]+@[^@\s]+$")
    preferred_channel: PreferredChannel | None = None
    language: str | None = Field(None, pattern=r"^[a-z]{2}(-[A-Za-z]{2,4})?$",
                                 description="e.g. en, zh, zh-CN: the language of the notifications they get")
    notify_all: bool | None = Field(None, description="notified of every work order of the customer's fleet, not "
                                                      "only the ones they raised")
    phones: list[Annotated[str, StringConstraints(min_length=3, max_length=40)]] | None = Field(
        None, max_length=10, description="any common spelling; stored in E.164 (a number without country code "
                                         "is read in IRONSIGHT_PHONE_REGION)")


class ContactCreate(ContactFields):
    name: str = Field(min_length=1, max_length=200)


class ContactPublic(BaseModel):
    id: int
    customer_id: str
    name: str
    role: str
    email: str | None
    preferred_channel: str
    language: str
    notify_all: bool = False
    phones: list[str]
    created_at: datetime
    updated_at: datetime


class KindLimits(BaseModel):
    respond_h: Hours
    resolve_h: Hours


class ContractTierPut(BaseModel):
    description: str = Field("", max_length=1000)
    respond_h: Hours
    arrive_h: Hours
    resolve_h: Hours
    remote_diagnosis_min: float = Field(30.0, gt=0, le=24 * 60)
    callback_h: Hours = Field(48.0, description="the customer is called back within this time after a resolution, "
                                                 "and after a department's answer to a complaint")
    limits: dict[TicketKindName, KindLimits] = Field(
        default_factory=dict, description="other limits for requests of these kinds (faults use the tier's)")


class ContractTierPublic(ContractTierPut):
    name: str
    updated_at: datetime
