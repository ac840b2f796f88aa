"""Reads over the alarms table."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.rows import dict_row

from core.db import where_equal

_COLUMNS = ("a.id, a.equipment_id, a.fault_code, a.severity, a.state, a.raised_at, a.cleared_at, a.occurrences, "
            "a.ticket_id, a.ticket_error, f.title, f.diagnosis")


def list_alarms(conn: psycopg.Connection, *, equipment_id: str | None, state: str | None,
                limit: int, offset: int) -> tuple[list[dict[str, Any]], int]:
    where, params = where_equal("a", equipment_id=equipment_id, state=state)
    with conn.cursor(row_factory=dict_row) as cur:
        count = cur.execute(f"SELECT count(*) AS n FROM alarms a {where}", params).fetchone()["n"]
        rows = cur.execute(
            f"SELECT {_COLUMNS} FROM alarms a LEFT JOIN faults f ON f.id = a.last_fault_id "
            f"{where} "
            "ORDER BY a.raised_at DESC, a.id DESC LIMIT %s OFFSET %s",
            [*params, limit, offset],
        ).fetchall()
    return rows, count


def count_active(conn: psycopg.Connection) -> int:
    return conn.execute("SELECT count(*) FROM alarms WHERE state = 'active'").fetchone()[0]


def alarms_after(conn: psycopg.Connection, after_id: int, *, limit: int) -> list[dict[str, Any]]:
    """Alarms raised since ``after_id``, oldest first, with their fault's diagnosis."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            f"SELECT {_COLUMNS} FROM alarms a LEFT JOIN faults f ON f.id = a.last_fault_id "
            "WHERE a.id > %s ORDER BY a.id LIMIT %s", (after_id, limit)).fetchall()
