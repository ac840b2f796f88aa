"""One simulated controller with the whole device protocol: its own MQTT connection and credential,
a retained status with a last will, telemetry at its reporting interval, and remote commands.

Commands are executed once per id: a repeated command (redelivered, or sent again after a
reconnect) is answered with the first answer again and not executed a second time. A locked
machine's engine stops (RPM 0) and cannot start until it is unlocked. ``provision`` is the first
contact of a new controller: it asks with the shared provisioning credential for its own.
"""

from __future__ import annotations

import logging
import random
import threading
from collections import Counter, OrderedDict
from datetime import UTC, datetime, timedelta

import paho.mqtt.client as paho

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
from core.telemetry import encode_message
from device_sim.machine import MachineSpec, SimulatedMachine

log = logging.getLogger(__name__)

# How many command ids a controller remembers to recognise a repeat (its answers, in order of arrival).
REMEMBERED_COMMANDS = 1024
DEFAULT_FIRMWARE = "sim-2.1.0"


class SimulatedController:
    def __init__(self, spec: MachineSpec, mqtt_url: str, *, topic_root: str, interval_s: float = 1.0,
                 username: str | None = None, password: str | None = None, firmware: str = DEFAULT_FIRMWARE,
                 seed: int = 1, client_id: str | None = None) -> None:
        self.spec = spec
        address = mqtt.parse_mqtt_url(mqtt_url)
        if username is not None:
            address = mqtt.BrokerAddress(address.host, address.port, username, password)
        self.address = address
        self.root = topic_root
        self.default_interval_s = interval_s
        self.firmware = firmware
        self.client_id = client_id or f"ctl-{spec.equipment_id}"
        self.machine = SimulatedMachine(spec, datetime.now(UTC), seed=seed)
        self.rng = random.Random(seed)
        self.connected = threading.Event()
        self.refused = threading.Event()  # the broker refused the credential
        self.connect_failures = 0
        self.executions: Counter[str] = Counter()  # command kind → times executed
        self.repeats = 0
        self.seq = 0
        self._answers: OrderedDict[str, Ack] = OrderedDict()
        self._lock = threading.Lock()
        self._interval_override: tuple[float, datetime] | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()  # the reporting interval changed (or stop): start a new period
        self._thread: threading.Thread | None = None
        self._client: paho.Client | None = None
        self._last_advance = datetime.now(UTC)

    # --- lifecycle ---

    def start(self) -> SimulatedController:
        client = mqtt.new_client(self.client_id)
        status_topic = topics.device_topic(self.root, self.spec.equipment_id, topics.STATUS)
        client.will_set(status_topic, encode_status(Status(False, reason="lost")), qos=1, retain=True)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        self._client = client
        self._stop.clear()
        mqtt.start(client, self.address, clean_start=True)
        self._thread = threading.Thread(target=self._report, name=f"sim-{self.spec.equipment_id}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """A clean goodbye: status offline (retained), then DISCONNECT (the last will is discarded)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        client = self._client
        if client is not None and self.connected.is_set():
            info = client.publish(topics.device_topic(self.root, self.spec.equipment_id, topics.STATUS),
                                  encode_status(Status(False, reason="clean")), qos=1, retain=True)
            info.wait_for_publish(timeout=5)
        if client is not None:
            mqtt.stop(client)
        self.connected.clear()

    def kill(self) -> None:
        """An unclean end (power cut, lost cell): the connection drops without DISCONNECT, so the
        broker publishes the last will."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        client = self._client
        if client is not None:
            client.loop_stop()
            sock = client.socket()
            if sock is not None:
                sock.close()
        self.connected.clear()

    # --- MQTT callbacks (paho's thread) ---

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self.connect_failures += 1
            self.refused.set()
            log.warning("broker refused controller %s: %s", self.spec.equipment_id, reason_code)
            return
        self.refused.clear()
        client.subscribe(topics.device_topic(self.root, self.spec.equipment_id, topics.COMMAND), qos=1)

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        # Only now is the controller ready for commands: say so, and IronSight sends what waits.
        client.publish(topics.device_topic(self.root, self.spec.equipment_id, topics.STATUS),
                       encode_status(self.status()), qos=1, retain=True)
        self.connected.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self.connected.clear()

    def _on_message(self, client, userdata, message: paho.MQTTMessage) -> None:
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
        return Ack(command_id, "rejected", f"unknown kind {kind}")

    def _send_ack(self, ack: Ack) -> None:
        if self._client is not None:
            self._client.publish(topics.device_topic(self.root, self.spec.equipment_id, topics.ACK), encode_ack(ack),
                                 qos=1)

    def _publish_reading(self) -> int:
        now = datetime.now(UTC)
        self.machine.advance(max(0.0, (now - self._last_advance).total_seconds()))
        self._last_advance = now
        self.seq += 1
        if self._client is not None:
            self._client.publish(topics.telemetry_topic(self.root, self.spec.equipment_id),
                                 encode_message(self.seq, [self.machine.reading(now)]), qos=1)
        return self.seq

    def _report(self) -> None:
        while not self._stop.is_set():
            woken = self._wake.wait(self.interval_s())
            self._wake.clear()
            if woken or self._stop.is_set():
                continue
            if self.connected.is_set():
                with self._lock:
                    self._publish_reading()


def provision(mqtt_url: str, *, topic_root: str, serial: str, model: str, username: str, password: str,
              firmware: str | None = DEFAULT_FIRMWARE, timeout_s: float = 10.0) -> ProvisioningResponse:
    """Ask for a credential with the shared provisioning one; the client id is the serial.

    Raises TimeoutError when no answer comes (e.g. the broker refused the provisioning credential).
    """
    address = mqtt.parse_mqtt_url(mqtt_url)
    address = mqtt.BrokerAddress(address.host, address.port, username, password)
    answer: list[ProvisioningResponse] = []
    done = threading.Event()
    response_topic = topics.provisioning_topic(topic_root, serial, "response")

    def on_connect(client, userdata, flags, reason_code, properties) -> None:
        if not reason_code.is_failure:
            client.subscribe(response_topic, qos=1)

    def on_subscribe(client, userdata, mid, reason_codes, properties) -> None:
        client.publish(topics.provisioning_topic(topic_root, serial, "request"),
                       encode_provisioning_request(ProvisioningRequest(serial, model, firmware)), qos=1)

    def on_message(client, userdata, message) -> None:
        try:
            answer.append(decode_provisioning_response(message.payload))
        except InvalidTelemetry as exc:
            log.warning("malformed provisioning answer: %s", exc)
            return
        done.set()

    client = mqtt.new_client(serial)
    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    mqtt.start(client, address, clean_start=True)
    try:
        if not done.wait(timeout_s):
            raise TimeoutError(f"no provisioning answer for {serial} within {timeout_s}s")
        return answer[0]
    finally:
        mqtt.stop(client)
