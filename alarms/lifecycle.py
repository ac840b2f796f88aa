"""Alarm lifecycle in SQL: raise (deduplicated by the database) and clear."""

from __future__ import annotations

from datetime import datetime

import psycopg

_RAISE = """
INSERT INTO alarms (equipment_id, fault_code, severity, raised_at, last_fault_id)
VALUES (%s, %s, %s, %s, %s)
ON CONFLICT (equipment_id, fault_code) WHERE state = 'active'
DO UPDATE SET occurrences = alarms.occurrences + 1, last_fault_id = EXCLUDED.last_fault_id
RETURNING id, (xmax = 0) AS inserted
"""


def raise_alarm(conn: psycopg.Connection, equipment_id: str, fault_code: str, severity: str,
                at: datetime, fault_id: int) -> tuple[int, bool]:
    """Return (alarm id, whether it is new). A second raise of an active alarm only counts it."""
    alarm_id, inserted = conn.execute(_RAISE, (equipment_id, fault_code, severity, at, fault_id)).fetchone()
    return alarm_id, inserted


def clear_alarm(conn: psycopg.Connection, equipment_id: str, fault_code: str, at: datetime) -> int | None:
    """Clear the active alarm unless another rule still holds a fault of the same code open."""
    row = conn.execute(
        """UPDATE alarms SET state = 'cleared', cleared_at = %s
           WHERE equipment_id = %s AND fault_code = %s AND state = 'active'
             AND NOT EXISTS (SELECT 1 FROM faults f WHERE f.equipment_id = alarms.equipment_id
                             AND f.fault_code = alarms.fault_code AND f.ended_at IS NULL)
           RETURNING id""",
        (at, equipment_id, fault_code),
    ).fetchone()
    return row[0] if row else None
