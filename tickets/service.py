"""Work orders: creation (idempotent), listing, history. SQL for the tickets tables lives here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from core.db import where_equal
from core.errors import IronSightError

OPEN_STATES = ("created",)


class UnknownEquipment(IronSightError):
    pass


class IdempotencyConflict(IronSightError):
    """The idempotency key or alarm was already used for a different request."""


@dataclass(frozen=True, slots=True)
class NewTicket:
    equipment_id: str
    title: str
    priority: str
    description: str = ""
    fault_code: str | None = None
    source_alarm_id: int | None = None
    idempotency_key: str | None = None
    created_by: str = "api"


_COLUMNS = ("id, equipment_id, title, description, priority, state, fault_code, source_alarm_id, "
            "created_by, created_at, updated_at")


def create_ticket(conn: psycopg.Connection, new: NewTicket) -> tuple[dict[str, Any], bool]:
    """Return (ticket, created). A repeat with the same alarm or idempotency key returns the first."""
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        existing = _find_repeat(cur, new)
        if existing is not None:
            return existing, False
        if cur.execute("SELECT 1 FROM equipment WHERE id = %s", (new.equipment_id,)).fetchone() is None:
            raise UnknownEquipment(new.equipment_id)
        row = cur.execute(
            f"""INSERT INTO tickets (equipment_id, title, description, priority, fault_code, source_alarm_id,
                                    idempotency_key, created_by)
                VALUES (%s, %s, %s, %s, %s, %s, %s, %s)
                ON CONFLICT DO NOTHING
                RETURNING {_COLUMNS}""",
            (new.equipment_id, new.title, new.description, new.priority, new.fault_code, new.source_alarm_id,
             new.idempotency_key, new.created_by),
        ).fetchone()
        if row is None:
            # A concurrent request with the same key won the race; its ticket is the answer.
            existing = _find_repeat(cur, new)
            if existing is None:
                raise IdempotencyConflict("ticket insert conflicted but no matching ticket was found")
            return existing, False
        cur.execute(
            "INSERT INTO ticket_events (ticket_id, actor, event, detail) VALUES (%s, %s, 'created', %s)",
            (row["id"], new.created_by, Jsonb({"source_alarm_id": new.source_alarm_id})),
        )
        return row, True


def _find_repeat(cur: psycopg.Cursor, new: NewTicket) -> dict[str, Any] | None:
    if new.source_alarm_id is None and new.idempotency_key is None:
        return None
    row = cur.execute(
        f"SELECT {_COLUMNS}, idempotency_key FROM tickets WHERE source_alarm_id = %s OR idempotency_key = %s "
        "ORDER BY id LIMIT 1",
        (new.source_alarm_id, new.idempotency_key),
    ).fetchone()
    if row is None:
        return None
    if row["equipment_id"] != new.equipment_id:
        raise IdempotencyConflict(f"key already used for ticket {row['id']} on another equipment")
    row.pop("idempotency_key")
    return row


def get_ticket(conn: psycopg.Connection, ticket_id: int) -> dict[str, Any] | None:
    with conn.cursor(row_factory=dict_row) as cur:
        ticket = cur.execute(f"SELECT {_COLUMNS} FROM tickets WHERE id = %s", (ticket_id,)).fetchone()
        if ticket is None:
            return None
        ticket["history"] = cur.execute(
            "SELECT at, actor, event, detail FROM ticket_events WHERE ticket_id = %s ORDER BY at, id", (ticket_id,)
        ).fetchall()
        return ticket


def list_tickets(conn: psycopg.Connection, *, equipment_id: str | None, state: str | None,
                 limit: int, offset: int) -> tuple[list[dict[str, Any]], int]:
    where, params = where_equal(equipment_id=equipment_id, state=state)
    with conn.cursor(row_factory=dict_row) as cur:
        count = cur.execute(f"SELECT count(*) AS n FROM tickets {where}", params).fetchone()["n"]
        rows = cur.execute(
            f"SELECT {_COLUMNS} FROM tickets {where} ORDER BY id DESC LIMIT %s OFFSET %s", [*params, limit, offset]
        ).fetchall()
    return rows, count


def count_open(conn: psycopg.Connection) -> int:
    return conn.execute("SELECT count(*) FROM tickets WHERE state = ANY(%s)", (list(OPEN_STATES),)).fetchone()[0]
