"""The database side of ingest: one transaction per batch of MQTT messages.

Good readings are COPYed into a staging table and inserted from there; a batch that meets a
reading already stored is written again with ON CONFLICT DO NOTHING, so a message the broker
redelivers is stored once. In the same transaction: the latest state per
equipment, the dead letters of the batch, and one ``accepted_batches`` row for diagnostics.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import datetime

import psycopg
from psycopg.types.json import Jsonb

from core import topics
from core.db import one
from core.inbound import DEAD_LETTER_PAYLOAD_BYTES
from core.settings import Settings
from core.telemetry import CHANNELS, Reading
from ingest.counters import CheckedReadings, KnownCounters, RefusedCounter
from ingest.sequences import ranges_of

log = logging.getLogger(__name__)
_DEFAULTS = Settings.model_construct()

# Dead letters keep the head of a payload: enough to see what a device sent, bounded in size.

READING_COLUMNS = ("equipment_id", "ts", *CHANNELS, "fault_codes")
# The readings table keeps a channel as float4 unless it needs more digits (ingest's migrations).
_DOUBLE_PRECISION_CHANNELS = ("engine_hours", "lat", "lon")
_COPY_TYPES = ("text", "timestamptz", *("float8" if c in _DOUBLE_PRECISION_CHANNELS else "float4" for c in CHANNELS),
               "jsonb")
_COLUMN_LIST = ", ".join(READING_COLUMNS)
_STATE_COLUMNS = CHANNELS

_CREATE_STAGING = """
CREATE TEMP TABLE IF NOT EXISTS ingest_staging (LIKE readings INCLUDING DEFAULTS) ON COMMIT DELETE ROWS
"""
# The batch's runs of sequence numbers per machine (ingest.sequences), COPYed like the readings: a
# binary COPY costs far less than passing them as array parameters.
_CREATE_SEQUENCE_STAGING = """
CREATE TEMP TABLE IF NOT EXISTS ingest_sequence_runs (
    equipment_id text NOT NULL, first_seq bigint NOT NULL, last_seq bigint NOT NULL, messages integer NOT NULL
) ON COMMIT DELETE ROWS
"""
_SEQUENCE_COPY_TYPES = ("text", "int8", "int8", "int4")

# The channels readings_hourly keeps as sum and count (ingest.queries averages them from there).
AVERAGED = ("oil_temp_c", "engine_rpm", "hydraulic_pressure_bar", "coolant_temp_c", "fuel_level_pct", "speed_kmh",
            "ambient_temp_c")
_HOUR = "date_bin('1 hour', ts, TIMESTAMPTZ '2000-01-01 00:00+00')"
HAS_POSITION = "lat IS NOT NULL AND lon IS NOT NULL"
_newer_position = "EXCLUDED.position_ts > coalesce(h.position_ts, '-infinity')"

# What follows from the readings a batch inserted, read from the CTE or table named {new}: the hourly
# rollups and one accepted_batches row (equipment and time span per machine) for diagnostics.
_ROLLUP_AND_ACCEPT = f"""
hourly AS (
    SELECT equipment_id, {_HOUR} AS hour, count(*) AS samples,
        {", ".join(f"coalesce(sum({c}::float8), 0) AS {c}_sum, count({c}) AS {c}_n" for c in AVERAGED)},
        max(engine_hours) AS engine_hours_max, max(ts) FILTER (WHERE {HAS_POSITION}) AS position_ts
    FROM {{new}} GROUP BY 1, 2
), rollup AS (
    -- The hour's last position is joined back by its time: an ordered aggregate would sort per group.
    INSERT INTO readings_hourly AS h (equipment_id, hour, samples,
        {", ".join(f"{c}_sum, {c}_n" for c in AVERAGED)}, engine_hours_max, position_ts, lat, lon)
    SELECT g.equipment_id, g.hour, g.samples, {", ".join(f"g.{c}_sum, g.{c}_n" for c in AVERAGED)},
        g.engine_hours_max, g.position_ts, p.lat, p.lon
    FROM hourly g LEFT JOIN {{new}} p ON p.equipment_id = g.equipment_id AND p.ts = g.position_ts
    ON CONFLICT (equipment_id, hour) DO UPDATE SET
        samples = h.samples + EXCLUDED.samples,
        {", ".join(f"{c}_sum = h.{c}_sum + EXCLUDED.{c}_sum, {c}_n = h.{c}_n + EXCLUDED.{c}_n" for c in AVERAGED)},
        engine_hours_max = GREATEST(h.engine_hours_max, EXCLUDED.engine_hours_max),
        lat = CASE WHEN {_newer_position} THEN EXCLUDED.lat ELSE h.lat END,
        lon = CASE WHEN {_newer_position} THEN EXCLUDED.lon ELSE h.lon END,
        position_ts = GREATEST(h.position_ts, EXCLUDED.position_ts)
), spans AS (
    SELECT equipment_id, min(ts) AS first_ts, max(ts) AS last_ts, count(*) AS n
    FROM {{new}} GROUP BY equipment_id
), batch AS (
    INSERT INTO accepted_batches (readings, equipment_ids, first_ts, last_ts)
    SELECT sum(n), array_agg(equipment_id), array_agg(first_ts), array_agg(last_ts)
    FROM spans HAVING count(*) > 0
    RETURNING readings
)
SELECT coalesce((SELECT readings FROM batch), 0)
"""
# The common batch, without a reading stored before: a plain insert, which costs about half of one
# with ON CONFLICT, and everything else read from the staging table, which then holds exactly the
# inserted readings. A batch that meets a stored reading fails here with a unique violation.
_INSERT_ALL_READINGS = f"""
WITH inserted AS (
    INSERT INTO readings ({_COLUMN_LIST}) SELECT {_COLUMN_LIST} FROM ingest_staging
), {_ROLLUP_AND_ACCEPT.format(new="ingest_staging")}"""
# Written again after that violation: only the readings not stored yet count, from RETURNING.
_INSERT_READINGS_NOT_STORED_YET = f"""
WITH new AS (
    INSERT INTO readings ({_COLUMN_LIST}) SELECT {_COLUMN_LIST} FROM ingest_staging
    ON CONFLICT (equipment_id, ts) DO NOTHING
    RETURNING {_COLUMN_LIST}
), {_ROLLUP_AND_ACCEPT.format(new="new")}"""

_newer = "EXCLUDED.last_ts > equipment_state.last_ts"
_UPSERT_STATE = f"""
INSERT INTO equipment_state (equipment_id, last_ts, last_received_at, last_seq, {", ".join(_STATE_COLUMNS)},
                             engine_hours_at)
SELECT DISTINCT ON (s.equipment_id) s.equipment_id, s.ts, now(), seq.last_seq,
       {", ".join("s." + c for c in _STATE_COLUMNS)}, CASE WHEN s.engine_hours IS NOT NULL THEN s.ts END
FROM ingest_staging s
LEFT JOIN (SELECT equipment_id, max(last_seq) AS last_seq FROM ingest_sequence_runs GROUP BY equipment_id) seq
    USING (equipment_id)
ORDER BY s.equipment_id, s.ts DESC
ON CONFLICT (equipment_id) DO UPDATE SET
    last_received_at = EXCLUDED.last_received_at,
    last_seq = coalesce(EXCLUDED.last_seq, equipment_state.last_seq),
    last_ts = GREATEST(equipment_state.last_ts, EXCLUDED.last_ts),
    {", ".join(
        f"{c} = CASE WHEN {_newer} THEN coalesce(EXCLUDED.{c}, equipment_state.{c}) ELSE equipment_state.{c} END"
        for c in _STATE_COLUMNS)},
    engine_hours_at = CASE WHEN {_newer} AND EXCLUDED.engine_hours IS NOT NULL THEN EXCLUDED.engine_hours_at
                           ELSE equipment_state.engine_hours_at END
"""

_RECORD_SEQUENCES = """
INSERT INTO message_sequences (equipment_ids, first_seqs, last_seqs, messages)
SELECT array_agg(equipment_id), array_agg(first_seq), array_agg(last_seq), array_agg(messages)
FROM ingest_sequence_runs HAVING count(*) > 0
"""

_UPSERT_STATS = """
INSERT INTO ingest_stats AS s (worker, started_at, updated_at, messages, readings_stored,
                               readings_duplicate, dead_letters)
VALUES (%(worker)s, %(started_at)s, now(), %(messages)s, %(stored)s, %(duplicate)s, %(dead)s)
ON CONFLICT (worker) DO UPDATE SET
    updated_at = now(),
    messages = s.messages + EXCLUDED.messages,
    readings_stored = s.readings_stored + EXCLUDED.readings_stored,
    readings_duplicate = s.readings_duplicate + EXCLUDED.readings_duplicate,
    dead_letters = s.dead_letters + EXCLUDED.dead_letters
"""


@dataclass(frozen=True, slots=True)
class DeadLetter:
    topic: str
    equipment_id: str | None
    reason: str
    detail: str
    payload: bytes


@dataclass(slots=True)
class Batch:
    """What one transaction writes; filled by the consumer from decoded messages."""

    messages: int = 0
    readings: list[tuple[str, Reading]] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    # The sequence number of every decoded message, per equipment (repeats included).
    sequences: dict[str, list[int]] = field(default_factory=dict)

    def add_sequence(self, equipment_id: str, seq: int) -> None:
        self.sequences.setdefault(equipment_id, []).append(seq)


@dataclass(frozen=True, slots=True)
class WriteResult:
    stored: int
    duplicate: int
    dead_letters: int
    # Readings older than the late window (their engine hours not taken).
    late: int = 0
    # Dead letters of engine hours that contradicted the known ones (their readings stored without them).
    refused_counters: tuple[DeadLetter, ...] = ()


def _row(equipment_id: str, r: Reading) -> tuple:
    # Reading is a named tuple whose fields up to fault_codes are the table's columns after the id.
    codes = Jsonb([{"spn": c.spn, "fmi": c.fmi, "oc": c.oc} for c in r.fault_codes]) if r.fault_codes else None
    return (equipment_id, *r[:-1], codes)


class BatchWriter:
    """Owns one connection; ``write`` commits a batch or raises, leaving nothing half-written."""

    def __init__(self, conn: psycopg.Connection, worker: str, started_at: datetime, *,
                 topic_root: str = _DEFAULTS.topic_root, late_window_s: float = _DEFAULTS.late_window_s) -> None:
        self.conn = conn
        self.worker = worker
        self.started_at = started_at
        self.topic_root = topic_root
        self.counters = KnownCounters(late_window_s)
        if conn.autocommit:
            conn.autocommit = False
        conn.execute(_CREATE_STAGING)
        conn.execute(_CREATE_SEQUENCE_STAGING)
        conn.commit()
        self.counters.load(conn)

    def write(self, batch: Batch) -> WriteResult:
        """Commit the batch. Redelivered messages are rare (a worker restart, a lost acknowledgement),
        so a plain insert is tried first, and only a batch that meets an already stored reading is
        written again with ON CONFLICT. Not a savepoint: diagnostics finds a batch's readings by
        the inserting transaction's id, which a subtransaction would not carry."""
        checked = self.counters.check(batch.readings)
        try:
            return self._write(batch, checked, _INSERT_ALL_READINGS)
        except psycopg.errors.UniqueViolation:
            return self._write(batch, checked, _INSERT_READINGS_NOT_STORED_YET)

    def _write(self, batch: Batch, checked: CheckedReadings, insert_readings: str) -> WriteResult:
        conn = self.conn
        try:
            with conn.cursor() as cur:
                stored = 0
                dead_letters = [*batch.dead_letters, *(_refused_counter(self.topic_root, r) for r in checked.refused)]
                if batch.sequences:
                    _copy_sequence_runs(cur, batch.sequences)
                if batch.readings:
                    with cur.copy(f"COPY ingest_staging ({_COLUMN_LIST}) FROM STDIN (FORMAT BINARY)") as copy:
                        copy.set_types(_COPY_TYPES)
                        for equipment_id, reading in checked.readings:
                            copy.write_row(_row(equipment_id, reading))
                    stored = one(cur.execute(insert_readings))[0]
                    cur.execute(_UPSERT_STATE)
                if batch.sequences:
                    cur.execute(_RECORD_SEQUENCES)
                if dead_letters:
                    cur.executemany(
                        "INSERT INTO dead_letters (topic, equipment_id, reason, detail, payload, payload_bytes) "
                        "VALUES (%s, %s, %s, %s, %s, %s)",
                        [
                            (d.topic, d.equipment_id, d.reason, d.detail[:1000],
                             d.payload[:DEAD_LETTER_PAYLOAD_BYTES], len(d.payload))
                            for d in dead_letters
                        ],
                    )
                result = WriteResult(stored, len(batch.readings) - stored, len(dead_letters), checked.late,
                                     tuple(dead_letters[len(batch.dead_letters):]))
                cur.execute(_UPSERT_STATS, {
                    "worker": self.worker, "started_at": self.started_at, "messages": batch.messages,
                    "stored": result.stored, "duplicate": result.duplicate, "dead": result.dead_letters,
                })
            conn.commit()
            return result
        except BaseException:
            if not conn.closed:
                conn.rollback()
            raise


def _copy_sequence_runs(cur: psycopg.Cursor, sequences: dict[str, list[int]]) -> None:
    with cur.copy("COPY ingest_sequence_runs FROM STDIN (FORMAT BINARY)") as copy:
        copy.set_types(_SEQUENCE_COPY_TYPES)
        for equipment_id, seqs in sequences.items():
            if len(seqs) == 1:
                copy.write_row((equipment_id, seqs[0], seqs[0], 1))
                continue
            for first, last, count in ranges_of(seqs):
                copy.write_row((equipment_id, first, last, count))


def _refused_counter(topic_root: str, refused: RefusedCounter) -> DeadLetter:
    """The dead letter of a reading's engine hours that contradict the machine's (the reading is
    stored without them)."""
    detail = (f"engine_hours {refused.hours} at {refused.ts.isoformat()} contradicts {refused.known} at "
              f"{refused.known_at.isoformat()}: the reading is stored without it")
    payload = json.dumps({"ts": refused.ts.isoformat(), "engine_hours": refused.hours}).encode()
    equipment_id = refused.equipment_id
    return DeadLetter(topics.telemetry_topic(topic_root, equipment_id), equipment_id, "counter_implausible", detail,
                      payload)


def dead_letter_for_reading(topic: str, equipment_id: str, reason: str, detail: str, raw: object) -> DeadLetter:
    try:
        payload = json.dumps(raw, allow_nan=True).encode()
    except (TypeError, ValueError):
        payload = repr(raw).encode()
    return DeadLetter(topic, equipment_id, reason, detail, payload)
