"""The ingest worker: an MQTT 5 shared-subscription consumer feeding the batch writer.

paho's network thread only enqueues (``on_message``); the writer thread decodes, validates and
commits. Messages are acknowledged (QoS 1 PUBACK) only after their batch is committed, and the
session is persistent, so a crash or restart loses nothing: what was not acknowledged comes again
and the database stores it once.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from datetime import UTC, datetime

import psycopg

from core import metrics, mqtt, topics
from core.db import connect
from core.errors import InvalidTelemetry
from core.inbound import BadInputLog, InboundMessage, storable_text
from core.settings import Settings
from core.telemetry import Reading, decode_message
from core.telemetry_binary import decode_binary
from ingest.dead_letters import DeadLetterRetention
from ingest.partitions import ensure_partitions
from ingest.sequences import SequenceJob
from ingest.usage import UsageJob
from ingest.writer import Batch, BatchWriter, DeadLetter, dead_letter_for_reading

log = logging.getLogger(__name__)

SHARE_GROUP = "ingest"
# The broker may have this many unacknowledged messages in flight to one worker (MQTT 5 Receive
# Maximum, core.mqtt.Session): the inbox holds as many.
INBOX_MAX_MESSAGES = 20_000
BATCH_MAX_MESSAGES = 2_000
# Bounds the memory of one batch whatever the message sizes (each is at most MAX_PAYLOAD_BYTES).
BATCH_MAX_PAYLOAD_BYTES = 8 * 1024 * 1024
# How long the first message of a batch may wait for company before the batch is written.
BATCH_MAX_WAIT_S = 0.1
SESSION_EXPIRY_S = 24 * 3600
DB_RETRY_MAX_S = 5.0
PARTITION_CHECK_INTERVAL_S = 3600.0
EQUIPMENT_CACHE_TTL_S = 10.0


class KnownEquipment:
    """Which equipment ids are registered; misses are re-checked at most every few seconds."""

    def __init__(self) -> None:
        self._known: set[str] = set()
        self._missing_checked_at: dict[str, float] = {}

    def load(self, conn: psycopg.Connection) -> None:
        self._known = {row[0] for row in conn.execute("SELECT id FROM equipment")}
        conn.commit()

    def __contains__(self, equipment_id: str) -> bool:
        return equipment_id in self._known

    def recheck(self, conn: psycopg.Connection, equipment_id: str) -> bool:
        now = time.monotonic()
        if now - self._missing_checked_at.get(equipment_id, -EQUIPMENT_CACHE_TTL_S) < EQUIPMENT_CACHE_TTL_S:
            return False
        self._missing_checked_at[equipment_id] = now
        found = conn.execute("SELECT 1 FROM equipment WHERE id = %s", (equipment_id,)).fetchone() is not None
        conn.commit()
        if found:
            self._known.add(equipment_id)
            self._missing_checked_at.pop(equipment_id, None)
        return found


class IngestWorker:
    def __init__(self, settings: Settings, database_url: str, mqtt_url: str, name: str = "ingest-1") -> None:
        self.settings = settings
        self.database_url = database_url
        self.address = mqtt.parse_mqtt_url(mqtt_url)
        self.name = name
        self.metrics = metrics.IngestMetrics(name)
        self.session = self._new_session()
        self.dead_letters = BadInputLog(log, f"ingest {name}: dead letter", on_record=self.metrics.dead_letters)
        # Unforeseen failures (defects) by exception type, logged with their traceback; the messages
        # are dead-lettered. And messages whose dead letter could not be written either: dropped.
        self.failures = BadInputLog(log, f"ingest {name}: handling failed", on_record=self.metrics.failures)
        self.unstorable = BadInputLog(log, f"ingest {name}: message dropped", on_record=self.metrics.unstorable)
        self._equipment = KnownEquipment()
        self.retention = DeadLetterRetention(database_url, settings.dead_letter_retention_days,
                                             settings.dead_letter_purge_every_s, name=f"ingest {name}")

    def _new_session(self) -> mqtt.Session:
        # A share group per codec: rumqttd keys shared subscriptions by group name alone.
        subscriptions = [topics.telemetry_subscription(self.settings.topic_root, f"{SHARE_GROUP}-{kind}", kind)
                         for kind in topics.TELEMETRY_KINDS]
        return mqtt.Session(self.address, f"{self.settings.topic_root}-{self.name}", name=f"ingest {self.name}",
                            subscriptions=subscriptions, manual_ack=True, clean_start=False,
                            session_expiry_s=SESSION_EXPIRY_S, inbox_size=INBOX_MAX_MESSAGES, metrics_label=self.name)

    @property
    def connected(self) -> threading.Event:
        return self.session.ready

    # --- writer side (the worker's thread) ---

    def run(self, stop: threading.Event) -> None:
        started_at = datetime.now(UTC)
        writer = self._open_writer(stop, started_at)
        if writer is None:
            return
        self.session.start()
        purge = self.retention.start(stop)
        usage = UsageJob(self.database_url, name=f"ingest {self.name}").start(stop)
        sequences = SequenceJob(self.database_url, name=self.name, every_s=self.settings.sequence_fold_every_s,
                                settle_s=self.settings.sequence_settle_s,
                                give_up_s=self.settings.sequence_give_up_s).start(stop)
        partitions_checked_at = time.monotonic()
        try:
            while not stop.is_set():
                messages = self._take_batch(stop)
                if not messages:
                    continue
                writer = self._store(writer, messages, stop, started_at)
                if writer is None:
                    return  # stopping with the batch unacknowledged: the broker redelivers it
                # The subscription is QoS 1, so nothing arrives at QoS 2.
                self.session.ack_many(messages)
                if time.monotonic() - partitions_checked_at > PARTITION_CHECK_INTERVAL_S:
                    partitions_checked_at = time.monotonic()
                    ensure_partitions(writer.conn)
        finally:
            self.session.stop()
            if writer is not None:
                writer.conn.close()
            if purge is not None:
                purge.join(timeout=5)
            usage.join(timeout=5)
            sequences.join(timeout=5)

    def _open_writer(self, stop: threading.Event, started_at: datetime) -> BatchWriter | None:
        delay = 0.5
        while not stop.is_set():
            try:
                conn = connect(self.database_url, application_name=f"ironsight-{self.name}")
                ensure_partitions(conn)
                self._equipment.load(conn)
                return BatchWriter(conn, self.name, started_at, topic_root=self.settings.topic_root,
                                   late_window_s=self.settings.late_window_s)
            except psycopg.OperationalError as exc:
                self.metrics.db_error()
                log.warning("ingest %s cannot reach the database (%s); retrying in %.1fs", self.name, exc, delay)
                stop.wait(delay)
                delay = min(delay * 2, DB_RETRY_MAX_S)
        return None

    def _store(self, writer: BatchWriter, messages: list[InboundMessage], stop: threading.Event,
               started_at: datetime) -> BatchWriter | None:
        """Commit the messages as one batch; if that fails for any reason but a lost database, one
        by one.

        A message whose data the database refuses (a value the schema cannot hold) becomes a dead
        letter ``refused_by_database``; one that fails in any other way, ``handler_error``. So one
        bad message neither blocks the others nor comes back forever.
        """
        decoded = self._decode_until_done(writer, messages, stop, started_at)
        if decoded is None:
            return None
        writer, batch = decoded
        try:
            return self._commit_until_done(writer, batch, stop, started_at)
        except Exception as exc:  # psycopg.OperationalError is handled inside: the database is away
            self.metrics.fallbacks.inc()
            log.warning("ingest %s: a batch of %d messages failed (%s: %s); writing them one by one", self.name,
                        len(messages), type(exc).__name__, str(exc)[:200])
        current: BatchWriter | None = writer
        for message in messages:
            if current is None:
                return None
            current = self._store_one(current, message, stop, started_at)
        return current

    def _store_one(self, writer: BatchWriter, message: InboundMessage, stop: threading.Event,
                   started_at: datetime) -> BatchWriter | None:
        decoded = self._decode_until_done(writer, [message], stop, started_at)
        if decoded is None:
            return None
        writer, single = decoded
        try:
            return self._commit_until_done(writer, single, stop, started_at)
        except psycopg.DatabaseError as exc:
            reason, detail = "refused_by_database", str(exc)
        except Exception as exc:
            self.failures.record(type(exc).__name__, "storing a message on %s: %s", message.topic[:120],
                                 str(exc)[:200], exc_info=True)
            reason, detail = "handler_error", f"{type(exc).__name__}: {exc}"
        equipment_id = topics.equipment_id_from_topic(self.settings.topic_root, message.topic)
        refused = Batch(messages=1, dead_letters=[DeadLetter(storable_text(message.topic), equipment_id, reason,
                                                             storable_text(detail[:500]), message.payload)])
        try:
            return self._commit_until_done(writer, refused, stop, started_at)
        except Exception as exc:
            # Not even its dead letter can be written: dropped, never retried forever.
            self.unstorable.record(reason, "%s on %s: its dead letter failed too (%s: %s)", detail[:200],
                                   message.topic[:120], type(exc).__name__, str(exc)[:200], exc_info=True)
            return writer

    def _decode_until_done(self, writer: BatchWriter, messages: list[InboundMessage], stop: threading.Event,
                           started_at: datetime) -> tuple[BatchWriter, Batch] | None:
        """Decode the messages (which may look up unknown equipment), reconnecting while the database
        is away; None only when asked to stop."""
        while True:
            try:
                return writer, self._decode(messages, writer.conn)
            except psycopg.OperationalError as exc:
                reopened = self._reopen(writer, exc, "decoding", stop, started_at)
                if reopened is None:
                    return None
                writer = reopened

    def _reopen(self, writer: BatchWriter, exc: psycopg.OperationalError, doing: str, stop: threading.Event,
                started_at: datetime) -> BatchWriter | None:
        """A new writer after the database was lost while ``doing``; None only when asked to stop."""
        self.metrics.db_error()
        log.warning("ingest %s lost the database while %s (%s); reconnecting", self.name, doing, exc)
        writer.conn.close()
        return self._open_writer(stop, started_at)

    def _commit_until_done(
        self, writer: BatchWriter, batch: Batch, stop: threading.Event, started_at: datetime
    ) -> BatchWriter | None:
        """Write the batch, reconnecting as long as it takes; None only when asked to stop.

        Errors in the data itself (psycopg.DatabaseError other than OperationalError) propagate.
        """
        while True:
            try:
                began = time.monotonic()
                result = writer.write(batch)
            except psycopg.OperationalError as exc:
                reopened = self._reopen(writer, exc, "writing", stop, started_at)
                if reopened is None:
                    return None
                writer = reopened
                continue
            log.debug("batch: %d messages, %d stored, %d duplicate, %d dead letters",
                      batch.messages, result.stored, result.duplicate, result.dead_letters)
            self.metrics.committed(batch.messages, result.stored, result.duplicate, time.monotonic() - began)
            self.metrics.late_readings.inc(result.late)
            for letter in (*batch.dead_letters, *result.refused_counters):
                self._count_dead(letter)
            return writer

    def _take_batch(self, stop: threading.Event) -> list[InboundMessage]:
        try:
            first = self._next_message(timeout=0.5)
        except queue.Empty:
            return []
        messages = [first]
        payload_bytes = len(first.payload)
        deadline = time.monotonic() + BATCH_MAX_WAIT_S
        while len(messages) < BATCH_MAX_MESSAGES and payload_bytes < BATCH_MAX_PAYLOAD_BYTES:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                message = self._next_message(timeout=remaining)
            except queue.Empty:
                break
            messages.append(message)
            payload_bytes += len(message.payload)
        return messages

    def _decode(self, messages: list[InboundMessage], conn: psycopg.Connection) -> Batch:
        """Decode every message into one batch. Whatever fails in one message costs that message
        (a dead letter), never the batch or the worker; only a lost database (OperationalError)
        propagates."""
        batch = Batch(messages=len(messages))
        now = datetime.now(UTC)
        for message in messages:
            try:
                equipment_id, readings, dead_letters, seq = self._decode_one(message, conn, now)
            except psycopg.OperationalError:
                raise
            except Exception as exc:  # a defect of ours must cost one message, never the worker
                self.failures.record(type(exc).__name__, "handling a message on %s: %s", message.topic[:120],
                                     str(exc)[:200], exc_info=True)
                equipment_id = topics.equipment_id_from_topic(self.settings.topic_root, message.topic)
                batch.dead_letters.append(DeadLetter(
                    storable_text(message.topic), equipment_id, "handler_error",
                    storable_text(f"{type(exc).__name__}: {exc}"[:500]), message.payload))
                continue
            batch.dead_letters.extend(dead_letters)
            batch.readings.extend(readings)
            if equipment_id is not None and seq is not None:
                batch.add_sequence(equipment_id, seq)
        return batch

    def _decode_one(self, message: InboundMessage, conn: psycopg.Connection, now: datetime
                    ) -> tuple[str | None, list[tuple[str, Reading]], list[DeadLetter], int | None]:
        """One message's equipment id, readings (with the id), dead letters, and sequence number (None
        when the message could not be read)."""
        parsed = topics.parse_telemetry_topic(self.settings.topic_root, message.topic)
        equipment_id, kind = parsed if parsed else (None, None)
        topic = storable_text(message.topic)
        if equipment_id is None:
            return None, [], [DeadLetter(topic, None, "bad_topic", "", message.payload)], None
        if equipment_id not in self._equipment and not self._equipment.recheck(conn, equipment_id):
            return None, [], [DeadLetter(topic, equipment_id, "unknown_equipment", "", message.payload)], None
        try:
            decode = decode_binary if kind == topics.TELEMETRY_BINARY else decode_message
            decoded = decode(message.payload, now=now, future_tolerance_s=self.settings.future_tolerance_s)
        except InvalidTelemetry as exc:
            return None, [], [DeadLetter(topic, equipment_id, exc.reason, storable_text(exc.detail),
                                         message.payload)], None
        except Exception as exc:  # a decoder defect: the message is kept as a dead letter
            log.exception("decoding a message from %s failed unexpectedly", equipment_id)
            return None, [], [DeadLetter(topic, equipment_id, "undecodable", storable_text(repr(exc)[:500]),
                                         message.payload)], None
        dead_letters = [
            dead_letter_for_reading(topic, equipment_id, rejected.reason,
                                    storable_text(f"reading {rejected.index}: {rejected.detail}"), rejected.raw)
            for rejected in decoded.rejected]
        return equipment_id, [(equipment_id, r) for r in decoded.readings], dead_letters, decoded.seq

    def _next_message(self, timeout: float) -> InboundMessage:
        """The next message of the inbox; queue.Empty after ``timeout``. Ingest puts no notices there."""
        item = self.session.inbox.get(timeout=timeout)
        if not isinstance(item, InboundMessage):
            raise TypeError(f"unexpected {item!r} in the ingest inbox")
        return item

    def _count_dead(self, letter: DeadLetter) -> None:
        self.dead_letters.record(letter.reason, "equipment=%s topic=%s detail=%s payload=%r", letter.equipment_id,
                                 letter.topic[:120], letter.detail[:200], letter.payload[:200])
