"""Reads over what ingest owns: equipment with its latest state, readings (raw or downsampled)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from core.db import one, where_equal
from core.telemetry import CHANNELS
from ingest import usage
from ingest.usage import USAGE_MAX_GAP_S
from ingest.writer import AVERAGED, HAS_POSITION

_EQUIPMENT = """
SELECT e.id, e.serial, e.model, e.kind, e.customer, e.site,
       s.last_ts, s.last_received_at,
       coalesce(s.last_received_at > now() - make_interval(secs => %s), false)
           -- A last will or goodbye newer than the last telemetry means gone now, not in a minute.
           AND NOT coalesce(NOT p.connected AND p.status_at >= s.last_received_at, false) AS online,
       s.oil_temp_c, s.engine_rpm, s.hydraulic_pressure_bar, s.coolant_temp_c, s.fuel_level_pct,
       s.engine_hours, s.lat, s.lon, s.speed_kmh, s.ambient_temp_c
FROM equipment e LEFT JOIN equipment_state s ON s.equipment_id = e.id
LEFT JOIN device_presence p ON p.equipment_id = e.id
"""


def list_equipment(conn: psycopg.Connection, *, offline_after_s: float, customer: str | None,
                   limit: int, offset: int) -> tuple[list[dict[str, Any]], int]:
    where, params = where_equal(customer=customer)
    with conn.cursor(row_factory=dict_row) as cur:
        count = one(cur.execute(f"SELECT count(*) AS n FROM equipment {where}", params))["n"]
        rows = cur.execute(
            f"SELECT * FROM ({_EQUIPMENT}) AS q {where} ORDER BY id LIMIT %s OFFSET %s",
            [offline_after_s, *params, limit, offset],
        ).fetchall()
    return rows, count


def get_equipment(conn: psycopg.Connection, equipment_id: str, *, offline_after_s: float) -> dict[str, Any] | None:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(_EQUIPMENT + " WHERE e.id = %s", (offline_after_s, equipment_id)).fetchone()


def count_online(conn: psycopg.Connection, *, offline_after_s: float) -> int:
    return one(conn.execute(
        "SELECT count(*) FROM equipment_state WHERE last_received_at > now() - make_interval(secs => %s)",
        (offline_after_s,),
    ))[0]


HOUR = timedelta(hours=1)
_ORIGIN = "TIMESTAMPTZ '2000-01-01 00:00+00'"

# Whole hours come from readings_hourly; the partial hours at either end of the period from the
# readings themselves, summed the same way, so the answer equals the one from raw readings.
_FROM_ROLLUPS = f"""
WITH parts AS (
    SELECT hour, samples, {", ".join(f"{c}_sum, {c}_n" for c in AVERAGED)}, engine_hours_max, position_ts, lat, lon
    FROM readings_hourly WHERE equipment_id = %(id)s AND hour >= %(first_hour)s AND hour < %(last_hour)s
    UNION ALL
    SELECT date_bin('1 hour', ts, {_ORIGIN}), count(*),
           {", ".join(f"coalesce(sum({c}::float8), 0), count({c})" for c in AVERAGED)}, max(engine_hours),
           max(ts) FILTER (WHERE {HAS_POSITION}),
           (array_agg(lat ORDER BY ts DESC) FILTER (WHERE {HAS_POSITION}))[1],
           (array_agg(lon ORDER BY ts DESC) FILTER (WHERE {HAS_POSITION}))[1]
    FROM readings WHERE equipment_id = %(id)s
      AND ((ts >= %(start)s AND ts < %(first_hour)s) OR (ts >= %(last_hour)s AND ts < %(end)s))
    GROUP BY 1
)
SELECT date_bin(%(bucket)s, hour, {_ORIGIN}) AS ts, sum(samples)::bigint AS samples,
       {", ".join(f"(sum({c}_sum) / nullif(sum({c}_n), 0))::real AS {c}" for c in AVERAGED)},
       max(engine_hours_max) AS engine_hours,
       (array_agg(lat ORDER BY position_ts DESC) FILTER (WHERE position_ts IS NOT NULL))[1] AS lat,
       (array_agg(lon ORDER BY position_ts DESC) FILTER (WHERE position_ts IS NOT NULL))[1] AS lon
FROM parts GROUP BY 1 HAVING sum(samples) > 0 ORDER BY 1 LIMIT %(limit)s
"""


def _floor_hour(ts: datetime) -> datetime:
    return ts.replace(minute=0, second=0, microsecond=0)


def readings(conn: psycopg.Connection, equipment_id: str, start: datetime, end: datetime,
             bucket: timedelta | None, limit: int, *, rollups: bool = True) -> list[dict[str, Any]]:
    """Raw readings in [start, end), or one row per bucket (averages; last engine hours/position).

    Buckets of whole hours are answered from the hourly rollups (``rollups=False`` reads the raw
    readings instead; the answer is the same)."""
    start, end = start.astimezone(UTC), end.astimezone(UTC)
    first_hour = _floor_hour(start) + (HOUR if _floor_hour(start) < start else timedelta(0))
    last_hour = _floor_hour(end)
    if rollups and bucket is not None and bucket % HOUR == timedelta(0) and first_hour < last_hour:
        named = {"id": equipment_id, "start": start, "end": end, "first_hour": first_hour, "last_hour": last_hour,
                 "bucket": bucket, "limit": limit}
        with conn.cursor(row_factory=dict_row) as cur:
            return cur.execute(_FROM_ROLLUPS, named).fetchall()
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
    return one(conn.execute("SELECT coalesce(sum(readings_stored), 0)::bigint FROM ingest_stats"))[0]


def track(conn: psycopg.Connection, equipment_id: str, start: datetime, end: datetime,
          bucket: timedelta | None, limit: int) -> list[dict[str, Any]]:
    """Positions in [start, end): every fix, or the last fix of each bucket."""
    if bucket is None:
        query = ("SELECT ts, lat, lon, speed_kmh FROM readings WHERE equipment_id = %s AND ts >= %s AND ts < %s "
                 "AND lat IS NOT NULL AND lon IS NOT NULL ORDER BY ts LIMIT %s")
        params: list[Any] = [equipment_id, start, end, limit]
    else:
        query = ("SELECT DISTINCT ON (b) ts, lat, lon, speed_kmh FROM ("
                 "SELECT date_bin(%s, ts, TIMESTAMPTZ '2000-01-01') AS b, ts, lat, lon, speed_kmh FROM readings "
                 "WHERE equipment_id = %s AND ts >= %s AND ts < %s AND lat IS NOT NULL AND lon IS NOT NULL) q "
                 "ORDER BY b, ts DESC LIMIT %s")
        params = [bucket, equipment_id, start, end, limit]
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(query, params).fetchall()


# Where the hours the usage job has completed end (at the hour of the newest reading it counted, whose
# span is still open) or the period's whole hours do; the first and last of the hours before that
# holding readings; whether the period's last partial hour has readings.
_USAGE_ROLLED = f"""
WITH u AS (
    SELECT least(%(last_hour)s, date_bin('1 hour', through_ts, {_ORIGIN})) AS complete_to
    FROM equipment_usage WHERE equipment_id = %(id)s
)
SELECT complete_to,
       (SELECT hour FROM usage_hourly WHERE equipment_id = %(id)s AND hour >= %(first_hour)s AND hour < complete_to
            AND samples > 0 ORDER BY hour LIMIT 1),
       (SELECT hour FROM usage_hourly WHERE equipment_id = %(id)s AND hour >= %(first_hour)s AND hour < complete_to
            AND samples > 0 ORDER BY hour DESC LIMIT 1),
       EXISTS (SELECT 1 FROM readings WHERE equipment_id = %(id)s AND ts >= %(last_hour)s AND ts < %(end)s)
FROM u
"""

# Hours in [rolled_from, rolled_to) from usage_hourly; the readings before and after them from
# readings, each counting until the next reading of the period. The first rolled-up reading is read
# too, as the one that ends the last span before the rolled-up hours.
_DAILY_USAGE = f"""
WITH raw AS (
    SELECT ts, engine_rpm, speed_kmh, engine_hours, fuel_level_pct, true AS own
    FROM readings WHERE equipment_id = %(id)s
      AND ((ts >= %(start)s AND ts < %(rolled_from)s) OR (ts >= %(rolled_to)s AND ts < %(end)s))
    UNION ALL
    (SELECT ts, engine_rpm, speed_kmh, engine_hours, fuel_level_pct, false FROM readings
     WHERE equipment_id = %(id)s AND ts >= %(first_rolled_from)s AND ts < %(first_rolled_to)s ORDER BY ts LIMIT 1)
), spans AS (
    SELECT ts, own, engine_hours, {usage.working("raw")} AS working, {usage.idling("raw")} AS idling,
           -- least() skips NULL: the last reading, with no next one, must count nothing.
           CASE WHEN lead(ts) OVER w IS NOT NULL
                THEN least(extract(epoch FROM lead(ts) OVER w - ts)::float8, %(max_gap)s) END AS span_s,
           fuel_level_pct::float8 - lead(fuel_level_pct::float8) OVER w AS fuel_drop
    FROM raw WINDOW w AS (ORDER BY ts)
), parts AS (
    SELECT (ts AT TIME ZONE 'UTC')::date AS day, 1 AS samples, engine_hours AS engine_hours_min,
           engine_hours AS engine_hours_max, CASE WHEN working THEN span_s END AS working_s,
           CASE WHEN idling THEN span_s END AS idle_s, CASE WHEN fuel_drop > 0 THEN fuel_drop END AS fuel_used_pct
    FROM spans WHERE own
    UNION ALL
    SELECT (hour AT TIME ZONE 'UTC')::date, samples, engine_hours_min, engine_hours_max, working_s, idle_s,
           fuel_used_pct
    FROM usage_hourly WHERE equipment_id = %(id)s AND hour >= %(rolled_from)s AND hour < %(rolled_to)s
)
SELECT day, sum(samples)::bigint AS samples, coalesce(max(engine_hours_max) - min(engine_hours_min), 0) AS engine_hours,
       coalesce(sum(working_s), 0) / 3600 AS working_hours, coalesce(sum(idle_s), 0) / 3600 AS idle_hours,
       coalesce(sum(fuel_used_pct), 0) AS fuel_used_pct
FROM parts GROUP BY day HAVING sum(samples) > 0 ORDER BY day
"""


def daily_usage(conn: psycopg.Connection, equipment_id: str, start: datetime, end: datetime, *,
                rollups: bool = True) -> list[dict[str, Any]]:
    """Per UTC day with readings in [start, end): engine hours run (the hour meter's highest minus lowest
    reading), working and idle hours (from RPM and speed, each reading counting until the next one of
    the period, gaps capped at USAGE_MAX_GAP_S; the period's last reading counts nothing), fuel used in
    percent of the tank (the level's drops; refuels, rises, are not subtracted).

    Whole hours the usage job has completed come from its hourly rollup (ingest.usage; migration 0010
    filled it for the history counted before it), the rest of the period from the readings
    (``rollups=False`` reads every reading; the figures are the same to float rounding). A reading
    that arrived after a newer one of its machine had been counted is in the readings but not in the
    rollup, so it counts only where the period's readings are read."""
    start, end = start.astimezone(UTC), end.astimezone(UTC)
    first_hour = _floor_hour(start) + (HOUR if _floor_hour(start) < start else timedelta(0))
    last_hour = _floor_hour(end)
    # Without rolled-up hours every reading of the period is read (the ranges of rolled hours empty).
    # Both statements are planned for their arguments each time (prepare=False): a generic plan, which
    # psycopg's preparing of a statement run often can lead to, cannot prune the readings partitions
    # to the few hours read.
    rolled_from = rolled_to = first_rolled = end
    if rollups and first_hour < last_hour:
        named = {"id": equipment_id, "first_hour": first_hour, "last_hour": last_hour, "end": end}
        row = conn.execute(_USAGE_ROLLED, named, prepare=False).fetchone()
        if row is not None and row[1] is not None:
            complete_to, first_rolled, last_rolled, readings_after = row
            rolled_from, rolled_to = first_hour, complete_to
            # The period's last reading counts nothing, but the rollup holds the span it had to the
            # next reading: its hour is read from the readings when nothing follows it in the period.
            if complete_to == last_hour and not readings_after:
                rolled_to = last_rolled
    params = {"id": equipment_id, "start": start, "end": end, "rolled_from": rolled_from, "rolled_to": rolled_to,
              "first_rolled_from": first_rolled, "first_rolled_to": min(first_rolled + HOUR, rolled_to),
              "max_gap": USAGE_MAX_GAP_S}
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(_DAILY_USAGE, params, prepare=False).fetchall()


def fuel_used_pct(conn: psycopg.Connection, equipment_id: str, start: datetime, end: datetime) -> float | None:
    """Fuel used in [start, end), in percent of the tank: the sum of the level's drops."""
    row = one(conn.execute(
        "SELECT sum(d) FILTER (WHERE d > 0), count(d) FROM (SELECT fuel_level_pct - lead(fuel_level_pct) "
        "OVER (ORDER BY ts) AS d FROM readings WHERE equipment_id = %s AND ts >= %s AND ts < %s "
        "AND fuel_level_pct IS NOT NULL) q", (equipment_id, start, end)))
    return None if not row[1] else float(row[0] or 0.0)


def stream_readings(conn: psycopg.Connection, equipment_id: str, start: datetime, end: datetime,
                    *, rows_per_fetch: int = 2000) -> Iterator[tuple[Any, ...]]:
    """Raw readings in time order through a server-side cursor: memory stays flat however long the period."""
    query = sql.SQL(
        "SELECT ts, {channels} FROM readings WHERE equipment_id = %s AND ts >= %s AND ts < %s ORDER BY ts"
    ).format(channels=sql.SQL(", ").join(map(sql.Identifier, CHANNELS)))
    with conn.transaction(), conn.cursor(name=f"export_{equipment_id}") as cur:
        cur.itersize = rows_per_fetch
        cur.execute(query, (equipment_id, start, end))
        yield from cur


def last_service_hours(conn: psycopg.Connection, equipment_ids: list[str]) -> dict[str, float | None]:
    return dict(conn.execute("SELECT id, last_service_hours FROM equipment WHERE id = ANY(%s)",
                             (equipment_ids,)).fetchall())


def usage_totals(conn: psycopg.Connection, equipment_ids: list[str]) -> dict[str, dict[str, Any]]:
    """Each machine's running usage totals as ingest.usage keeps them: idle seconds and fuel used (percent
    of the tank) over every reading counted, through ``through_ts``, the newest reading counted.
    Machines not counted yet are left out. Same definitions as daily_usage; a reading that arrived
    after a newer one of its machine was counted is not."""
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            "SELECT equipment_id, through_ts, idle_s, fuel_used_pct FROM equipment_usage "
            "WHERE equipment_id = ANY(%s)", (equipment_ids,)).fetchall()
    return {row.pop("equipment_id"): row for row in rows}


def readings_page(conn: psycopg.Connection, equipment_id: str, start: datetime, end: datetime, columns: list[str],
                  *, not_null: str, limit: int, offset: int) -> tuple[list[dict[str, Any]], int]:
    """A page of raw readings in [start, end) where ``not_null`` is reported, oldest first, with the total."""
    where = sql.SQL("WHERE equipment_id = %s AND ts >= %s AND ts < %s AND {c} IS NOT NULL").format(
        c=sql.Identifier(not_null))
    params = [equipment_id, start, end]
    with conn.cursor(row_factory=dict_row) as cur:
        count = one(cur.execute(sql.SQL("SELECT count(*) AS n FROM readings ") + where, params))["n"]
        rows = cur.execute(
            sql.SQL("SELECT ts, {cols} FROM readings ").format(cols=sql.SQL(", ").join(map(sql.Identifier, columns)))
            + where + sql.SQL(" ORDER BY ts LIMIT %s OFFSET %s"), [*params, limit, offset]).fetchall()
    return rows, count
