"""Reads over the alarms table."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.rows import dict_row

from core.db import where_equal

_COLUMNS = ("id, equipment_id, fault_code, severity, state, raised_at, cleared_at, occurrences, ticket_id, "
            "ticket_error")


def list_alarms(conn: psycopg.Connection, *, equipment_id: str | None, state: str | None,
                limit: int, offset: int) -> tuple[list[dict[str, Any]], int]:
    where, params = where_equal(equipment_id=equipment_id, state=state)
    with conn.cursor(row_factory=dict_row) as cur:
        count = cur.execute(f"SELECT count(*) AS n FROM alarms {where}", params).fetchone()["n"]
        rows = cur.execute(
            f"SELECT {_COLUMNS} FROM alarms {where} ORDER BY raised_at DESC, id DESC LIMIT %s OFFSET %s",
            [*params, limit, offset],
        ).fetchall()
    return rows, count


def count_active(conn: psycopg.Connection) -> int:
    return conn.execute("SELECT count(*) FROM alarms WHERE state = 'active'").fetchone()[0]
