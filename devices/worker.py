"""The devices worker: presence, downlink commands, provisioning, and the broker's credentials.

One MQTT connection (the ``backend`` account) reads the controllers' retained status topics, their
command acks and provisioning requests, and publishes commands and provisioning answers. paho's
network thread only enqueues; this worker's thread does the database work and then acknowledges
the message to the broker (manual ack), so nothing is lost when the database is away.

Commands are published (QoS 1, with an MQTT 5 message expiry equal to their remaining validity)
when their controller is connected, and again when it reconnects before answering; a new command
wakes the worker at once through LISTEN/NOTIFY, and a sweep every ``command_tick_s`` expires
overdue ones. When ``broker_auth_dir`` is set, the broker's password and ACL files follow the
registry (devices.broker_auth).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial

import psycopg

from core import metrics, mqtt, topics
from core.db import connect
from core.device_messages import (
    ProvisioningResponse,
    decode_ack,
    decode_provisioning_request,
    decode_status,
    encode_command,
    encode_provisioning_response,
)
from core.errors import InvalidTelemetry
from core.inbound import DEAD_LETTER_PAYLOAD_BYTES, BadInputLog, InboundMessage, storable_text
from core.settings import Settings
from devices import commands, registry
from devices.broker_auth import BrokerAuthSync, ServicePasswords

log = logging.getLogger(__name__)

# The session's inbox (core.mqtt.Session: QoS 1 bounded by Receive Maximum, QoS 0 floods dropped).
# The worker's own notices there (publish results, wake-ups) are bounded by what it publishes itself.
INBOX_MAX_MESSAGES = 10_000
SESSION_EXPIRY_S = 24 * 3600
DB_RETRY_MAX_S = 5.0
# How often the worker looks for machines with messages missing (ingest.sequences) to ask for a resend.
RESEND_CHECK_EVERY_S = 2.0


@dataclass(frozen=True, slots=True)
class _Published(mqtt.Notice):
    """The broker answered the PUBLISH of a command."""

    mid: int
    failed: bool


@dataclass(frozen=True, slots=True)
class _Wake(mqtt.Notice):
    """A NOTIFY on ``channel``, or the session's (re)connect on the commands channel."""

    channel: str


class _Stopped(Exception):
    """Asked to stop while waiting for the database."""


class DevicesWorker:
    def __init__(self, settings: Settings, database_url: str, mqtt_url: str, name: str = "devices") -> None:
        self.settings = settings
        self.database_url = database_url
        self.address = mqtt.parse_mqtt_url(mqtt_url)
        self.name = name
        self.root = settings.topic_root
        self.metrics = metrics.DevicesMetrics(name)
        self.session = mqtt.Session(
            self.address, f"{self.root}-{name}", name=f"devices worker {name}",
            subscriptions=[topics.device_subscription(self.root, topics.STATUS),
                           topics.device_subscription(self.root, topics.ACK),
                           topics.provisioning_subscription(self.root)],
            on_ready=lambda: self.session.put(_Wake(commands.COMMANDS_CHANNEL)),
            on_published=lambda mid, failed: self.session.put(_Published(mid, failed)),
            manual_ack=True, clean_start=False, session_expiry_s=SESSION_EXPIRY_S, inbox_size=INBOX_MAX_MESSAGES,
            metrics_label=name)
        self.dead_letters = BadInputLog(log, f"devices worker {name}: dead letter", on_record=self.metrics.dead_letters)
        # Unforeseen failures (defects) by exception type, logged with their traceback; the messages
        # are dead-lettered. And messages whose dead letter could not be written either: dropped.
        self.failures = BadInputLog(log, f"devices worker {name}: handling failed", on_record=self.metrics.failures)
        self.unstorable = BadInputLog(log, f"devices worker {name}: message dropped",
                                      on_record=self.metrics.unstorable)
        # Messages handled and acknowledged, whatever became of them.
        self.handled = 0
        self.sent_commands = 0
        self.auth_sync = BrokerAuthSync(
            settings.broker_auth_dir, self.root,
            ServicePasswords(settings.mqtt_ingest_password, settings.mqtt_backend_password,
                             settings.mqtt_provisioning_password),
            settings.broker_pid_file) if settings.broker_auth_dir else None
        self._publish_lock = threading.Lock()
        # mid of a command's PUBLISH → command id, until the broker's PUBACK.
        self._in_flight: dict[int, str] = {}
        self._refused: set[str] = set()
        # A controller said it is online: what waits for it goes out now, not at the next tick.
        self._came_online = False

    @property
    def connected(self) -> threading.Event:
        return self.session.ready

    # --- the worker's thread ---

    def run(self, stop: threading.Event) -> None:
        conn = self._connect_db(stop)
        if conn is None:
            return
        listener = threading.Thread(target=self._listen, args=(stop,), name=f"{self.name}-listen", daemon=True)
        listener.start()
        self.session.start()
        next_tick = next_resend_check = time.monotonic()
        next_auth_sync = time.monotonic() + self.settings.broker_auth_sync_every_s
        try:
            if self.auth_sync is not None:
                conn = self._with_db(stop, conn, self.auth_sync.sync)
            while not stop.is_set():
                try:
                    item: mqtt.InboxItem | None = self.session.inbox.get(
                        timeout=max(0.0, next_tick - time.monotonic()))
                except queue.Empty:
                    item = None
                dispatch = False
                if isinstance(item, InboundMessage):
                    conn = self._with_db(stop, conn, partial(self._handle, message=item))
                    dispatch, self._came_online = self._came_online, False
                elif isinstance(item, _Published):
                    conn = self._with_db(stop, conn, partial(self._published, published=item))
                elif isinstance(item, _Wake):
                    if item.channel == registry.REGISTRY_CHANNEL and self.auth_sync is not None:
                        conn = self._with_db(stop, conn, self.auth_sync.sync)
                    dispatch = item.channel == commands.COMMANDS_CHANNEL
                now = time.monotonic()
                if now >= next_tick:
                    next_tick = now + self.settings.command_tick_s
                    conn = self._with_db(stop, conn, self._expire)
                    dispatch = True
                if now >= next_resend_check:
                    next_resend_check = now + RESEND_CHECK_EVERY_S
                    conn = self._with_db(stop, conn, self._ask_resends)
                if self.auth_sync is not None and now >= next_auth_sync:
                    next_auth_sync = now + self.settings.broker_auth_sync_every_s
                    conn = self._with_db(stop, conn, self.auth_sync.sync)
                if dispatch and self.connected.is_set():
                    conn = self._with_db(stop, conn, self._dispatch)
        except _Stopped:
            pass
        finally:
            self.session.stop()
            conn.close()
            listener.join(timeout=5)

    def _connect_db(self, stop: threading.Event) -> psycopg.Connection | None:
        delay = 0.5
        while not stop.is_set():
            try:
                return connect(self.database_url, application_name=f"ironsight-{self.name}")
            except psycopg.OperationalError as exc:
                self.metrics.db_error()
                log.warning("devices worker cannot reach the database (%s); retrying in %.1fs", exc, delay)
                stop.wait(delay)
                delay = min(delay * 2, DB_RETRY_MAX_S)
        return None

    def _with_db(self, stop: threading.Event, conn: psycopg.Connection,
                 action: Callable[[psycopg.Connection], object]) -> psycopg.Connection:
        """Run ``action(conn)``, reconnecting and repeating it while the database is away; the
        connection it ran on is returned. Raises ``_Stopped`` when asked to stop meanwhile."""
        while True:
            try:
                action(conn)
                return conn
            except psycopg.OperationalError as exc:
                self.metrics.db_error()
                log.warning("devices worker lost the database (%s); reconnecting", exc)
                conn.close()
                new_conn = self._connect_db(stop)
                if new_conn is None:
                    raise _Stopped from exc
                conn = new_conn

    def _listen(self, stop: threading.Event) -> None:
        """Turn NOTIFYs into wake-ups of the worker's loop."""
        while not stop.is_set():
            try:
                with connect(self.database_url, autocommit=True, application_name=f"ironsight-{self.name}-listen"
                             ) as conn:
                    conn.execute(f"LISTEN {commands.COMMANDS_CHANNEL}")
                    conn.execute(f"LISTEN {registry.REGISTRY_CHANNEL}")
                    while not stop.is_set():
                        for notify in conn.notifies(timeout=0.5):
                            self.session.put(_Wake(notify.channel))
            except psycopg.OperationalError as exc:
                log.warning("devices worker lost its LISTEN connection (%s)", exc)
                stop.wait(1.0)

    # --- handling ---

    def _handle(self, conn: psycopg.Connection, message: InboundMessage) -> None:
        """Handle one message, then acknowledge it. Whatever goes wrong with it (the database
        refusing its data, a defect of ours) makes it a dead letter: a message that fails is never
        received again and again (it would be: it is acknowledged only after handling). Only a lost
        database (OperationalError) propagates, and ``_with_db`` handles the message again once
        reconnected."""
        try:
            self._route(conn, message)
        except psycopg.OperationalError:
            raise
        except Exception as exc:
            self._failed(conn, message, exc)
        self.session.ack(message)
        self.handled += 1
        self.metrics.messages.inc()

    def _route(self, conn: psycopg.Connection, message: InboundMessage) -> None:
        topic = message.topic
        if (equipment_id := topics.parse_device_topic(self.root, topic, topics.STATUS)) is not None:
            self._status(conn, equipment_id, message)
        elif (equipment_id := topics.parse_device_topic(self.root, topic, topics.ACK)) is not None:
            self._ack(conn, equipment_id, message)
        elif (client_id := topics.parse_provisioning_topic(self.root, topic)) is not None:
            self._provision(conn, client_id, message)
        else:
            self._dead(conn, message, None, "bad_topic", "")

    def _failed(self, conn: psycopg.Connection, message: InboundMessage, exc: Exception) -> None:
        if isinstance(exc, psycopg.DatabaseError):  # counted and logged with its dead letter
            reason, detail = "refused_by_database", str(exc)
        else:
            self.failures.record(type(exc).__name__, "on %s: %s", message.topic[:120], str(exc)[:200], exc_info=True)
            reason, detail = "handler_error", f"{type(exc).__name__}: {exc}"
        equipment_id = (topics.parse_device_topic(self.root, message.topic, topics.STATUS)
                        or topics.parse_device_topic(self.root, message.topic, topics.ACK))
        try:
            conn.rollback()
            self._dead(conn, message, equipment_id, reason, detail)
        except psycopg.OperationalError:
            raise
        except Exception as dead_exc:
            self.unstorable.record(reason, "%s on %s: its dead letter failed too (%s: %s)", detail[:200],
                                   message.topic[:120], type(dead_exc).__name__, str(dead_exc)[:200], exc_info=True)

    def _status(self, conn: psycopg.Connection, equipment_id: str, message: InboundMessage) -> None:
        if not message.payload:
            return  # an operator clearing the retained status: nothing to record
        try:
            status = decode_status(message.payload)
        except InvalidTelemetry as exc:
            self._dead(conn, message, equipment_id, f"status_{exc.reason}", exc.detail)
            return
        if registry.record_status(conn, equipment_id, status) is None:
            self._dead(conn, message, equipment_id, "unknown_equipment", "")
            return
        self._came_online = self._came_online or status.online
        log.info("%s is %s%s", equipment_id, "connected" if status.online else "disconnected",
                 f" ({status.reason})" if status.reason else "")

    def _ack(self, conn: psycopg.Connection, equipment_id: str, message: InboundMessage) -> None:
        try:
            ack = decode_ack(message.payload)
        except InvalidTelemetry as exc:
            self._dead(conn, message, equipment_id, f"ack_{exc.reason}", exc.detail)
            return
        outcome = commands.apply_answer(conn, equipment_id, ack.command_id, ack.status, ack.detail, ack.result)
        if outcome.applied:
            self.metrics.command(ack.status)
            log.info("command %s (%s) on %s: %s", ack.command_id, outcome.kind, equipment_id, ack.status)
        elif outcome.why == "stale_ack":
            # A repeated answer (the controller answers a repeated command again): expected, not bad input.
            log.debug("ignoring repeated %s ack of %s from %s", ack.status, ack.command_id, equipment_id)
        else:
            self._dead(conn, message, equipment_id, outcome.why or "bad_ack", f"command {ack.command_id[:64]}")

    def _provision(self, conn: psycopg.Connection, client_id: str, message: InboundMessage) -> None:
        try:
            request = decode_provisioning_request(message.payload)
        except InvalidTelemetry as exc:
            self._dead(conn, message, None, f"provisioning_{exc.reason}", exc.detail)
            self._answer(client_id, ProvisioningResponse(False, reason="bad_request"))
            return
        refusal = None
        device = registry.find_by_serial(conn, request.serial)
        if request.serial == client_id and device is None and self.settings.provisioning_open:
            if registry.self_register(conn, request.serial, request.model, request.firmware) is not None:
                log.info("controller %s (%s) registered itself", request.serial, request.model)
                device = registry.find_by_serial(conn, request.serial)
        if request.serial != client_id:
            refusal = "client_id_must_be_serial"
        elif device is None:
            refusal = "unknown_serial"
        elif device["state"] == "revoked":
            refusal = "revoked"
        elif device["state"] != "pending":
            refusal = "already_provisioned"
        elif device["model"] != request.model:
            refusal = "model_mismatch"
        if device is None or refusal is not None:
            log.warning("provisioning refused for serial %r (client %s): %s", request.serial, client_id, refusal)
            self._answer(client_id, ProvisioningResponse(False, reason=refusal or "unknown_serial"))
            return
        equipment_id = device["equipment_id"]
        try:
            password = registry.issue_credential(conn, equipment_id, only_if_pending=True)
        except registry.RegistryError:
            self._answer(client_id, ProvisioningResponse(False, reason="already_provisioned"))
            return
        if request.firmware:
            registry.update_device(conn, equipment_id, {"firmware": request.firmware})
        if self.auth_sync is not None:
            self.auth_sync.sync(conn)  # the broker must know the credential before the controller uses it
        log.info("provisioned controller %s on %s", request.serial, equipment_id)
        self._answer(client_id, ProvisioningResponse(True, equipment_id, equipment_id, password))

    def _answer(self, client_id: str, response: ProvisioningResponse) -> None:
        # Never retained: the answer carries a password and must not stay on the broker.
        self.session.publish(topics.provisioning_topic(self.root, client_id, "response"),
                             encode_provisioning_response(response), qos=1)

    def _dispatch(self, conn: psycopg.Connection) -> None:
        with self._publish_lock:
            pending = set(self._in_flight.values()) | self._refused
        now = datetime.now(UTC)
        for equipment_id, command in commands.due_for_sending(conn):
            if command.id in pending:
                continue
            with self._publish_lock:
                # The broker drops a command that outlives its validity instead of delivering it late.
                info = self.session.publish(topics.device_topic(self.root, equipment_id, topics.COMMAND),
                                            encode_command(command), qos=1,
                                            expiry_s=(command.expires_at - now).total_seconds())
                if info.rc == mqtt.PUBLISH_QUEUED:
                    self._in_flight[info.mid] = command.id
            if info.rc != mqtt.PUBLISH_QUEUED:
                log.warning("cannot publish command %s now: %s", command.id, mqtt.error_text(info.rc))
                return

    def _published(self, conn: psycopg.Connection, published: _Published) -> None:
        with self._publish_lock:
            command_id = self._in_flight.pop(published.mid, None)
        if command_id is None:
            return
        if published.failed:
            # Sending it again would be refused again: it waits for its expiry instead.
            self._refused.add(command_id)
            log.error("broker refused command %s (is the backend account allowed to write commands?)", command_id)
            return
        commands.mark_sent(conn, command_id)
        self.sent_commands += 1
        self.metrics.command("sent")

    def _ask_resends(self, conn: psycopg.Connection) -> None:
        queued = commands.queue_resends(
            conn, after_s=self.settings.resend_after_s, retry_s=self.settings.resend_retry_s,
            attempts=self.settings.resend_attempts, timeout_s=self.settings.command_timeout_s)
        if queued:
            log.info("asked %d controllers to resend missing messages", queued)

    def _expire(self, conn: psycopg.Connection) -> None:
        for command_id in commands.expire_overdue(conn):
            self._refused.discard(command_id)
            self.metrics.command("expired")
            log.info("command %s expired", command_id)

    def _dead(self, conn: psycopg.Connection, message: InboundMessage, equipment_id: str | None, reason: str,
              detail: str) -> None:
        with conn.transaction():
            conn.execute(
                """INSERT INTO dead_letters (topic, equipment_id, reason, detail, payload, payload_bytes)
                   VALUES (%s, %s, %s, %s, %s, %s)""",
                (storable_text(message.topic), equipment_id, reason, storable_text(detail[:500]),
                 message.payload[:DEAD_LETTER_PAYLOAD_BYTES], len(message.payload)))
        self.dead_letters.record(reason, "equipment=%s topic=%s detail=%s payload=%r", equipment_id,
                                 message.topic[:120], detail[:200], message.payload[:200])
