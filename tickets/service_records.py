"""Services done on a machine, and the machine's last service hours.

Recording a service stores it and raises ``equipment.last_service_hours`` to its engine hours (never
lowering it) in the same transaction. That column is what the service-due rule reads: a diagnostics
worker reads a machine's context again when its readings arrive and the context it holds is older
than ``CONTEXT_TTL_S`` (diagnostics.worker), so an open service-due reminder clears with the
machine's readings soon after, without a restart. Which services a machine's schedule has is the
rulebook's to say; the API checks that before it records one (this package may not import diagnostics).

The engine hours of a service are held to the hour meter ingest knows (``equipment_state``): a meter
counts at most an hour per hour, so a service cannot have been done at more than the last reading's
hours plus the time since then, give or take what a person reading the meter rounds.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from core.db import one
from core.errors import IronSightError

# A person reads the hour meter and writes down whole hours, rounded either way.
HOUR_METER_SLACK_H = 1.0

_COLUMNS = ("id, equipment_id, performed_at, engine_hours, interval_h, work_done, parts_used, ticket_id, "
            "recorded_by, recorded_at")


class UnknownEquipment(IronSightError):
    pass


class ImplausibleServiceRecord(IronSightError):
    """A record that cannot be true of its machine: hours beyond its hour meter, a time in the future,
    a ticket of another machine (HTTP 422)."""


@dataclass(frozen=True, slots=True)
class NewServiceRecord:
    equipment_id: str
    engine_hours: float
    interval_h: float
    work_done: str
    recorded_by: str
    parts_used: tuple[tuple[str, int], ...] = ()  # (part, quantity)
    performed_at: datetime | None = None  # now when None
    ticket_id: int | None = None


def equipment_model(conn: psycopg.Connection, equipment_id: str) -> str | None:
    row = conn.execute("SELECT model FROM equipment WHERE id = %s", (equipment_id,)).fetchone()
    return None if row is None else str(row[0])


def highest_plausible_hours(meter_hours: float, meter_read_at: datetime, performed_at: datetime) -> float:
    """The most engine hours a service at ``performed_at`` can have been done at, against the hour
    meter reading ``meter_hours`` taken at ``meter_read_at``."""
    since = max(performed_at - meter_read_at, timedelta(0))
    return meter_hours + since / timedelta(hours=1) + HOUR_METER_SLACK_H


def record_service(conn: psycopg.Connection, new: NewServiceRecord, *,
                   future_tolerance: timedelta) -> dict[str, Any]:
    """Store the service and raise the machine's last service hours to it; return the record.

    Refuses (ImplausibleServiceRecord) a service later than now by more than ``future_tolerance``,
    engine hours beyond what the hour meter allows, and a ticket that is not one of the machine's."""
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        # Locked: two services recorded at once raise last_service_hours one after the other.
        machine = cur.execute(
            """SELECT now() AS now, s.engine_hours, s.engine_hours_at
               FROM equipment e LEFT JOIN equipment_state s ON s.equipment_id = e.id
               WHERE e.id = %s FOR UPDATE OF e""", (new.equipment_id,)).fetchone()
        if machine is None:
            raise UnknownEquipment(new.equipment_id)
        performed_at = new.performed_at or machine["now"]
        if performed_at > machine["now"] + future_tolerance:
            raise ImplausibleServiceRecord(f"performed_at {performed_at.isoformat()} is in the future")
        if machine["engine_hours"] is not None and machine["engine_hours_at"] is not None:
            highest = highest_plausible_hours(machine["engine_hours"], machine["engine_hours_at"], performed_at)
            if new.engine_hours > highest:
                raise ImplausibleServiceRecord(
                    f"engine_hours {new.engine_hours:g} is beyond the hour meter of {new.equipment_id!r} "
                    f"({machine['engine_hours']:.1f} h at {machine['engine_hours_at'].isoformat()}; "
                    f"at most {highest:.1f} h by {performed_at.isoformat()})")
        if new.ticket_id is not None:
            ticket = cur.execute("SELECT equipment_id FROM tickets WHERE id = %s", (new.ticket_id,)).fetchone()
            if ticket is None or ticket["equipment_id"] != new.equipment_id:
                raise ImplausibleServiceRecord(f"no ticket {new.ticket_id} of equipment {new.equipment_id!r}")
        parts = [{"part": part, "quantity": quantity} for part, quantity in new.parts_used]
        record = one(cur.execute(
            f"""INSERT INTO service_records (equipment_id, performed_at, engine_hours, interval_h, work_done,
                                            parts_used, ticket_id, recorded_by)
                VALUES (%s, %s, %s, %s, %s, %s, %s, %s) RETURNING {_COLUMNS}""",
            (new.equipment_id, performed_at, new.engine_hours, new.interval_h, new.work_done, Jsonb(parts),
             new.ticket_id, new.recorded_by)))
        # GREATEST skips NULL: the first record sets it, a later one with fewer hours leaves it.
        cur.execute("UPDATE equipment SET last_service_hours = GREATEST(last_service_hours, %s) WHERE id = %s",
                    (new.engine_hours, new.equipment_id))
        if new.ticket_id is not None:
            cur.execute(
                "INSERT INTO ticket_events (ticket_id, at, actor, event, detail) VALUES (%s, %s, %s, %s, %s)",
                (new.ticket_id, machine["now"], new.recorded_by, "service_recorded",
                 Jsonb({"service_record_id": record["id"], "engine_hours": new.engine_hours,
                        "interval_h": new.interval_h})))
    return record


def list_service_records(conn: psycopg.Connection, equipment_id: str, *, limit: int,
                         offset: int) -> tuple[list[dict[str, Any]], int]:
    """A machine's services, the latest done first, and how many there are."""
    with conn.cursor(row_factory=dict_row) as cur:
        count = one(cur.execute("SELECT count(*) AS n FROM service_records WHERE equipment_id = %s",
                                (equipment_id,)))["n"]
        rows = cur.execute(
            f"""SELECT {_COLUMNS} FROM service_records WHERE equipment_id = %s
                ORDER BY performed_at DESC, id DESC LIMIT %s OFFSET %s""", (equipment_id, limit, offset)).fetchall()
    return rows, count
