"""The device registry (table ``devices``): which controller is on which machine, its credential,
and what it last said about itself (``device_presence``); and the service vans' position trackers
(table ``vehicle_trackers``), each with a broker credential of its own.

Changes that touch who may connect to the broker NOTIFY ``REGISTRY_CHANNEL`` in their transaction,
so the devices worker rewrites the broker's password and ACL files right after the commit.
"""

from __future__ import annotations

from datetime import date
from typing import Any

import psycopg
from psycopg.rows import dict_row

from core.db import one
from core.device_messages import Status
from core.register import EquipmentRecord, register_equipment
from core.topics import EQUIPMENT_ID_PATTERN
from devices.broker_auth import hash_password, new_password, tracker_username

REGISTRY_CHANNEL = "ironsight_registry"
# A device is registered pending, active once it holds a credential, revoked when that is withdrawn
# (the CHECK constraint of devices.state says the same).
DEVICE_STATES = ("pending", "active", "revoked")
# A van's tracker is active while it holds a credential, revoked once that is withdrawn.
TRACKER_STATES = ("active", "revoked")
UPDATABLE = ("firmware", "commissioned_on", "report_interval_s")
EQUIPMENT_UPDATABLE = ("customer", "kind", "site")

_DEVICE = """
SELECT d.equipment_id, d.serial, e.serial AS equipment_serial, e.model, e.kind, e.customer, e.site,
       d.firmware, d.commissioned_on, d.report_interval_s, d.state, d.credential_issued_at, d.revoked_at,
       d.created_at, d.updated_at
FROM devices d JOIN equipment e ON e.id = d.equipment_id
"""

_PRESENCE = """
SELECT e.id AS equipment_id,
       CASE WHEN p.connected IS NULL
            THEN coalesce(s.last_received_at > now() - make_interval(secs => %(after)s), false)
            ELSE p.connected AND greatest(s.last_received_at, p.status_at) > now() - make_interval(secs => %(after)s)
       END AS online,
       p.connected, p.reason AS disconnect_reason, p.changed_at, p.status_at,
       greatest(s.last_received_at, p.status_at) AS last_seen, s.last_received_at AS last_telemetry_at,
       p.signal_dbm, coalesce(p.firmware, d.firmware) AS firmware, p.report_interval_s, p.locked
FROM equipment e
LEFT JOIN device_presence p ON p.equipment_id = e.id
LEFT JOIN equipment_state s ON s.equipment_id = e.id
LEFT JOIN devices d ON d.equipment_id = e.id
WHERE e.id = %(id)s
"""


class RegistryError(Exception):
    """A registry change that cannot be made; ``status`` is the HTTP status that fits."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def create_device(conn: psycopg.Connection, *, equipment: EquipmentRecord | None, equipment_id: str, serial: str,
                  firmware: str | None, commissioned_on: date | None, report_interval_s: float) -> dict[str, Any]:
    """Register a controller on a machine (pre-registration); the machine is registered too when
    ``equipment`` is given. The device is ``pending`` until it has a credential."""
    try:
        with conn.transaction():
            if equipment is not None:
                register_equipment(conn, [equipment])
            elif conn.execute("SELECT 1 FROM equipment WHERE id = %s", (equipment_id,)).fetchone() is None:
                raise RegistryError(404, f"no equipment {equipment_id!r}; give its model, kind and customer to "
                                         "register it")
            conn.execute(
                """INSERT INTO devices (equipment_id, serial, firmware, commissioned_on, report_interval_s)
                   VALUES (%s, %s, %s, %s, %s)""",
                (equipment_id, serial, firmware, commissioned_on, report_interval_s))
            return get_device(conn, equipment_id)  # type: ignore[return-value]
    except psycopg.errors.UniqueViolation as exc:
        detail = exc.diag.message_detail or ""
        raise RegistryError(409, f"already registered: {detail or equipment_id}") from None


def get_device(conn: psycopg.Connection, equipment_id: str) -> dict[str, Any] | None:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(_DEVICE + " WHERE d.equipment_id = %s", (equipment_id,)).fetchone()


def list_devices(conn: psycopg.Connection, *, state: str | None, limit: int, offset: int
                 ) -> tuple[list[dict[str, Any]], int]:
    where = "WHERE d.state = %s" if state else ""
    params = [state] if state else []
    with conn.cursor(row_factory=dict_row) as cur:
        count = one(cur.execute(f"SELECT count(*) AS n FROM devices d {where}", params))["n"]
        rows = cur.execute(f"{_DEVICE} {where} ORDER BY d.equipment_id LIMIT %s OFFSET %s",
                           [*params, limit, offset]).fetchall()
    return rows, count


def update_device(conn: psycopg.Connection, equipment_id: str, changes: dict[str, Any]) -> dict[str, Any] | None:
    fields = {k: v for k, v in changes.items() if k in UPDATABLE}
    machine = {k: v for k, v in changes.items() if k in EQUIPMENT_UPDATABLE}
    with conn.transaction():
        if get_device(conn, equipment_id) is None:
            return None
        if fields:
            assignments = ", ".join(f"{column} = %s" for column in fields)  # columns from UPDATABLE only
            conn.execute(f"UPDATE devices SET {assignments}, updated_at = now() WHERE equipment_id = %s",
                         [*fields.values(), equipment_id])
        if machine:
            assignments = ", ".join(f"{column} = %s" for column in machine)  # from EQUIPMENT_UPDATABLE only
            conn.execute(f"UPDATE equipment SET {assignments} WHERE id = %s", [*machine.values(), equipment_id])
            conn.execute("UPDATE devices SET updated_at = now() WHERE equipment_id = %s", (equipment_id,))
        return get_device(conn, equipment_id)


def delete_device(conn: psycopg.Connection, equipment_id: str) -> bool:
    with conn.transaction():
        deleted = conn.execute("DELETE FROM devices WHERE equipment_id = %s", (equipment_id,)).rowcount
        conn.execute(f"NOTIFY {REGISTRY_CHANNEL}")
    return deleted > 0


def issue_credential(conn: psycopg.Connection, equipment_id: str, *, only_if_pending: bool = False) -> str:
    """A new password for the device (returned once, stored only as a hash); the old one stops
    working. A revoked device gets one only through an explicit reinstatement (this call)."""
    password = new_password()
    condition = "AND state = 'pending'" if only_if_pending else ""
    with conn.transaction():
        updated = conn.execute(
            f"""UPDATE devices SET state = 'active', password_hash = %s, credential_issued_at = now(),
                   revoked_at = NULL, updated_at = now() WHERE equipment_id = %s {condition}""",
            (hash_password(password), equipment_id)).rowcount
        if not updated:
            raise RegistryError(404 if not only_if_pending else 409, f"no device {equipment_id!r} to give a credential")
        conn.execute(f"NOTIFY {REGISTRY_CHANNEL}")
    return password


def revoke(conn: psycopg.Connection, equipment_id: str) -> dict[str, Any] | None:
    with conn.transaction():
        conn.execute(
            """UPDATE devices SET state = 'revoked', password_hash = NULL, revoked_at = now(), updated_at = now()
               WHERE equipment_id = %s""", (equipment_id,))
        conn.execute(f"NOTIFY {REGISTRY_CHANNEL}")
        return get_device(conn, equipment_id)


def record_status(conn: psycopg.Connection, equipment_id: str, status: Status) -> bool | None:
    """Store what a controller said on its status topic; None when the equipment is unknown,
    otherwise whether the controller is (newly or again) connected."""
    with conn.transaction():
        if conn.execute("SELECT 1 FROM equipment WHERE id = %s", (equipment_id,)).fetchone() is None:
            return None
        conn.execute(
            """INSERT INTO device_presence AS p (equipment_id, connected, reason, changed_at, status_at, firmware,
                                                 signal_dbm, report_interval_s, locked)
               VALUES (%s, %s, %s, now(), now(), %s, %s, %s, %s)
               ON CONFLICT (equipment_id) DO UPDATE SET
                   changed_at = CASE WHEN p.connected = EXCLUDED.connected THEN p.changed_at ELSE now() END,
                   connected = EXCLUDED.connected, reason = EXCLUDED.reason, status_at = now(),
                   firmware = coalesce(EXCLUDED.firmware, p.firmware),
                   signal_dbm = coalesce(EXCLUDED.signal_dbm, p.signal_dbm),
                   report_interval_s = coalesce(EXCLUDED.report_interval_s, p.report_interval_s),
                   locked = coalesce(EXCLUDED.locked, p.locked)""",
            (equipment_id, status.online, status.reason, status.firmware, status.signal_dbm,
             status.report_interval_s, status.locked))
        if status.firmware:
            conn.execute("UPDATE devices SET firmware = %s, updated_at = now() WHERE equipment_id = %s "
                         "AND firmware IS DISTINCT FROM %s", (status.firmware, equipment_id, status.firmware))
    return status.online


UNASSIGNED_CUSTOMER = "unassigned"
UNKNOWN_KIND = "unknown"


def self_register(conn: psycopg.Connection, serial: str, model: str, firmware: str | None) -> str | None:
    """Register a controller nobody pre-registered, on a machine of its own named by its serial, for
    an administrator to complete (customer, kind, site). None when that id or serial is taken."""
    try:
        with conn.transaction():
            conn.execute("INSERT INTO equipment (id, serial, model, kind, customer) VALUES (%s, %s, %s, %s, %s)",
                         (serial, serial, model, UNKNOWN_KIND, UNASSIGNED_CUSTOMER))
            conn.execute("INSERT INTO devices (equipment_id, serial, firmware) VALUES (%s, %s, %s)",
                         (serial, serial, firmware))
    except psycopg.errors.UniqueViolation:
        return None
    return serial


def find_by_serial(conn: psycopg.Connection, serial: str) -> dict[str, Any] | None:
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(_DEVICE + " WHERE d.serial = %s", (serial,)).fetchone()
    conn.commit()
    return row


def presence(conn: psycopg.Connection, equipment_id: str, *, offline_after_s: float) -> dict[str, Any] | None:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(_PRESENCE, {"after": offline_after_s, "id": equipment_id}).fetchone()


# --- service vans' position trackers ---------------------------------------------------------------

_TRACKER = "SELECT vehicle_id, state, issued_at, revoked_at FROM vehicle_trackers"


def _tracker_row(row: dict[str, Any] | None) -> dict[str, Any] | None:
    return None if row is None else {**row, "username": tracker_username(row["vehicle_id"])}


def issue_tracker_credential(conn: psycopg.Connection, vehicle_id: str) -> str:
    """A new broker password for the van's tracker (returned once, stored only as a hash), which may
    then publish that van's positions and nothing else; an earlier password stops working, a revoked
    tracker is reinstated. The caller checks that the vehicle exists (tickets.resources)."""
    if not EQUIPMENT_ID_PATTERN.match(vehicle_id):
        # The id is a topic level and part of the broker username.
        raise RegistryError(422, f"vehicle id {vehicle_id[:80]!r} cannot have a tracker: use 1 to 64 of A-Z a-z "
                                 "0-9 _ . -")
    password = new_password()
    with conn.transaction():
        conn.execute(
            """INSERT INTO vehicle_trackers (vehicle_id, password_hash, state, issued_at, revoked_at)
               VALUES (%s, %s, 'active', now(), NULL)
               ON CONFLICT (vehicle_id) DO UPDATE SET password_hash = EXCLUDED.password_hash, state = 'active',
                   issued_at = now(), revoked_at = NULL""",
            (vehicle_id, hash_password(password)))
        conn.execute(f"NOTIFY {REGISTRY_CHANNEL}")
    return password


def revoke_tracker_credential(conn: psycopg.Connection, vehicle_id: str) -> dict[str, Any] | None:
    """Withdraw the van's tracker credential (the broker drops and refuses it); None when it never had one."""
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            """UPDATE vehicle_trackers SET state = 'revoked', password_hash = NULL,
                   revoked_at = coalesce(revoked_at, now())
               WHERE vehicle_id = %s RETURNING vehicle_id, state, issued_at, revoked_at""", (vehicle_id,)).fetchone()
        conn.execute(f"NOTIFY {REGISTRY_CHANNEL}")
    return _tracker_row(row)


def get_tracker(conn: psycopg.Connection, vehicle_id: str) -> dict[str, Any] | None:
    with conn.cursor(row_factory=dict_row) as cur:
        return _tracker_row(cur.execute(_TRACKER + " WHERE vehicle_id = %s", (vehicle_id,)).fetchone())
