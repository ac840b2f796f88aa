"""Tenant isolation: a customer caller sees only its own customer's equipment and what hangs off it.

Routes call these after their access declaration. Something of another customer answers exactly
like something that does not exist (404), so ids cannot be probed.
"""

from __future__ import annotations

import psycopg
from fastapi import HTTPException

from api.roles import Principal

_OWNER = {
    "customer": "SELECT id FROM customers WHERE id = %s",
    "equipment": "SELECT customer FROM equipment WHERE id = %s",
    "alarm": "SELECT e.customer FROM alarms a JOIN equipment e ON e.id = a.equipment_id WHERE a.id = %s",
    "ticket": "SELECT e.customer FROM tickets t JOIN equipment e ON e.id = t.equipment_id WHERE t.id = %s",
    "complaint": "SELECT e.customer FROM complaints c JOIN tickets t ON t.id = c.ticket_id "
                 "JOIN equipment e ON e.id = t.equipment_id WHERE c.id = %s",
}


def not_found(kind: str, key: object) -> HTTPException:
    return HTTPException(404, f"no {kind} {key!r}" if isinstance(key, str) else f"no {kind} {key}")


def ensure_visible(conn: psycopg.Connection, caller: Principal, kind: str, key: object) -> None:
    """404 unless ``key`` (an equipment id, alarm id or ticket id) exists and the caller may see it."""
    row = conn.execute(_OWNER[kind], (key,)).fetchone()
    if row is None or (caller.scope is not None and row[0] != caller.scope):
        raise not_found(kind, key)


def customer_filter(caller: Principal, requested: str | None) -> str | None:
    """The customer a listing is limited to: the caller's own for a customer (asking for another is
    answered like an unknown customer), else whatever was asked (None: every customer)."""
    if caller.scope is None:
        return requested
    if requested is not None and requested != caller.scope:
        raise not_found("customer", requested)
    return caller.scope
