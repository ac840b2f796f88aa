"""Which packages own tables, in the order their migrations run."""

from __future__ import annotations

import psycopg

import alarms
import api
import core
import devices
import diagnostics
import ingest
import notifications
import tickets
from core.db import connect
from core.migrations import apply_migrations
from core.register import EquipmentRecord, SiteRecord, register_equipment, register_sites
from device_sim.machine import MachineSpec
from device_sim.simulated_fleet import SITES
from ingest.partitions import ensure_partitions

# devices after ingest: ingest's migration 0003 created the registry's first tables.
SCHEMA_PACKAGES = [core, ingest, devices, diagnostics, alarms, tickets, notifications, api]


def migrate(database_url: str) -> list[str]:
    with connect(database_url, application_name="ironsight-migrate") as conn:
        applied = apply_migrations(conn, SCHEMA_PACKAGES)
        ensure_partitions(conn)
        return applied


def register_fleet(conn: psycopg.Connection, specs: list[MachineSpec]) -> None:
    """Register the simulated job sites (geofences; no curfew) and machines."""
    register_sites(conn, [SiteRecord(s.name, s.lat, s.lon, s.radius_m, s.timezone) for s in SITES])
    register_equipment(conn, [
        EquipmentRecord(s.equipment_id, s.serial, s.model, s.kind, s.customer, s.site) for s in specs
    ])
