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
