"""Reads over the alarms table."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.rows import dict_row

from alarms.lifecycle import ALARM_COLUMNS
from core.db import one, where_equal

_COLUMNS = ALARM_COLUMNS + ", f.title, f.diagnosis"


def list_alarms(conn: psycopg.Connection, *, equipment_id: str | None, state: str | None,
                limit: int, offset: int, acknowledged: bool | None = None,
                include_shelved: bool = False, customer: str | None = None) -> tuple[list[dict[str, Any]], int]:
    """Alarms newest first. Shelved alarms (until their period ends) are left out unless asked for."""
    where, params = where_equal("a", equipment_id=equipment_id, state=state)
    clauses = [where.removeprefix("WHERE ")] if where else []
    if customer is not None:
        clauses.append("a.equipment_id IN (SELECT id FROM equipment WHERE customer = %s)")
        params.append(customer)
    if acknowledged is not None:
        clauses.append("a.acknowledged_at IS NOT NULL" if acknowledged else "a.acknowledged_at IS NULL")
    if not include_shelved:
        clauses.append("(a.shelved_until IS NULL OR a.shelved_until <= now())")
    where = ("WHERE " + " AND ".join(clauses)) if clauses else ""
    with conn.cursor(row_factory=dict_row) as cur:
        count = one(cur.execute(f"SELECT count(*) AS n FROM alarms a {where}", params))["n"]
        rows = cur.execute(
            f"SELECT {_COLUMNS} FROM alarms a LEFT JOIN faults f ON f.id = a.last_fault_id "
            f"{where} "
            "ORDER BY a.raised_at DESC, a.id DESC LIMIT %s OFFSET %s",
            [*params, limit, offset],
        ).fetchall()
    return rows, count


def count_active(conn: psycopg.Connection) -> int:
    return one(conn.execute("SELECT count(*) FROM alarms WHERE state = 'active'"))[0]


def alarms_after(conn: psycopg.Connection, after_id: int, *, limit: int) -> list[dict[str, Any]]:
    """Alarms raised since ``after_id``, oldest first, with their fault's diagnosis."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            f"SELECT {_COLUMNS}, f.created_at AS fault_stored_at FROM alarms a "
            "LEFT JOIN faults f ON f.id = a.last_fault_id WHERE a.id > %s ORDER BY a.id LIMIT %s",
            (after_id, limit)).fetchall()


def active_counts(conn: psycopg.Connection, equipment_ids: list[str]) -> dict[str, int]:
    rows = conn.execute("SELECT equipment_id, count(*) FROM alarms WHERE state = 'active' AND equipment_id = ANY(%s) "
                        "GROUP BY equipment_id", (equipment_ids,)).fetchall()
    return dict(rows)
