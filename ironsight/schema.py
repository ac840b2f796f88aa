"""Which packages own tables, in the order their migrations run."""

from __future__ import annotations

import psycopg

import alarms
import core
import diagnostics
import ingest
import tickets
from core.db import connect
from core.fleet import EquipmentRecord, register_equipment
from core.migrations import apply_migrations
from device_sim.machine import MachineSpec
from ingest.partitions import ensure_partitions

SCHEMA_PACKAGES = [core, ingest, diagnostics, alarms, tickets]


def migrate(database_url: str) -> list[str]:
    with connect(database_url, application_name="ironsight-migrate") as conn:
        applied = apply_migrations(conn, SCHEMA_PACKAGES)
        ensure_partitions(conn)
        return applied


def register_fleet(conn: psycopg.Connection, specs: list[MachineSpec]) -> None:
    register_equipment(conn, [
        EquipmentRecord(s.equipment_id, s.serial, s.model, s.kind, s.customer, s.site) for s in specs
    ])
