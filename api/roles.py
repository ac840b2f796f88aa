"""Who a caller is: the roles of the API and the principal a request acts as."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Role(StrEnum):
    admin = "admin"
    dispatcher = "dispatcher"
    engineer = "engineer"
    customer = "customer"
    service = "service"


# The control centre works every fleet; a customer sees one.
STAFF = (Role.admin, Role.dispatcher, Role.engineer)
READERS = (*STAFF, Role.customer)


@dataclass(frozen=True, slots=True)
class Principal:
    user_id: int
    username: str
    role: Role
    customer: str | None
    token_id: int

    @property
    def scope(self) -> str | None:
        """The one customer whose data the caller may see; None for staff (every customer)."""
        return self.customer if self.role is Role.customer else None
