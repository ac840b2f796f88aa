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
    diagnosis: dict[str, Any] | None = None
    remote_resolvable: bool | None = None


_COLUMNS = ("id, equipment_id, title, description, priority, state, fault_code, source_alarm_id, "
            "created_by, created_at, updated_at, diagnosis, remote_resolvable")


def create_ticket(conn: psycopg.Connection, new: NewTicket) -> tuple[dict[str, Any], bool]:
    """Return (ticket, created). A repeat with the same alarm or idempotency key returns the first
    ticket; an alarm for a machine that already has an open ticket is linked to that ticket."""
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        existing = _find_repeat(cur, new)
        if existing is not None:
            return existing, False
        if cur.execute("SELECT 1 FROM equipment WHERE id = %s", (new.equipment_id,)).fetchone() is None:
            raise UnknownEquipment(new.equipment_id)
        if new.source_alarm_id is not None:
            # Serialise alarm tickets per machine so that two alarms at once make one work order.
            cur.execute("SELECT pg_advisory_xact_lock(hashtext('ticket:' || %s))", (new.equipment_id,))
            open_ticket = cur.execute(
                f"SELECT {_COLUMNS} FROM tickets WHERE equipment_id = %s AND state = ANY(%s) ORDER BY id LIMIT 1",
                (new.equipment_id, list(OPEN_STATES)),
            ).fetchone()
            if open_ticket is not None:
                _link_alarm(cur, open_ticket["id"], new.source_alarm_id, new.created_by, new.fault_code)
                return open_ticket, False
        row = cur.execute(
            f"""INSERT INTO tickets (equipment_id, title, description, priority, fault_code, source_alarm_id,
                                    idempotency_key, created_by, diagnosis, remote_resolvable)
                VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
                ON CONFLICT DO NOTHING
                RETURNING {_COLUMNS}""",
            (new.equipment_id, new.title, new.description, new.priority, new.fault_code, new.source_alarm_id,
             new.idempotency_key, new.created_by, Jsonb(new.diagnosis) if new.diagnosis is not None else None,
             new.remote_resolvable),
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
        if new.source_alarm_id is not None:
            cur.execute("INSERT INTO ticket_alarms (alarm_id, ticket_id) VALUES (%s, %s)",
                        (new.source_alarm_id, row["id"]))
        return row, True


def _link_alarm(cur: psycopg.Cursor, ticket_id: int, alarm_id: int, actor: str, fault_code: str | None) -> None:
    cur.execute("INSERT INTO ticket_alarms (alarm_id, ticket_id) VALUES (%s, %s)", (alarm_id, ticket_id))
    cur.execute(
        "INSERT INTO ticket_events (ticket_id, actor, event, detail) VALUES (%s, %s, 'alarm_linked', %s)",
        (ticket_id, actor, Jsonb({"alarm_id": alarm_id, "fault_code": fault_code})),
    )


def _find_repeat(cur: psycopg.Cursor, new: NewTicket) -> dict[str, Any] | None:
    if new.source_alarm_id is not None:
        row = cur.execute(
            f"SELECT {_COLUMNS} FROM tickets WHERE id = (SELECT ticket_id FROM ticket_alarms WHERE alarm_id = %s)",
            (new.source_alarm_id,),
        ).fetchone()
        if row is not None:
            return _same_equipment(row, new)
    if new.idempotency_key is None:
        return None
    row = cur.execute(f"SELECT {_COLUMNS} FROM tickets WHERE idempotency_key = %s", (new.idempotency_key,)).fetchone()
    return _same_equipment(row, new) if row is not None else None


def _same_equipment(row: dict[str, Any], new: NewTicket) -> dict[str, Any]:
    if row["equipment_id"] != new.equipment_id:
        raise IdempotencyConflict(f"key already used for ticket {row['id']} on another equipment")
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
