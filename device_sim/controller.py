"""One simulated controller with the whole device protocol: its own MQTT connection and credential,
a retained status with a last will, telemetry at its reporting interval, and remote commands.

Commands are executed once per id: a repeated command (redelivered, or sent again after a
reconnect) is answered with the first answer again and not executed a second time. A locked
machine's engine stops (RPM 0) and cannot start until it is unlocked. ``provision`` is the first
contact of a new controller: it asks with the shared provisioning credential for its own, which a
controller keeps in non-volatile memory (``CredentialStore``: a file readable by its owner only).
"""

from __future__ import annotations

import json
import logging
import os
import random
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

from core import mqtt, topics
from core.device_messages import (
    Ack,
    ProvisioningRequest,
    ProvisioningResponse,
    Status,
    decode_command,
    decode_provisioning_response,
    encode_ack,
    encode_provisioning_request,
    encode_status,
)
from core.errors import InvalidTelemetry
from core.inbound import InboundMessage
from core.telemetry import encode_message
from device_sim.machine import MachineSpec, SimulatedMachine

log = logging.getLogger(__name__)

# How many command ids a controller remembers to recognise a repeat (its answers, in order of arrival).
REMEMBERED_COMMANDS = 1024
# How many of its latest telemetry messages a controller keeps to send again on a ``resend`` command.
RESEND_BUFFER_MESSAGES = 100_000
DEFAULT_FIRMWARE = "sim-2.1.0"


class SimulatedController:
    def __init__(self, spec: MachineSpec, mqtt_url: str, *, topic_root: str, interval_s: float = 1.0,
                 username: str | None = None, password: str | None = None, firmware: str = DEFAULT_FIRMWARE,
                 seed: int = 1, client_id: str | None = None,
                 resend_buffer_messages: int = RESEND_BUFFER_MESSAGES) -> None:
        self.spec = spec
        address = mqtt.parse_mqtt_url(mqtt_url)
        if username is not None:
            address = address.with_credentials(username, password)
        self.address = address
        self.root = topic_root
        self.default_interval_s = interval_s
        self.firmware = firmware
        self.client_id = client_id or f"ctl-{spec.equipment_id}"
        self.machine = SimulatedMachine(spec, datetime.now(UTC), seed=seed)
        self.rng = random.Random(seed)
        self.executions: Counter[str] = Counter()  # command kind → times executed
        self.repeats = 0
        self.seq = 0
        # Its latest messages by sequence number, as published: a resend sends them again unchanged.
        self._sent: OrderedDict[int, bytes] = OrderedDict()
        self._sent_capacity = resend_buffer_messages
        self.resent = 0
        self._answers: OrderedDict[str, Ack] = OrderedDict()
        self._lock = threading.Lock()
        self._interval_override: tuple[float, datetime] | None = None
        self._holding = False
        self._stop = threading.Event()
        self._wake = threading.Event()  # the reporting interval changed (or stop): start a new period
        self._thread: threading.Thread | None = None
        self._last_advance = datetime.now(UTC)
        status_topic = topics.device_topic(self.root, spec.equipment_id, topics.STATUS)
        self._session = mqtt.Session(
            self.address, self.client_id, name=f"controller {spec.equipment_id}",
            subscriptions=[topics.device_topic(self.root, spec.equipment_id, topics.COMMAND)],
            on_message=self._on_command, on_ready=self._say_online,
            will=mqtt.Will(status_topic, encode_status(Status(False, reason="lost"))))
        # Connected, subscribed to its commands, and its online status published.
        self.connected = self._session.ready
        self.refused = self._session.refused  # the broker refused the credential

    # --- lifecycle ---

    def start(self) -> SimulatedController:
        self._stop.clear()
        self._session.start()
        self._thread = threading.Thread(target=self._report, name=f"sim-{self.spec.equipment_id}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """A clean goodbye: status offline (retained), then DISCONNECT (the last will is discarded)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._session.ready.is_set():
            info = self._session.publish(topics.device_topic(self.root, self.spec.equipment_id, topics.STATUS),
                                         encode_status(Status(False, reason="clean")), qos=1, retain=True)
            info.wait_for_publish(timeout=5)
        self._session.stop()

    def hold_reports(self) -> None:
        """Stop reporting but stay connected: commands are still answered (a resend too)."""
        with self._lock:
            self._holding = True

    def repair(self) -> None:
        """The machine was fixed (a simulated engineer says so): its fault is gone."""
        with self._lock:
            self.machine.repair()

    def kill(self) -> None:
        """An unclean end (power cut, lost cell): the connection drops without DISCONNECT, so the
        broker publishes the last will."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._session.kill()

    # --- MQTT callbacks (paho's thread) ---

    def _say_online(self) -> None:
        # Only once subscribed is the controller ready for commands: say so, and IronSight sends what waits.
        self._session.publish(topics.device_topic(self.root, self.spec.equipment_id, topics.STATUS),
                              encode_status(self.status()), qos=1, retain=True)

    def _on_command(self, message: InboundMessage) -> None:
        try:
            command = decode_command(message.payload)
        except InvalidTelemetry as exc:
            log.warning("controller %s ignores a malformed command: %s", self.spec.equipment_id, exc)
            return
        with self._lock:
            answered = self._answers.get(command.id)
            if answered is not None:
                self.repeats += 1
                self._send_ack(answered)
                return
            if datetime.now(UTC) >= command.expires_at:
                ack = Ack(command.id, "rejected", "expired before it arrived")
            else:
                self._send_ack(Ack(command.id, "received"))
                ack = self._execute(command.kind, command.params, command.id)
            self._answers[command.id] = ack
            while len(self._answers) > REMEMBERED_COMMANDS:
                self._answers.popitem(last=False)
        self._send_ack(ack)

    # --- behaviour ---

    def status(self) -> Status:
        return Status(True, firmware=self.firmware, signal_dbm=float(self.rng.randint(-105, -60)),
                      report_interval_s=self.interval_s(), locked=self.machine.locked)

    def interval_s(self) -> float:
        override = self._interval_override
        if override is not None and datetime.now(UTC) < override[1]:
            return override[0]
        return self.default_interval_s

    def _execute(self, kind: str, params: dict, command_id: str) -> Ack:
        self.executions[kind] += 1
        if kind == "snapshot":
            seq = self._publish_reading()
            return Ack(command_id, "executed", result={"seq": seq})
        if kind == "set_report_interval":
            until = datetime.now(UTC) + timedelta(seconds=params["duration_s"])
            self._interval_override = (params["interval_s"], until)
            self._wake.set()
            return Ack(command_id, "executed", result={"interval_s": params["interval_s"],
                                                       "until": until.isoformat().replace("+00:00", "Z")})
        if kind in ("lock", "unlock"):
            self.machine.locked = kind == "lock"
            return Ack(command_id, "executed", result={"locked": self.machine.locked})
        if kind == "resend":
            return Ack(command_id, "executed", result=self._resend(params["ranges"]))
        return Ack(command_id, "rejected", f"unknown kind {kind}")

    def _send_ack(self, ack: Ack) -> None:
        self._session.publish(topics.device_topic(self.root, self.spec.equipment_id, topics.ACK), encode_ack(ack),
                              qos=1)

    def _publish_reading(self) -> int:
        now = datetime.now(UTC)
        self.machine.advance(max(0.0, (now - self._last_advance).total_seconds()))
        self._last_advance = now
        self.seq += 1
        payload = encode_message(self.seq, [self.machine.reading(now)])
        self._sent[self.seq] = payload
        while len(self._sent) > self._sent_capacity:
            self._sent.popitem(last=False)
        self._transmit(self.seq, payload)
        return self.seq

    def _transmit(self, seq: int, payload: bytes) -> None:
        """Send one telemetry message (a first time, or again on a resend)."""
        self._session.publish(topics.telemetry_topic(self.root, self.spec.equipment_id), payload, qos=1)

    def _resend(self, ranges: list[list[int]]) -> dict:
        """Publish again, unchanged (same sequence numbers), the messages of the ranges still buffered;
        the answer says how many, and how many are no longer held."""
        resent = unavailable = 0
        for first, last in ranges:
            for seq in range(first, last + 1):
                payload = self._sent.get(seq)
                if payload is None:
                    unavailable += 1
                    continue
                self._transmit(seq, payload)
                resent += 1
        self.resent += resent
        return {"resent": resent, "unavailable": unavailable}

    def _report(self) -> None:
        while not self._stop.is_set():
            woken = self._wake.wait(self.interval_s())
            self._wake.clear()
            if woken or self._stop.is_set():
                continue
            if self.connected.is_set():
                with self._lock:
                    if not self._holding:
                        self._publish_reading()


def provision(mqtt_url: str, *, topic_root: str, serial: str, model: str, username: str, password: str,
              firmware: str | None = DEFAULT_FIRMWARE, timeout_s: float = 10.0,
              ask_again_s: float | None = None) -> ProvisioningResponse:
    """Ask for a credential with the shared provisioning one; the client id is the serial. With
    ``ask_again_s``, ask again each time that long passes without an answer (a request nobody was
    subscribed to yet is lost; a repeated one is answered ``already_provisioned`` after the first).

    Raises TimeoutError when no answer comes (e.g. the broker refused the provisioning credential).
    """
    address = mqtt.parse_mqtt_url(mqtt_url).with_credentials(username, password)
    answer: list[ProvisioningResponse] = []
    done = threading.Event()

    def on_message(message: InboundMessage) -> None:
        try:
            answer.append(decode_provisioning_response(message.payload))
        except InvalidTelemetry as exc:
            log.warning("malformed provisioning answer: %s", exc)
            return
        done.set()

    def ask() -> None:
        session.publish(topics.provisioning_topic(topic_root, serial, "request"),
                        encode_provisioning_request(ProvisioningRequest(serial, model, firmware)), qos=1)

    session = mqtt.Session(address, serial, name=f"provisioning {serial}",
                           subscriptions=[topics.provisioning_topic(topic_root, serial, "response")],
                           on_message=on_message, on_ready=ask)
    session.start()
    deadline = time.monotonic() + timeout_s
    try:
        while not done.wait(max(0.0, min(ask_again_s or timeout_s, deadline - time.monotonic()))):
            if time.monotonic() >= deadline:
                raise TimeoutError(f"no provisioning answer for {serial} within {timeout_s}s")
            if session.ready.is_set():
                ask()
        return answer[0]
    finally:
        session.stop()


def provision_many(mqtt_url: str, requests: Iterable[tuple[str, str]], *, topic_root: str, username: str,
                   password: str, firmware: str | None = DEFAULT_FIRMWARE, timeout_s: float = 10.0,
                   ask_again_s: float | None = None, parallel: int = 16, stop: threading.Event | None = None
                   ) -> dict[str, ProvisioningResponse | None]:
    """``provision`` for many (serial, model) at once, ``parallel`` at a time: serial → the answer,
    or None when none came (broker or IronSight unreachable; ask again later)."""

    def ask(serial: str, model: str) -> ProvisioningResponse | None:
        if stop is not None and stop.is_set():
            return None
        try:
            return provision(mqtt_url, topic_root=topic_root, serial=serial, model=model, username=username,
                             password=password, firmware=firmware, timeout_s=timeout_s, ask_again_s=ask_again_s)
        except TimeoutError:
            return None

    pending = list(requests)
    with ThreadPoolExecutor(max_workers=max(1, parallel), thread_name_prefix="provision") as pool:
        answers = list(pool.map(lambda request: ask(*request), pending))
    return {serial: answer for (serial, _), answer in zip(pending, answers, strict=True)}


class CredentialStore:
    """Simulated controllers' non-volatile memory for their credentials: a directory with a file per
    controller (``<equipment id>.json``: username, password), written atomically and readable by its
    owner only, so that several simulator processes share it without losing each other's writes."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    def _path(self, equipment_id: str) -> Path:
        return self.directory / f"{equipment_id}.json"

    def get(self, equipment_id: str) -> tuple[str, str] | None:
        try:
            entry = json.loads(self._path(equipment_id).read_text())
            return entry["username"], entry["password"]
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError):
            log.warning("unreadable credential of %s in %s: forgotten", equipment_id, self.directory)
            return None

    def put(self, equipment_id: str, username: str, password: str) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self._path(equipment_id)
        temporary = path.with_name(path.name + ".tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as file:
            json.dump({"username": username, "password": password}, file)
        os.replace(temporary, path)

    def forget(self, equipment_id: str) -> None:
        self._path(equipment_id).unlink(missing_ok=True)
