"""The diagnostics worker: follows ``accepted_batches`` and runs the rules over new readings.

Faults, rule state and the consumer cursor are committed in one transaction, so after a crash
the worker resumes exactly where its last commit left it.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from core import outbox
from core.db import poll_until_stopped
from diagnostics.catalogue import limits_for
from diagnostics.rules import FaultChange, OilOverheatRule

log = logging.getLogger(__name__)

CONSUMER = "diagnostics"
BATCHES_PER_ROUND = 200

_NEW_READINGS = """
SELECT r.equipment_id, r.ts, r.oil_temp_c
FROM jsonb_to_recordset(%s) AS s(equipment_id text, first_ts timestamptz, last_ts timestamptz)
JOIN readings r ON r.equipment_id = s.equipment_id AND r.ts BETWEEN s.first_ts AND s.last_ts
ORDER BY r.equipment_id, r.ts
"""


@dataclass(slots=True)
class EquipmentRuleState:
    last_ts: datetime | None
    state: dict[str, Any] = field(default_factory=dict)
    dirty: bool = False


class DiagnosticsWorker:
    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        self.late_readings_skipped = 0
        self._models: dict[str, str] = {}

    def run(self, stop: threading.Event) -> None:
        poll_until_stopped(self.database_url, CONSUMER, self.process_available, stop)

    def process_available(self, conn: psycopg.Connection) -> int:
        """Process one round of accepted batches; return how many were processed."""
        with conn.transaction():
            cursor = outbox.load_cursor(conn, CONSUMER)
            batches = outbox.fetch_after(conn, "accepted_batches", cursor, limit=BATCHES_PER_ROUND)
            if not batches:
                return 0
            spans = [span for batch in batches for span in batch["spans"]]
            rows = conn.execute(_NEW_READINGS, (Jsonb(spans),)).fetchall()
            self._evaluate(conn, rows)
            last = batches[-1]
            outbox.save_cursor(conn, CONSUMER, (last["cursor_xid"], last["id"]))
        return len(batches)

    def _evaluate(self, conn: psycopg.Connection, rows: list[tuple]) -> None:
        states: dict[str, EquipmentRuleState] = {}
        rule_name = OilOverheatRule.name
        for equipment_id, ts, oil_temp_c in rows:
            current = states.get(equipment_id)
            if current is None:
                current = states[equipment_id] = self._load_state(conn, equipment_id, rule_name)
            if current.last_ts is not None and ts <= current.last_ts:
                # Already evaluated (a span overlaps older readings) or arrived after newer ones.
                self.late_readings_skipped += 1
                continue
            rule = OilOverheatRule(limits_for(self._model(conn, equipment_id)).oil_temperature)
            change = rule.evaluate(current.state, ts, oil_temp_c)
            current.last_ts = ts
            current.dirty = True
            if change is not None:
                self._record(conn, equipment_id, rule, change)
        for equipment_id, current in states.items():
            if current.dirty:
                conn.execute(
                    """INSERT INTO rule_state (equipment_id, rule, last_ts, state) VALUES (%s, %s, %s, %s)
                       ON CONFLICT (equipment_id, rule) DO UPDATE
                       SET last_ts = EXCLUDED.last_ts, state = EXCLUDED.state""",
                    (equipment_id, rule_name, current.last_ts, Jsonb(current.state)),
                )

    def _load_state(self, conn: psycopg.Connection, equipment_id: str, rule: str) -> EquipmentRuleState:
        row = conn.execute(
            "SELECT last_ts, state FROM rule_state WHERE equipment_id = %s AND rule = %s", (equipment_id, rule)
        ).fetchone()
        return EquipmentRuleState(row[0], row[1]) if row else EquipmentRuleState(None)

    def _model(self, conn: psycopg.Connection, equipment_id: str) -> str:
        model = self._models.get(equipment_id)
        if model is None:
            row = conn.execute("SELECT model FROM equipment WHERE id = %s", (equipment_id,)).fetchone()
            model = self._models[equipment_id] = row[0] if row else ""
        return model

    def _record(self, conn: psycopg.Connection, equipment_id: str, rule: OilOverheatRule,
                change: FaultChange) -> None:
        if change.kind == "raised":
            fault_id = conn.execute(
                """INSERT INTO faults (equipment_id, fault_code, severity, rule, rule_version, started_at, evidence)
                   VALUES (%s, %s, %s, %s, %s, %s, %s)
                   ON CONFLICT (equipment_id, fault_code) WHERE ended_at IS NULL DO NOTHING
                   RETURNING id""",
                (equipment_id, change.fault_code, change.severity, rule.name, rule.version, change.at,
                 Jsonb(change.evidence)),
            ).fetchone()
            if fault_id is None:
                return
            log.info("fault %s raised on %s at %s: %s", change.fault_code, equipment_id, change.at, change.evidence)
        else:
            fault_id = conn.execute(
                """UPDATE faults SET ended_at = %s, clear_evidence = %s
                   WHERE equipment_id = %s AND fault_code = %s AND ended_at IS NULL RETURNING id""",
                (change.at, Jsonb(change.evidence), equipment_id, change.fault_code),
            ).fetchone()
            if fault_id is None:
                return
            log.info("fault %s cleared on %s at %s", change.fault_code, equipment_id, change.at)
        conn.execute("INSERT INTO fault_events (fault_id, kind, at) VALUES (%s, %s, %s)",
                     (fault_id[0], change.kind, change.at))
