"""The diagnostics worker: follows ``accepted_batches`` and runs each machine's engine.

Per round, in one transaction: the new readings of the batches (exactly those rows, by the
inserting transaction's id), each machine's engine state, the faults it produced, its new state
and the consumer cursor. A crash repeats nothing and skips nothing.

Readings newer than what a machine's engine has seen are fed to it live. Readings older than that
(a backlog that arrived after live data) are replayed with the readings around them through a
fresh engine, and the episodes found there are stored as backfilled faults unless a known fault
already covers them — so late data is diagnosed in time order without disturbing live state.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from core import outbox
from core.db import poll_until_stopped
from core.telemetry import CHANNELS
from diagnostics.engine import EquipmentEngine
from diagnostics.rulebook import rulebook_for
from diagnostics.rules import EquipmentContext, FaultChange, Offline, Sample, Site
from diagnostics.training import load_active_models

log = logging.getLogger(__name__)

CONSUMER = "diagnostics"
BATCHES_PER_ROUND = 200
# A replay of late readings starts this long before them, so that sustained conditions that began
# earlier are seen whole.
BACKFILL_LOOKBACK_S = 600.0
OFFLINE_CHECK_INTERVAL_S = 5.0
CONTEXT_TTL_S = 60.0

_CHANNEL_LIST = ", ".join(f"r.{c}" for c in CHANNELS)
# The readings each batch inserted: same equipment and span, and written by the batch's transaction.
_NEW_READINGS = f"""
SELECT r.equipment_id, r.ts, {_CHANNEL_LIST}, r.fault_codes, s.accepted_at
FROM accepted_batches b
CROSS JOIN LATERAL unnest(b.equipment_ids, b.first_ts, b.last_ts) AS s0(equipment_id, first_ts, last_ts)
CROSS JOIN LATERAL (SELECT s0.equipment_id, s0.first_ts, s0.last_ts, b.accepted_at, b.xid::xid AS x) s
JOIN readings r ON r.equipment_id = s.equipment_id AND r.ts BETWEEN s.first_ts AND s.last_ts AND r.xmin = s.x
WHERE b.id = ANY(%s)
ORDER BY r.equipment_id, r.ts
"""
_HISTORY = f"""
SELECT r.equipment_id, r.ts, {_CHANNEL_LIST}, r.fault_codes, NULL::timestamptz
FROM readings r WHERE r.equipment_id = %s AND r.ts >= %s AND r.ts <= %s ORDER BY r.ts
"""
_CONTEXT = """
SELECT e.id, e.model, e.last_service_hours, s.lat, s.lon, s.radius_m, s.timezone,
       s.permitted_from_hour, s.permitted_to_hour
FROM equipment e LEFT JOIN sites s ON s.name = e.site WHERE e.id = ANY(%s)
"""


def sample_from_row(row: tuple) -> tuple[str, Sample, datetime | None]:
    equipment_id, ts, *values, fault_codes, arrived_at = row
    codes = tuple((c["spn"], c["fmi"], c.get("oc", 0)) for c in fault_codes) if fault_codes else ()
    return equipment_id, Sample(ts, dict(zip(CHANNELS, values, strict=True)), codes), arrived_at


class DiagnosticsWorker:
    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        self.late_readings = 0
        self.backfilled_faults = 0
        self._contexts: dict[str, tuple[float, EquipmentContext]] = {}
        self._offline_checked_at = 0.0

    def run(self, stop: threading.Event) -> None:
        poll_until_stopped(self.database_url, CONSUMER, self.process_available, stop)

    def process_available(self, conn: psycopg.Connection) -> int:
        """One round: the accepted batches not yet processed, then the offline check when due."""
        done = self._process_batches(conn)
        if time.monotonic() - self._offline_checked_at >= OFFLINE_CHECK_INTERVAL_S:
            self._offline_checked_at = time.monotonic()
            done += self.check_offline(conn)
        return done

    def _process_batches(self, conn: psycopg.Connection) -> int:
        with conn.transaction():
            cursor = outbox.load_cursor(conn, CONSUMER)
            batches = outbox.fetch_after(conn, "accepted_batches", cursor, limit=BATCHES_PER_ROUND)
            if not batches:
                return 0
            by_equipment: dict[str, list[tuple[Sample, datetime | None]]] = defaultdict(list)
            for row in conn.execute(_NEW_READINGS, ([b["id"] for b in batches],)):
                equipment_id, sample, arrived_at = sample_from_row(row)
                by_equipment[equipment_id].append((sample, arrived_at))
            engines = self._load_engines(conn, list(by_equipment))
            for equipment_id, samples in by_equipment.items():
                self._diagnose(conn, engines[equipment_id], samples)
            self._save_engines(conn, engines.values())
            last = batches[-1]
            outbox.save_cursor(conn, CONSUMER, (last["cursor_xid"], last["id"]))
        return len(batches)

    def _diagnose(self, conn: psycopg.Connection, engine: EquipmentEngine,
                  samples: list[tuple[Sample, datetime | None]]) -> None:
        late = []
        for sample, arrived_at in samples:
            if engine.last_ts is not None and sample.ts <= engine.last_ts:
                late.append(sample)
                if arrived_at is not None:
                    engine.last_arrival = max(engine.last_arrival or arrived_at, arrived_at)
                continue
            for change in engine.feed(sample, arrived_at):
                self._record(conn, engine.ctx.equipment_id, change)
        if late:
            self.late_readings += len(late)
            self._backfill(conn, engine, late[0].ts, late[-1].ts)

    def _backfill(self, conn: psycopg.Connection, engine: EquipmentEngine, first: datetime, last: datetime) -> None:
        equipment_id = engine.ctx.equipment_id
        replay = EquipmentEngine(engine.rulebook, engine.ctx)
        history = conn.execute(_HISTORY, (equipment_id, first - timedelta(seconds=BACKFILL_LOOKBACK_S), last))
        opened: dict[tuple[str, str], FaultChange] = {}
        episodes: list[tuple[FaultChange, datetime]] = []
        for row in history:
            for change in replay.feed(sample_from_row(row)[1]):
                key = (change.rule, change.fault_code)
                if change.kind == "raised" and change.at >= first:
                    opened[key] = change
                elif change.kind == "cleared" and key in opened:
                    episodes.append((opened.pop(key), change.at))
        episodes.extend((raised, last) for raised in opened.values())
        for raised, ended_at in episodes:
            known = conn.execute(
                """SELECT 1 FROM faults WHERE equipment_id = %s AND fault_code = %s AND started_at <= %s
                   AND coalesce(ended_at, 'infinity') >= %s LIMIT 1""",
                (equipment_id, raised.fault_code, ended_at, raised.at),
            ).fetchone()
            if known:
                continue
            self.backfilled_faults += 1
            fault_id = self._insert_fault(conn, equipment_id, raised, backfilled=True, ended_at=ended_at)
            conn.execute("INSERT INTO fault_events (fault_id, kind, at) VALUES (%s, 'raised', %s), (%s, 'cleared', %s)",
                         (fault_id, raised.at, fault_id, ended_at))
            log.info("backfilled fault %s on %s from %s to %s", raised.fault_code, equipment_id, raised.at, ended_at)

    def check_offline(self, conn: psycopg.Connection) -> int:
        """Raise OFFLINE for machines silent past their rulebook's limit."""
        shortest_s = min((r.after_s for r in rulebook_for("").rules if isinstance(r, Offline)), default=120.0)
        with conn.transaction():
            now = conn.execute("SELECT now()").fetchone()[0]
            silent = [row[0] for row in conn.execute(
                """SELECT s.equipment_id FROM equipment_state s
                   WHERE s.last_received_at < now() - make_interval(secs => %s)
                     AND NOT EXISTS (SELECT 1 FROM faults f WHERE f.equipment_id = s.equipment_id
                                     AND f.fault_code = 'OFFLINE' AND f.ended_at IS NULL)""",
                (shortest_s,))]
            if not silent:
                return 0
            engines = self._load_engines(conn, silent)
            raised = 0
            for equipment_id, engine in engines.items():
                for change in engine.tick(now):
                    self._record(conn, equipment_id, change)
                    raised += 1
            self._save_engines(conn, engines.values())
        return raised

    # --- state and context ---

    def _load_engines(self, conn: psycopg.Connection, equipment_ids: list[str]) -> dict[str, EquipmentEngine]:
        states = dict(conn.execute(
            "SELECT equipment_id, state FROM diagnostic_state WHERE equipment_id = ANY(%s)", (equipment_ids,)))
        contexts = self._context(conn, equipment_ids)
        return {eid: EquipmentEngine(rulebook_for(ctx.model), ctx, states.get(eid)) for eid, ctx in contexts.items()}

    def _save_engines(self, conn: psycopg.Connection, engines: Any) -> None:
        rows = [(e.ctx.equipment_id, e.last_ts, e.last_arrival, e.rulebook.version, Jsonb(e.state())) for e in engines]
        with conn.cursor() as cur:
            cur.executemany(
                """INSERT INTO diagnostic_state
                       (equipment_id, last_ts, last_arrival, rulebook_version, state, updated_at)
                   VALUES (%s, %s, %s, %s, %s, now())
                   ON CONFLICT (equipment_id) DO UPDATE SET last_ts = EXCLUDED.last_ts,
                       last_arrival = EXCLUDED.last_arrival, rulebook_version = EXCLUDED.rulebook_version,
                       state = EXCLUDED.state, updated_at = now()""",
                rows,
            )

    def _context(self, conn: psycopg.Connection, equipment_ids: list[str]) -> dict[str, EquipmentContext]:
        now = time.monotonic()
        missing = [e for e in equipment_ids if e not in self._contexts or now - self._contexts[e][0] > CONTEXT_TTL_S]
        if missing:
            models = load_active_models(conn, missing)
            with conn.cursor(row_factory=dict_row) as cur:
                for row in cur.execute(_CONTEXT, (missing,)):
                    site = None
                    if row["lat"] is not None:
                        hours = None
                        if row["permitted_from_hour"] is not None:
                            hours = (row["permitted_from_hour"], row["permitted_to_hour"])
                        site = Site(row["lat"], row["lon"], row["radius_m"], row["timezone"], hours)
                    self._contexts[row["id"]] = (now, EquipmentContext(
                        row["id"], row["model"], site, row["last_service_hours"], models.get(row["id"], {})))
        return {e: self._contexts[e][1] for e in equipment_ids if e in self._contexts}

    # --- faults ---

    def _record(self, conn: psycopg.Connection, equipment_id: str, change: FaultChange) -> None:
        if change.kind == "updated":
            diagnosis = change.diagnosis or {}
            conn.execute(
                """UPDATE faults SET diagnosis = %s, remote_resolvable = %s
                   WHERE equipment_id = %s AND fault_code = %s AND rule = %s AND ended_at IS NULL""",
                (Jsonb(diagnosis), diagnosis.get("remote_resolvable"), equipment_id, change.fault_code, change.rule))
            log.info("diagnosis of %s on %s revised: most probable %s", change.fault_code, equipment_id,
                     (diagnosis.get("causes") or [{}])[0].get("id"))
            return
        if change.kind == "raised":
            fault_id = self._insert_fault(conn, equipment_id, change)
            if fault_id is None:
                return
            log.info("fault %s raised on %s at %s", change.fault_code, equipment_id, change.at)
        else:
            row = conn.execute(
                """UPDATE faults SET ended_at = %s, clear_evidence = %s
                   WHERE equipment_id = %s AND fault_code = %s AND rule = %s AND ended_at IS NULL RETURNING id""",
                (change.at, Jsonb(change.evidence), equipment_id, change.fault_code, change.rule),
            ).fetchone()
            if row is None:
                return
            fault_id = row[0]
            log.info("fault %s cleared on %s at %s", change.fault_code, equipment_id, change.at)
        conn.execute("INSERT INTO fault_events (fault_id, kind, at) VALUES (%s, %s, %s)",
                     (fault_id, change.kind, change.at))

    def _insert_fault(self, conn: psycopg.Connection, equipment_id: str, change: FaultChange, *,
                      backfilled: bool = False, ended_at: datetime | None = None) -> int | None:
        diagnosis = change.diagnosis or {}
        row = conn.execute(
            """INSERT INTO faults (equipment_id, fault_code, severity, rule, rule_version, started_at, ended_at,
                                   evidence, title, diagnosis, remote_resolvable, backfilled)
               VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
               ON CONFLICT (equipment_id, fault_code, rule) WHERE ended_at IS NULL DO NOTHING
               RETURNING id""",
            (equipment_id, change.fault_code, change.severity, change.rule, change.rule_version, change.at, ended_at,
             Jsonb(change.evidence), diagnosis.get("title"), Jsonb(diagnosis), diagnosis.get("remote_resolvable"),
             backfilled),
        ).fetchone()
        return row[0] if row else None
