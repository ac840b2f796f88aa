"""The diagnostics worker: follows ``accepted_batches`` for the equipment shards it owns and runs
their engines, kept in memory.

Any number of workers share the fleet: each owns a set of shards (core.shards, one advisory lock
per shard held by its database session), reads only its machines' new readings, and keeps every
rule's state for them in one ``ShardEngine`` (rule state as arrays, evaluated over all machines of
a round at once). Faults are written every round; the engines' state is checkpointed per shard
with the shard's cursor at intervals, when a shard is handed over, on shutdown, and in the very
transaction that stores a fault change of one of its machines. A successor (after a restart, a
crash or a rebalance) restores the checkpoint and replays the batches after it; since every
change was stored together with a checkpoint taken after it, the replay covers only batches that
changed nothing, and the engine, being deterministic, changes nothing again: every fault is
raised exactly once without any bookkeeping of what was written.

Readings newer than what a machine's engine has seen are fed to it live. Readings older than that
(a backlog that arrived after live data) are replayed with the readings around them through a
fresh engine, and the episodes found there are stored as backfilled faults unless a known fault
already covers them — so late data is diagnosed in time order without disturbing live state.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from core import metrics, outbox
from core.db import one, poll_until_stopped
from core.shards import SHARD_COUNT, ShardLeases, shard_of
from core.telemetry import CHANNELS
from diagnostics.engine import EquipmentEngine
from diagnostics.rulebook import rulebook_for
from diagnostics.rules import EquipmentContext, FaultChange, Sample, Site
from diagnostics.shard_engine import ShardEngine
from diagnostics.training import load_active_models

log = logging.getLogger(__name__)

CONSUMER = "diagnostics"
BATCHES_PER_ROUND = 200
# A round stops at the batch that brings it past this many readings (of every shard; a worker
# reads its own share of them): rounds stay short enough that progress, checkpoints and the
# handing over of shards are never long behind, and memory stays bounded, even in a backlog.
READINGS_PER_ROUND = 50_000
# A round longer than this is logged with where its time went.
SLOW_ROUND_S = 1.0
# A replay of late readings starts this long before them, so that sustained conditions that began
# earlier are seen whole.
BACKFILL_LOOKBACK_S = 600.0
OFFLINE_CHECK_INTERVAL_S = 5.0
# A machine's context (site, last service hours, models) older than this is read again when its next
# readings arrive: a service recorded or a site changed takes effect within about this, without a restart.
CONTEXT_TTL_S = 60.0
# What a crash costs is replaying up to this much; what a checkpoint costs is one export per shard.
CHECKPOINT_EVERY_S = 10.0
# How often a worker looks at its share: a dead worker's shards are taken within about this.
REBALANCE_EVERY_S = 1.0

_CHANNEL_LIST = ", ".join(f"r.{c}" for c in CHANNELS)
# The readings those batches inserted (same equipment and span, written by the batch's transaction),
# for machines of the owned shards whose cursor is before the batch. Each span is one lookup of the
# primary key: OFFSET 0 keeps the subquery a per-span lookup whatever the statistics say, since a
# plan that scans the readings partition instead costs seconds once it holds millions of rows.
_NEW_READINGS = f"""
SELECT r.equipment_id, extract(epoch FROM r.ts)::float8, {_CHANNEL_LIST}, r.fault_codes,
       extract(epoch FROM b.accepted_at)::float8
FROM accepted_batches b
CROSS JOIN LATERAL unnest(b.equipment_ids, b.first_ts, b.last_ts) AS s(equipment_id, first_ts, last_ts)
JOIN unnest(%(shards)s::integer[], %(xids)s::xid8[], %(ids)s::bigint[]) AS c(shard, last_xid, last_id)
  ON c.shard = equipment_shard(s.equipment_id, {SHARD_COUNT}) AND (b.xid, b.id) > (c.last_xid, c.last_id)
CROSS JOIN LATERAL (
    SELECT r.* FROM readings r
    WHERE r.equipment_id = s.equipment_id AND r.ts BETWEEN s.first_ts AND s.last_ts AND r.xmin = b.xid::xid
    OFFSET 0) r
WHERE b.id = ANY(%(batches)s)
ORDER BY r.equipment_id, r.ts
"""
_HISTORY = f"""
SELECT r.ts, {_CHANNEL_LIST}, r.fault_codes
FROM readings r WHERE r.equipment_id = %s AND r.ts >= %s AND r.ts <= %s ORDER BY r.ts
"""
_CONTEXT = """
SELECT e.id, e.model, e.last_service_hours, s.lat, s.lon, s.radius_m, s.timezone,
       s.permitted_from_hour, s.permitted_to_hour
FROM equipment e LEFT JOIN sites s ON s.name = e.site WHERE {where}
"""
# A fault with its events: raised, and cleared too when it comes with its end (a backfilled episode).
_INSERT_FAULT = """
WITH f AS (
    INSERT INTO faults (equipment_id, fault_code, severity, rule, rule_version, started_at, ended_at,
                        evidence, title, diagnosis, remote_resolvable, backfilled)
    VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
    ON CONFLICT DO NOTHING RETURNING id, started_at, ended_at)
INSERT INTO fault_events (fault_id, kind, at)
SELECT id, 'raised', started_at FROM f
UNION ALL SELECT id, 'cleared', ended_at FROM f WHERE ended_at IS NOT NULL
"""
_CLEAR = """
WITH f AS (
    UPDATE faults SET ended_at = %s, clear_evidence = %s
    WHERE equipment_id = %s AND fault_code = %s AND rule = %s AND ended_at IS NULL
    RETURNING id, ended_at)
INSERT INTO fault_events (fault_id, kind, at) SELECT id, 'cleared', ended_at FROM f
"""
_REVISE = """
UPDATE faults SET diagnosis = %s, remote_resolvable = %s
WHERE equipment_id = %s AND fault_code = %s AND rule = %s AND ended_at IS NULL
"""


def _first_readings(batches: list[dict[str, Any]], limit: int) -> list[dict[str, Any]]:
    """The leading batches up to the one that reaches ``limit`` readings (at least one)."""
    total = 0
    for i, batch in enumerate(batches):
        total += batch["readings"]
        if total >= limit:
            return batches[:i + 1]
    return batches


def sample_from_history(row: tuple) -> Sample:
    ts, *values, fault_codes = row
    return Sample(ts, dict(zip(CHANNELS, values, strict=True)), _codes(fault_codes))


def _codes(fault_codes: list[dict[str, int]] | None) -> tuple[tuple[int, int, int], ...]:
    return tuple((c["spn"], c["fmi"], c.get("oc", 0)) for c in fault_codes) if fault_codes else ()


class DiagnosticsWorker:
    def __init__(self, database_url: str, *, name: str | None = None,
                 engine_factory: Callable[[], Any] = ShardEngine,
                 checkpoint_every_s: float = CHECKPOINT_EVERY_S,
                 context_ttl_s: float = CONTEXT_TTL_S) -> None:
        self.database_url = database_url
        self.name = name or f"{socket.gethostname()}:{os.getpid()}"
        self.engine_factory = engine_factory
        self.checkpoint_every_s = checkpoint_every_s
        self.context_ttl_s = context_ttl_s
        self.leases = ShardLeases(CONSUMER)
        self.late_readings = 0
        self.backfilled_faults = 0
        self.readings_diagnosed = 0
        self.metrics = metrics.DiagnosticsMetrics(self.name, self.leases)
        self._reset()

    def _reset(self) -> None:
        self.engine = self.engine_factory()
        self.cursors: dict[int, tuple[str, int]] = {}
        self.machines: dict[int, set[str]] = defaultdict(set)  # by shard
        self._contexts: dict[str, tuple[float, EquipmentContext]] = {}
        self._backend_pid: int | None = None
        self._columnar_scan: str | None = None
        self._offline_checked_at = 0.0
        self._round_was_full = False
        self._behind = True
        self._rebalanced_at = 0.0
        self._checkpointed_at = time.monotonic()

    # --- the loop ---

    def run(self, stop: threading.Event) -> None:
        poll_until_stopped(self.database_url, CONSUMER, self.process_available, stop,
                           wake_on=("accepted_batches",), on_stop=self.shutdown)

    def process_available(self, conn: psycopg.Connection) -> int:
        """One round: take or hand over shards when due, the new batches, offline check and
        checkpoint when due."""
        if self._backend_pid != conn.info.backend_pid:
            self._join(conn)
        now = time.monotonic()
        if now - self._rebalanced_at >= REBALANCE_EVERY_S:
            self._rebalanced_at = now
            self.rebalance(conn)
        done = self._process_batches(conn)
        self._behind = self._round_was_full
        # Silence is judged only once caught up: behind, the engines' last arrivals are not yet
        # the newest ones stored.
        if not self._behind and now - self._offline_checked_at >= OFFLINE_CHECK_INTERVAL_S:
            self._offline_checked_at = now
            done += self.check_offline(conn)
        if now - self._checkpointed_at >= self.checkpoint_every_s:
            self.checkpoint(conn)
        return done

    def shutdown(self, conn: psycopg.Connection) -> None:
        """Checkpoint everything and let the shards go (a clean stop; a crash loses only the replay)."""
        if self._backend_pid != conn.info.backend_pid or not self.leases.owned:
            return
        self.checkpoint(conn)
        self.leases.release(conn, list(self.leases.owned))
        conn.commit()

    def position(self) -> tuple[str, int] | None:
        """The oldest cursor among the owned shards (None when owning none)."""
        return outbox.oldest(self.cursors)

    def _join(self, conn: psycopg.Connection) -> None:
        # A new connection: locks held by an earlier one are gone, and so is any right to its state.
        self._reset()
        self._backend_pid = conn.info.backend_pid
        # A round reads up to a few hundred thousand readings sorted by machine: sort in memory;
        # and every span is looked up once, so caching lookups (memoize) only costs.
        conn.execute("SET work_mem = '64MB'")
        conn.execute("SET enable_memoize = off")
        self._columnar_scan = _columnar_scan_setting(conn)
        self.leases.join(conn)
        conn.commit()

    def rebalance(self, conn: psycopg.Connection) -> None:
        surplus = self.leases.surplus(conn)
        if surplus:
            self.checkpoint(conn, surplus)
            self.leases.release(conn, surplus)
            for shard in surplus:
                self.engine.remove(self.machines.pop(shard, set()))
                self.cursors.pop(shard, None)
            log.info("%s handed over shards %s", self.name, surplus)
        taken = self.leases.acquire(conn)
        if taken:
            self._restore(conn, taken)
            # Every owned shard has a checkpoint row from now on, which the rounds' progress updates.
            self.checkpoint(conn, taken)
            log.info("%s took shards %s (owns %d)", self.name, taken, len(self.leases.owned))
        conn.commit()

    # --- checkpoints ---

    def checkpoint(self, conn: psycopg.Connection, shards: Iterable[int] | None = None) -> None:
        """Save the state and cursor of these shards (all owned when None), in the caller's
        transaction if one is open."""
        with conn.transaction():
            for shard in sorted(self.leases.owned if shards is None else shards):
                if shard not in self.cursors:
                    continue
                ids = sorted(self.machines.get(shard, ()))
                outbox.save_checkpoint(conn, CONSUMER, shard, self.cursors[shard],
                                       self.engine.export(ids) if ids else None, self.name)
                self.metrics.checkpoints.inc()
        if shards is None:
            self._checkpointed_at = time.monotonic()

    def _restore(self, conn: psycopg.Connection, shards: list[int]) -> None:
        saved = outbox.load_checkpoints(conn, CONSUMER, shards)
        contexts = self._load_contexts(conn, shards=shards)
        for shard in shards:
            cursor, blob = saved[shard]
            self.cursors[shard] = cursor
            if blob is not None:
                self.engine.restore(bytes(blob), contexts)
        for equipment_id in contexts:
            if equipment_id in self.engine:
                self.machines[shard_of(equipment_id)].add(equipment_id)

    # --- batches ---

    def _process_batches(self, conn: psycopg.Connection) -> int:
        self._round_was_full = False
        oldest = self.position()
        if oldest is None:
            return 0
        began = time.monotonic()
        with conn.transaction():
            # After the owned shards' oldest cursor, in commit-safe order.
            batches = outbox.fetch_after(conn, "accepted_batches", oldest, limit=BATCHES_PER_ROUND,
                                         columns=("readings", "accepted_at"))
            if not batches:
                self.metrics.caught_up()
                return 0
            fetched = len(batches)
            batches = _first_readings(batches, READINGS_PER_ROUND)
            self._round_was_full = fetched == BATCHES_PER_ROUND or len(batches) < fetched
            shards = sorted(self.cursors)
            with conn.cursor() as cur, _without(conn, self._columnar_scan):
                # Planned for its arguments each time: a generic plan (psycopg prepares a statement
                # run often) cannot prune the readings partitions or size the spans, and was
                # measured 10-40x slower once the readings table grew.
                rows = cur.execute(_NEW_READINGS, {
                    "shards": shards, "xids": [self.cursors[s][0] for s in shards],
                    "ids": [self.cursors[s][1] for s in shards], "batches": [b["id"] for b in batches],
                }, prepare=False).fetchall()
            read = time.monotonic()
            changes = self._diagnose(conn, rows) if rows else []
            last = (batches[-1]["cursor_xid"], batches[-1]["id"])
            outbox.save_progress(conn, CONSUMER, outbox.advance(self.cursors, last), last)
            self._checkpoint_changed(conn, changes)
        self.metrics.round(time.monotonic() - began, batches[-1]["accepted_at"])
        if (ended := time.monotonic()) - began > SLOW_ROUND_S:
            log.warning("%s: slow round, %d batches, %d readings: %.0f ms reading them, %.0f ms diagnosing and "
                        "writing %d changes", self.name, len(batches), len(rows), (read - began) * 1000,
                        (ended - read) * 1000, len(changes))
        return len(batches)

    def _checkpoint_changed(self, conn: psycopg.Connection, changes: list[tuple[str, FaultChange]]) -> None:
        """Checkpoint the shards of these changes in the transaction that stores the changes, so
        that no replay after a crash can produce them again."""
        if changes:
            self.checkpoint(conn, {shard_of(equipment_id) for equipment_id, _ in changes})

    def _diagnose(self, conn: psycopg.Connection, rows: list[tuple]) -> list[tuple[str, FaultChange]]:
        columns = list(zip(*rows, strict=True))
        equipment_ids: tuple[str, ...] = columns[0]
        self._ensure_engines(conn, sorted(set(equipment_ids)))
        ts = np.array(columns[1], dtype=np.float64)
        values = {c: np.array(columns[2 + i], dtype=np.float64) for i, c in enumerate(CHANNELS)}
        fault_codes = {i: _codes(codes) for i, codes in enumerate(columns[2 + len(CHANNELS)]) if codes}
        arrived_at = np.array(columns[3 + len(CHANNELS)], dtype=np.float64)
        changes, late = self.engine.feed(equipment_ids, ts, values, fault_codes, arrived_at)
        self.readings_diagnosed += len(rows) - len(late)
        self.metrics.readings(len(rows) - len(late), len(late))
        self._record(conn, changes)
        if len(late):
            self.late_readings += len(late)
            spans: dict[str, tuple[float, float]] = {}
            for i in late.tolist():
                first, last = spans.get(equipment_ids[i], (ts[i], ts[i]))
                spans[equipment_ids[i]] = (min(first, ts[i]), max(last, ts[i]))
            for equipment_id, (first, last) in spans.items():
                self._backfill(conn, equipment_id, datetime.fromtimestamp(first, UTC),
                               datetime.fromtimestamp(last, UTC))
        return changes

    def _ensure_engines(self, conn: psycopg.Connection, equipment_ids: list[str]) -> None:
        now = time.monotonic()
        stale = [e for e in equipment_ids if e in self.engine and now - self._contexts[e][0] > self.context_ttl_s]
        if stale:
            for ctx in self._load_contexts(conn, equipment_ids=stale).values():
                self.engine.set_context(ctx)
        missing = [e for e in equipment_ids if e not in self.engine]
        if not missing:
            return
        contexts = self._load_contexts(conn, equipment_ids=missing)
        # State a single-process diagnostics of an earlier version kept per machine.
        legacy: dict[str, dict[str, Any]] = dict(conn.execute(
            "SELECT equipment_id, state FROM diagnostic_state WHERE equipment_id = ANY(%s)", (missing,)))
        for equipment_id, ctx in contexts.items():
            self.engine.add(ctx, legacy.get(equipment_id))
            self.machines[shard_of(equipment_id)].add(equipment_id)

    def _load_contexts(self, conn: psycopg.Connection, *, equipment_ids: list[str] | None = None,
                       shards: list[int] | None = None) -> dict[str, EquipmentContext]:
        params: list[int] | list[str] | None
        if shards is not None:
            where, params = f"equipment_shard(e.id, {SHARD_COUNT}) = ANY(%s)", shards
        else:
            where, params = "e.id = ANY(%s)", equipment_ids
        now = time.monotonic()
        contexts: dict[str, EquipmentContext] = {}
        with conn.cursor(row_factory=dict_row) as cur:
            rows = cur.execute(_CONTEXT.format(where=where), (params,)).fetchall()
        models = load_active_models(conn, [row["id"] for row in rows])
        for row in rows:
            site = None
            if row["lat"] is not None:
                hours = None
                if row["permitted_from_hour"] is not None:
                    hours = (row["permitted_from_hour"], row["permitted_to_hour"])
                site = Site(row["lat"], row["lon"], row["radius_m"], row["timezone"], hours)
            ctx = EquipmentContext(row["id"], row["model"], site, row["last_service_hours"], models.get(row["id"], {}))
            self._contexts[row["id"]] = (now, ctx)
            contexts[row["id"]] = ctx
        return contexts

    def _backfill(self, conn: psycopg.Connection, equipment_id: str, first: datetime, last: datetime) -> None:
        ctx = self._contexts[equipment_id][1]
        replay = EquipmentEngine(rulebook_for(ctx.model), ctx)
        history = conn.execute(_HISTORY, (equipment_id, first - timedelta(seconds=BACKFILL_LOOKBACK_S), last))
        opened: dict[tuple[str, str], FaultChange] = {}
        episodes: list[tuple[FaultChange, datetime]] = []
        for row in history:
            for change in replay.feed(sample_from_history(row)):
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
            self.metrics.fault_change("backfilled")
            conn.execute(_INSERT_FAULT, _fault_row(equipment_id, raised, ended_at=ended_at))
            log.info("backfilled fault %s on %s from %s to %s", raised.fault_code, equipment_id, raised.at, ended_at)

    # --- offline ---

    def check_offline(self, conn: psycopg.Connection, *, now: datetime | None = None) -> int:
        """Raise OFFLINE for the owned machines silent past their rulebook's limit (by the
        database's clock, which stamped their arrivals)."""
        if not len(self.engine):
            return 0
        with conn.transaction():
            if now is None:
                now = one(conn.execute("SELECT now()"))[0]
            changes = self.engine.tick(now.timestamp())
            self._record(conn, changes)
            self._checkpoint_changed(conn, changes)
        return len(changes)

    # --- faults ---

    def _record(self, conn: psycopg.Connection, changes: list[tuple[str, FaultChange]]) -> None:
        """Store the changes in order, in one round trip (a storm raises thousands at once)."""
        if not changes:
            return
        with conn.pipeline(), conn.cursor() as cur:
            for equipment_id, change in changes:
                self.metrics.fault_change(change.kind)
                if change.kind == "raised":
                    cur.execute(_INSERT_FAULT, _fault_row(equipment_id, change))
                    log.info("fault %s raised on %s at %s", change.fault_code, equipment_id, change.at)
                elif change.kind == "cleared":
                    cur.execute(_CLEAR, (change.at, Jsonb(change.evidence), equipment_id, change.fault_code,
                                         change.rule))
                    log.info("fault %s cleared on %s at %s", change.fault_code, equipment_id, change.at)
                else:
                    diagnosis = change.diagnosis or {}
                    cur.execute(_REVISE, (Jsonb(diagnosis), diagnosis.get("remote_resolvable"), equipment_id,
                                          change.fault_code, change.rule))
                    log.info("diagnosis of %s on %s revised: most probable %s", change.fault_code, equipment_id,
                             (diagnosis.get("causes") or [{}])[0].get("id"))


def _fault_row(equipment_id: str, raised: FaultChange, *, ended_at: datetime | None = None) -> tuple:
    """The parameters of ``_INSERT_FAULT`` for a raised change (backfilled when it comes with its end)."""
    diagnosis = raised.diagnosis or {}
    return (equipment_id, raised.fault_code, raised.severity, raised.rule, raised.rule_version, raised.at, ended_at,
            Jsonb(raised.evidence), diagnosis.get("title"), Jsonb(diagnosis), diagnosis.get("remote_resolvable"),
            ended_at is not None)


# TimescaleDB's scan of compressed chunks refuses system columns other than tableoid, and a batch's
# readings are found by xmin. They are never in a chunk's compressed part (an insert into a
# compressed chunk lands in its uncompressed part until the policy compresses it again, long after
# diagnostics has read it), so that scan is switched off around that one query. Its name depends
# on the TimescaleDB release.
_COLUMNAR_SCAN_SETTINGS = ("timescaledb.enable_columnarscan", "timescaledb.enable_transparent_decompression")


def _columnar_scan_setting(conn: psycopg.Connection) -> str | None:
    row = conn.execute("SELECT name FROM pg_settings WHERE name = ANY(%s) ORDER BY name LIMIT 1",
                       (list(_COLUMNAR_SCAN_SETTINGS),)).fetchone()
    return None if row is None else str(row[0])


@contextmanager
def _without(conn: psycopg.Connection, setting: str | None) -> Iterator[None]:
    """Run the block with ``setting`` off (nothing to do on plain PostgreSQL: ``setting`` is None)."""
    if setting is None:
        yield
        return
    conn.execute(f"SET LOCAL {setting} = off")
    try:
        yield
    finally:
        conn.execute(f"SET LOCAL {setting} = on")
