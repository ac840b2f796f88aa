"""Reads over the faults table for the API and dashboards."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.rows import dict_row

from core.db import one, where_equal

_COLUMNS = ("id, equipment_id, fault_code, title, severity, rule, rule_version, started_at, ended_at, evidence, "
            "diagnosis, remote_resolvable, backfilled")


def list_faults(conn: psycopg.Connection, *, equipment_id: str | None, fault_code: str | None, active: bool | None,
                limit: int, offset: int, customer: str | None = None) -> tuple[list[dict[str, Any]], int]:
    where, params = where_equal(equipment_id=equipment_id, fault_code=fault_code)
    if customer is not None:
        where = ((where + " AND " if where else "WHERE ")
                 + "equipment_id IN (SELECT id FROM equipment WHERE customer = %s)")
        params.append(customer)
    if active is not None:
        where = (where + " AND " if where else "WHERE ") + ("ended_at IS NULL" if active else "ended_at IS NOT NULL")
    with conn.cursor(row_factory=dict_row) as cur:
        count = one(cur.execute(f"SELECT count(*) AS n FROM faults {where}", params))["n"]
        rows = cur.execute(f"SELECT {_COLUMNS} FROM faults {where} ORDER BY started_at DESC, id DESC "
                           "LIMIT %s OFFSET %s", [*params, limit, offset]).fetchall()
    return rows, count
