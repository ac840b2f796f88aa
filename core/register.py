"""The fleet register (table ``equipment``): registering machines."""

from __future__ import annotations

from dataclasses import dataclass

import psycopg


@dataclass(frozen=True, slots=True)
class EquipmentRecord:
    id: str
    serial: str
    model: str
    kind: str
    customer: str
    site: str | None = None


def register_equipment(conn: psycopg.Connection, records: list[EquipmentRecord]) -> None:
    """Insert or update the given machines (by id), in one transaction."""
    with conn.transaction(), conn.cursor() as cur:
        cur.executemany(
            """INSERT INTO equipment (id, serial, model, kind, customer, site) VALUES (%s, %s, %s, %s, %s, %s)
               ON CONFLICT (id) DO UPDATE SET serial = EXCLUDED.serial, model = EXCLUDED.model,
                   kind = EXCLUDED.kind, customer = EXCLUDED.customer, site = EXCLUDED.site""",
            [(r.id, r.serial, r.model, r.kind, r.customer, r.site) for r in records],
        )


@dataclass(frozen=True, slots=True)
class SiteRecord:
    name: str
    lat: float
    lon: float
    radius_m: float
    timezone: str = "UTC"
    permitted_hours: tuple[int, int] | None = None


def register_sites(conn: psycopg.Connection, records: list[SiteRecord]) -> None:
    with conn.transaction(), conn.cursor() as cur:
        cur.executemany(
            """INSERT INTO sites (name, lat, lon, radius_m, timezone, permitted_from_hour, permitted_to_hour)
               VALUES (%s, %s, %s, %s, %s, %s, %s)
               ON CONFLICT (name) DO UPDATE SET lat = EXCLUDED.lat, lon = EXCLUDED.lon, radius_m = EXCLUDED.radius_m,
                   timezone = EXCLUDED.timezone, permitted_from_hour = EXCLUDED.permitted_from_hour,
                   permitted_to_hour = EXCLUDED.permitted_to_hour""",
            [(r.name, r.lat, r.lon, r.radius_m, r.timezone, *(r.permitted_hours or (None, None))) for r in records],
        )
