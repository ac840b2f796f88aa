"""Reads over what ingest owns: equipment with its latest state, readings (raw or downsampled)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from core.db import where_equal
from core.telemetry import CHANNELS

_EQUIPMENT = """
SELECT e.id, e.serial, e.model, e.kind, e.customer, e.site,
       s.last_ts, s.last_received_at,
       coalesce(s.last_received_at > now() - make_interval(secs => %s), false)
           -- A last will or goodbye newer than the last telemetry means gone now, not in a minute.
           AND NOT coalesce(NOT p.connected AND p.status_at >= s.last_received_at, false) AS online,
       s.oil_temp_c, s.engine_rpm, s.hydraulic_pressure_bar, s.coolant_temp_c, s.fuel_level_pct,
       s.engine_hours, s.lat, s.lon, s.speed_kmh
FROM equipment e LEFT JOIN equipment_state s ON s.equipment_id = e.id
LEFT JOIN device_presence p ON p.equipment_id = e.id
"""


def list_equipment(conn: psycopg.Connection, *, offline_after_s: float, customer: str | None,
                   limit: int, offset: int) -> tuple[list[dict[str, Any]], int]:
    where, params = where_equal(customer=customer)
    with conn.cursor(row_factory=dict_row) as cur:
        count = cur.execute(f"SELECT count(*) AS n FROM equipment {where}", params).fetchone()["n"]
        rows = cur.execute(
            f"SELECT * FROM ({_EQUIPMENT}) AS q {where} ORDER BY id LIMIT %s OFFSET %s",
            [offline_after_s, *params, limit, offset],
        ).fetchall()
    return rows, count


def get_equipment(conn: psycopg.Connection, equipment_id: str, *, offline_after_s: float) -> dict[str, Any] | None:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(_EQUIPMENT + " WHERE e.id = %s", (offline_after_s, equipment_id)).fetchone()


def count_online(conn: psycopg.Connection, *, offline_after_s: float) -> int:
    return conn.execute(
        "SELECT count(*) FROM equipment_state WHERE last_received_at > now() - make_interval(secs => %s)",
        (offline_after_s,),
    ).fetchone()[0]


def readings(conn: psycopg.Connection, equipment_id: str, start: datetime, end: datetime,
             bucket: timedelta | None, limit: int) -> list[dict[str, Any]]:
    """Raw readings in [start, end), or one row per bucket (averages; last engine hours/position)."""
    if bucket is None:
        query = sql.SQL(
            "SELECT ts, {channels}, fault_codes FROM readings "
            "WHERE equipment_id = %s AND ts >= %s AND ts < %s ORDER BY ts LIMIT %s"
        ).format(channels=sql.SQL(", ").join(map(sql.Identifier, CHANNELS)))
        params: list[Any] = [equipment_id, start, end, limit]
    else:
        averaged = [c for c in CHANNELS if c not in ("engine_hours", "lat", "lon")]
        query = sql.SQL(
            "SELECT date_bin(%s, ts, TIMESTAMPTZ '2000-01-01') AS ts, count(*) AS samples, {averages}, "
            "max(engine_hours) AS engine_hours, "
            "(array_agg(lat ORDER BY ts DESC) FILTER (WHERE lat IS NOT NULL))[1] AS lat, "
            "(array_agg(lon ORDER BY ts DESC) FILTER (WHERE lon IS NOT NULL))[1] AS lon "
            "FROM readings WHERE equipment_id = %s AND ts >= %s AND ts < %s "
            "GROUP BY 1 ORDER BY 1 LIMIT %s"
        ).format(averages=sql.SQL(", ").join(
            sql.SQL("avg({c})::real AS {c}").format(c=sql.Identifier(c)) for c in averaged))
        params = [bucket, equipment_id, start, end, limit]
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(query, params).fetchall()


def readings_stored_total(conn: psycopg.Connection) -> int:
    return conn.execute("SELECT coalesce(sum(readings_stored), 0)::bigint FROM ingest_stats").fetchone()[0]
