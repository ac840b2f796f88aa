"""The calls the control centre answers (table ``calls``): who called, when, about which machine,
and what came of it."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row

CALL_OUTCOMES = ("solved_on_phone", "work_order_opened", "question_answered", "complaint", "other")
CALL_SOURCES = ("agent", "cti")

_COLUMNS = """id, started_at, ended_at, phone, phone_e164, customer_id, contact_id, equipment_id, agent, source,
    line, outcome, ticket_id, notes"""


def record_call(conn: psycopg.Connection, *, phone: str, phone_e164: str | None, customer_id: str | None,
                contact_id: int | None, equipment_id: str | None, agent: str | None, source: str,
                line: str | None = None, outcome: str | None = None, ticket_id: int | None = None, notes: str = "",
                started_at: datetime | None = None) -> dict[str, Any]:
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            f"""INSERT INTO calls (started_at, phone, phone_e164, customer_id, contact_id, equipment_id, agent, source,
                                   line, outcome, ticket_id, notes)
                VALUES (coalesce(%s, now()), %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING {_COLUMNS}""",
            (started_at, phone, phone_e164, customer_id, contact_id, equipment_id, agent, source, line, outcome,
             ticket_id, notes)).fetchone()  # type: ignore[return-value]


def update_call(conn: psycopg.Connection, call_id: int, fields: dict[str, Any]) -> dict[str, Any] | None:
    """Change the given fields (``ended``: True sets the end to now); None for an unknown call."""
    ended = fields.pop("ended", None)
    sets = [f"{c} = %s" for c in fields] + (["ended_at = coalesce(ended_at, now())"] if ended else [])
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        if not sets:
            return cur.execute(f"SELECT {_COLUMNS} FROM calls WHERE id = %s", (call_id,)).fetchone()
        return cur.execute(f"UPDATE calls SET {', '.join(sets)} WHERE id = %s RETURNING {_COLUMNS}",
                           (*fields.values(), call_id)).fetchone()


def recent_calls(conn: psycopg.Connection, customer: str, limit: int) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(f"SELECT {_COLUMNS} FROM calls WHERE customer_id = %s ORDER BY started_at DESC, id DESC "
                           "LIMIT %s", (customer, limit)).fetchall()


def list_calls(conn: psycopg.Connection, *, customer: str | None, since: datetime | None, limit: int, offset: int
               ) -> tuple[list[dict[str, Any]], int]:
    where: list[str] = []
    params: list[Any] = []
    if customer is not None:
        where.append("customer_id = %s")
        params.append(customer)
    if since is not None:
        where.append("started_at >= %s")
        params.append(since)
    clause = ("WHERE " + " AND ".join(where)) if where else ""
    with conn.cursor(row_factory=dict_row) as cur:
        count = cur.execute(f"SELECT count(*) AS n FROM calls {clause}", params).fetchone()["n"]  # type: ignore[index]
        rows = cur.execute(f"SELECT {_COLUMNS} FROM calls {clause} ORDER BY started_at DESC, id DESC "
                           "LIMIT %s OFFSET %s", [*params, limit, offset]).fetchall()
    return rows, count
