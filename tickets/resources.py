"""The service organisation dispatch works with: stations, engineers, vehicles, warehouses.

Registration is an upsert by id (an import can run again); listings carry what a dispatcher looks at:
an engineer's vehicle and current ticket, a vehicle's position and load, a warehouse's stock.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time
from typing import Any

import psycopg
from psycopg.rows import dict_row

from core.errors import IronSightError
from tickets import stock
from tickets.dispatch import BUSY_STATES, on_shift


class UnknownResource(IronSightError):
    """A reference to a station, engineer or vehicle that does not exist (HTTP 422)."""


@dataclass(frozen=True, slots=True)
class Station:
    id: str
    name: str
    lat: float
    lon: float


@dataclass(frozen=True, slots=True)
class Engineer:
    id: str
    name: str
    station_id: str
    skills: tuple[str, ...]
    shift_start: time = time(0, 0)
    shift_end: time = time(0, 0)            # equal to the start: all day
    timezone: str = "UTC"
    active: bool = True
    # How the engineer hears of a new job (notifications).
    phone: str | None = None                # E.164
    email: str | None = None
    language: str = "en"
    preferred_channel: str = "sms"          # sms or email


@dataclass(frozen=True, slots=True)
class Vehicle:
    id: str
    station_id: str
    engineer_id: str | None
    parts: tuple[tuple[str, int], ...] = ()   # the load it starts with


@dataclass(frozen=True, slots=True)
class Warehouse:
    id: str
    name: str
    lat: float
    lon: float
    parts: tuple[tuple[str, int], ...] = ()


def upsert_station(conn: psycopg.Connection, s: Station) -> None:
    conn.execute("""INSERT INTO service_stations (id, name, lat, lon) VALUES (%s, %s, %s, %s)
                    ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, lat = EXCLUDED.lat, lon = EXCLUDED.lon""",
                 (s.id, s.name, s.lat, s.lon))


def upsert_engineer(conn: psycopg.Connection, e: Engineer) -> None:
    try:
        conn.execute(
            """INSERT INTO engineers (id, name, station_id, skills, shift_start, shift_end, timezone, active, phone,
                                     email, language, preferred_channel)
               VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
               ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, station_id = EXCLUDED.station_id,
                   skills = EXCLUDED.skills, shift_start = EXCLUDED.shift_start, shift_end = EXCLUDED.shift_end,
                   timezone = EXCLUDED.timezone, active = EXCLUDED.active, phone = EXCLUDED.phone,
                   email = EXCLUDED.email, language = EXCLUDED.language,
                   preferred_channel = EXCLUDED.preferred_channel""",
            (e.id, e.name, e.station_id, list(e.skills), e.shift_start, e.shift_end, e.timezone, e.active, e.phone,
             e.email, e.language, e.preferred_channel),
        )
    except psycopg.errors.ForeignKeyViolation:
        raise UnknownResource(f"no service station {e.station_id!r}") from None


def upsert_vehicle(conn: psycopg.Connection, v: Vehicle, *, at: datetime) -> None:
    """Register a vehicle parked at its station; its load is set to ``parts``."""
    try:
        with conn.transaction(), conn.cursor() as cur:
            cur.execute(
                """INSERT INTO vehicles (id, station_id, engineer_id) VALUES (%s, %s, %s)
                   ON CONFLICT (id) DO UPDATE SET station_id = EXCLUDED.station_id,
                       engineer_id = EXCLUDED.engineer_id""",
                (v.id, v.station_id, v.engineer_id),
            )
            for part, quantity in v.parts:
                stock.set_quantity(cur, ("vehicle", v.id), part, quantity, reason="vehicle loaded", at=at)
    except psycopg.errors.ForeignKeyViolation:
        raise UnknownResource(f"no service station {v.station_id!r} or engineer {v.engineer_id!r}") from None
    except psycopg.errors.UniqueViolation:
        raise UnknownResource(f"engineer {v.engineer_id!r} already drives another vehicle") from None


def upsert_warehouse(conn: psycopg.Connection, w: Warehouse, *, at: datetime) -> None:
    with conn.transaction(), conn.cursor() as cur:
        cur.execute("""INSERT INTO warehouses (id, name, lat, lon) VALUES (%s, %s, %s, %s)
                       ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, lat = EXCLUDED.lat, lon = EXCLUDED.lon""",
                    (w.id, w.name, w.lat, w.lon))
        for part, quantity in w.parts:
            stock.set_quantity(cur, ("warehouse", w.id), part, quantity, reason="stock count", at=at)


def set_stock(conn: psycopg.Connection, place_kind: str, place_id: str, part: str, quantity: int, *,
              at: datetime) -> None:
    table = {"warehouse": "warehouses", "vehicle": "vehicles"}[place_kind]
    with conn.transaction(), conn.cursor() as cur:
        if cur.execute(f"SELECT 1 FROM {table} WHERE id = %s", (place_id,)).fetchone() is None:
            raise UnknownResource(f"no {place_kind} {place_id!r}")
        stock.set_quantity(cur, (place_kind, place_id), part, quantity, reason="stock count", at=at)


def list_stations(conn: psycopg.Connection) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute("SELECT id, name, lat, lon FROM service_stations ORDER BY id").fetchall()


def list_engineers(conn: psycopg.Connection, at: datetime, engineer_id: str | None = None) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            """SELECT e.id, e.name, e.station_id, e.skills, e.shift_start, e.shift_end, e.timezone, e.active,
                      e.phone, e.email, e.language, e.preferred_channel, v.id AS vehicle_id,
                      (SELECT t.id FROM tickets t WHERE t.engineer = e.id AND t.state = ANY(%s)
                       ORDER BY t.dispatched_at DESC LIMIT 1) AS current_ticket_id
               FROM engineers e LEFT JOIN vehicles v ON v.engineer_id = e.id
               WHERE %s::text IS NULL OR e.id = %s ORDER BY e.id""",
            (list(BUSY_STATES), engineer_id, engineer_id),
        ).fetchall()
    for row in rows:
        row["on_shift"] = on_shift(row["shift_start"], row["shift_end"], row["timezone"], at)
        row["available"] = row["active"] and row["on_shift"] and row["vehicle_id"] is not None \
            and row["current_ticket_id"] is None
    return rows


def list_vehicles(conn: psycopg.Connection, vehicle_id: str | None = None) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            """SELECT v.id, v.station_id, v.engineer_id, COALESCE(v.lat, s.lat) AS lat, COALESCE(v.lon, s.lon) AS lon,
                      v.speed_kmh, v.reported_at,
                      (SELECT t.id FROM tickets t WHERE t.vehicle_id = v.id AND t.state = ANY(%s)
                       ORDER BY t.dispatched_at DESC LIMIT 1) AS current_ticket_id
               FROM vehicles v JOIN service_stations s ON s.id = v.station_id
               WHERE %s::text IS NULL OR v.id = %s ORDER BY v.id""",
            (list(BUSY_STATES), vehicle_id, vehicle_id),
        ).fetchall()
    for row in rows:
        row["parts"] = stock.stock_at(conn, "vehicle", row["id"])
    return rows


def list_warehouses(conn: psycopg.Connection, warehouse_id: str | None = None) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute("SELECT id, name, lat, lon FROM warehouses WHERE %s::text IS NULL OR id = %s ORDER BY id",
                           (warehouse_id, warehouse_id)).fetchall()
    for row in rows:
        row["parts"] = stock.stock_at(conn, "warehouse", row["id"])
    return rows
