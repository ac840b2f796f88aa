"""Hostile input against every decoder and every worker that takes device traffic.

- Each decoder refuses deep nesting before parsing (the issue: a 4 KB status of nested brackets
  raised RecursionError in core.device_messages, and the devices worker died on it again after
  every restart), and ``"v": true``.
- A seeded fuzz run publishes a few thousand hostile payloads to every topic the system subscribes
  to (telemetry JSON and binary, status, ack, provisioning request, van position) through the real
  broker into the real ingest, devices and tracking workers: none dies, and every message is
  accounted for — stored, dead-lettered or counted as rejected — exactly as the decoders predict.
- A worker whose handling of one message fails in any way dead-letters (or counts) that message and
  goes on.
- The broker's message size limit is MAX_PAYLOAD_BYTES in the embedded and the production config.
- Dead letters are purged after their retention and can be read by staff, not by customers.
"""

from __future__ import annotations

import base64
import json
import math
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from core import mqtt, topics
from core.device_messages import (
    MAX_DEVICE_MESSAGE_BYTES,
    Status,
    decode_ack,
    decode_command,
    decode_provisioning_request,
    decode_provisioning_response,
    decode_status,
    encode_status,
)
from core.errors import InvalidTelemetry
from core.inbound import MAX_JSON_DEPTH, InboundMessage, json_depth
from core.positions import MAX_POSITION_BYTES, decode_position, position_topic, vehicle_id_from_topic
from core.register import EquipmentRecord, register_equipment
from core.telemetry import CHANNEL_BOUNDS, CHANNELS, MAX_PAYLOAD_BYTES, FaultCode, Reading, decode_message
from core.telemetry_binary import decode_binary, encode_binary
from devices import registry
from devices.worker import DevicesWorker
from ingest.dead_letters import DeadLetterRetention, purge_dead_letters
from ingest.worker import IngestWorker
from tests.helpers import ApiServer, wait_for
from tickets.resources import Engineer, Station, Vehicle, upsert_engineer, upsert_station, upsert_vehicle
from tickets.tracking import TrackingWorker

DEPLOY_MOSQUITTO = Path(__file__).resolve().parents[1] / "deploy" / "mosquitto" / "mosquitto.conf"
NESTED_4K = b"[" * 2048 + b"]" * 2048  # the issue's message: 4 KB of nested brackets


def _now() -> datetime:
    return datetime.now(UTC)


# --- every decoder refuses deep nesting before parsing, and "v": true ---

DECODERS: dict[str, Callable[[bytes], object]] = {
    "telemetry": lambda p: decode_message(p, now=_now(), future_tolerance_s=300),
    "status": decode_status,
    "ack": decode_ack,
    "command": decode_command,
    "provisioning_request": decode_provisioning_request,
    "provisioning_response": decode_provisioning_response,
    "position": lambda p: decode_position(p, now=_now(), future_tolerance_s=300),
}


@pytest.mark.parametrize("name", sorted(DECODERS))
@pytest.mark.parametrize("payload", [
    NESTED_4K,
    b"[" * 4000,
    b'{"v":1,"x":' * 1000,
    b'{"v":1,"result":' + b"[" * 1000 + b"]" * 1000 + b"}",
], ids=["balanced", "unclosed", "objects", "in-a-field"])
def test_every_json_decoder_refuses_nested_brackets_before_parsing(name, payload):
    decode = DECODERS[name]
    limit = {"telemetry": MAX_PAYLOAD_BYTES, "position": MAX_POSITION_BYTES}.get(name, MAX_DEVICE_MESSAGE_BYTES)
    with pytest.raises(InvalidTelemetry) as refused:  # not RecursionError
        decode(payload[:limit])
    assert refused.value.reason == "too_deep", refused.value


def test_a_deep_reading_inside_a_valid_telemetry_message_is_refused_as_a_whole():
    """Parsed (orjson goes 1024 deep), this reading used to be dead-lettered alone, and the
    json.dumps of it raised RecursionError in the ingest worker: it died on every redelivery."""
    payload = b'{"v":1,"seq":1,"readings":[' + b"[" * 1000 + b"]" * 1000 + b"]}"
    with pytest.raises(InvalidTelemetry) as refused:
        decode_message(payload, now=_now(), future_tolerance_s=300)
    assert refused.value.reason == "too_deep"


def test_the_binary_decoder_refuses_brackets_and_oversized_payloads_without_parsing():
    for payload, reason in ((NESTED_4K, "unsupported_version"), (b"\x01" + b"\xff" * 20, "bad_binary"),
                            (b"\x01" * (MAX_PAYLOAD_BYTES + 1), "payload_too_large")):
        with pytest.raises(InvalidTelemetry) as refused:
            decode_binary(payload, now=_now(), future_tolerance_s=300)
        assert refused.value.reason == reason


def test_nesting_up_to_the_limit_is_accepted_and_brackets_in_strings_do_not_count():
    def ack(depth: int) -> bytes:  # the envelope and the result are two levels
        return (b'{"v":1,"id":"a","status":"executed","result":{"x":' + b"[" * (depth - 2) + b"]" * (depth - 2)
                + b"}}")

    assert decode_ack(ack(MAX_JSON_DEPTH)).result is not None
    with pytest.raises(InvalidTelemetry, match="too_deep"):
        decode_ack(ack(MAX_JSON_DEPTH + 1))
    status = Status(True, firmware='[[[[{{{{\\"[[[' * 14)
    assert decode_status(encode_status(status)) == status
    assert json_depth(b'["\\\\", [["\\"[["]], "}}}[[["]') == 3


@pytest.mark.parametrize("decode, payload, reason", [
    (DECODERS["telemetry"], b'{"v":true,"seq":1,"readings":[{"ts":"2026-01-01T00:00:00Z","oil_temp_c":1}]}',
     "unsupported_version"),
    (decode_status, b'{"v":true,"online":true}', "unsupported_version"),
    (decode_ack, b'{"v":true,"id":"a","status":"received"}', "unsupported_version"),
    (decode_provisioning_request, b'{"v":true,"serial":"S-1","model":"EX210"}', "unsupported_version"),
    (DECODERS["position"], b'{"v":true,"ts":"2026-01-01T00:00:00Z","lat":1,"lon":1}', "bad_version"),
])
def test_true_is_not_version_1(decode, payload, reason):
    with pytest.raises(InvalidTelemetry) as refused:
        decode(payload)
    assert refused.value.reason == reason


# Property tests over the decoders alone: whatever the bytes, InvalidTelemetry or a result.

_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3),
    max_leaves=40)


def _depth(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max(map(_depth, value), default=0)
    if isinstance(value, dict):
        return 1 + max(map(_depth, value.values()), default=0)
    return 0


@given(value=_json_values, ascii_only=st.booleans())
@hypothesis_settings(max_examples=300, deadline=None, database=None)
def test_json_depth_is_the_nesting_of_any_document(value, ascii_only):
    assert json_depth(json.dumps(value, ensure_ascii=ascii_only).encode()) == _depth(value)


@given(payload=st.binary(max_size=300) | _json_values.map(lambda v: json.dumps({"v": 1, "x": v}).encode()))
@hypothesis_settings(max_examples=300, deadline=None, database=None, suppress_health_check=list(HealthCheck))
def test_decoders_raise_nothing_but_invalid_telemetry(payload):
    for decode in (*DECODERS.values(), lambda p: decode_binary(p, now=_now(), future_tolerance_s=300)):
        try:
            decode(payload)
        except InvalidTelemetry:
            pass


# --- the broker's message size limit is the decoders' ---


def _config(text: str) -> dict[str, str]:
    return {line.split(" ", 1)[0]: line.split(" ", 1)[1].strip() for line in text.splitlines()
            if line.strip() and not line.startswith("#")}


def test_the_broker_configs_limit_messages_to_what_the_decoders_accept(tmp_path):
    from ironsight.embedded_broker import _write_mosquitto_config, _write_rumqttd_config

    assert int(_config(DEPLOY_MOSQUITTO.read_text())["message_size_limit"]) == MAX_PAYLOAD_BYTES
    embedded = _write_mosquitto_config(tmp_path, 1883, None).read_text()
    assert int(_config(embedded)["message_size_limit"]) == MAX_PAYLOAD_BYTES
    assert MAX_DEVICE_MESSAGE_BYTES < MAX_PAYLOAD_BYTES and MAX_POSITION_BYTES < MAX_PAYLOAD_BYTES
    rumqttd = _write_rumqttd_config(tmp_path, 1883).read_text()
    packet_limit = int(next(line.split("=")[1] for line in rumqttd.splitlines() if line.startswith("max_payload")))
    assert MAX_PAYLOAD_BYTES < packet_limit <= MAX_PAYLOAD_BYTES + 8192


def _broker_drops_oversized(mqtt_url: str, root: str) -> bool:
    """Whether the broker drops a payload of MAX_PAYLOAD_BYTES + 1 and passes one of MAX_PAYLOAD_BYTES
    (asserted). QoS 0, so that a dropped message costs nothing else; a marker published after them
    on the same topic says when both have had their chance to arrive."""
    got: list[int] = []
    done = threading.Event()
    topic = f"{root}/size-probe"

    def on_message(message: InboundMessage) -> None:
        if message.payload == b"end":
            done.set()
        else:
            got.append(len(message.payload))

    address = mqtt.parse_mqtt_url(mqtt_url)
    subscriber = mqtt.Session(address, f"{root}-probe-sub", name="probe", subscriptions=[topic],
                              on_message=on_message).start()
    publisher = mqtt.Session(address, f"{root}-probe-pub", name="probe publisher").start()
    try:
        assert subscriber.ready.wait(10) and publisher.ready.wait(10)
        for payload in (b"x" * MAX_PAYLOAD_BYTES, b"x" * (MAX_PAYLOAD_BYTES + 1), b"end"):
            publisher.publish(topic, payload, qos=0)
        assert done.wait(10), "the probe's marker did not arrive"
    finally:
        publisher.stop()
        subscriber.stop()
    assert MAX_PAYLOAD_BYTES in got, got
    return MAX_PAYLOAD_BYTES + 1 not in got


def test_the_embedded_broker_drops_larger_payloads_and_passes_the_largest_accepted(tmp_path):
    from ironsight.embedded_broker import find_mosquitto, start_embedded_broker

    if find_mosquitto() is None:
        pytest.skip("mosquitto is not installed")
    with start_embedded_broker(tmp_path, prefer="mosquitto") as broker:
        assert _broker_drops_oversized(broker.url, "limit-test")


# --- the fuzz run: a few thousand hostile payloads through the real broker and workers ---

EQUIPMENT = ("FZ-1", "FZ-2", "FZ-3")
VANS = ("VAN-1", "VAN-2")
SEED = 20_261_123
MESSAGES = {"telemetry": 1200, "telemetry-bin": 800, "status": 500, "ack": 400, "provisioning": 300,
            "position": 800}


class Raw(bytes):
    """A JSON token written as is: NaN, 1e400, a 500-digit integer."""


def dump(value: Any, ascii_only: bool = True) -> bytes:
    if isinstance(value, Raw):
        return bytes(value)
    if isinstance(value, dict):
        return b"{" + b",".join(dump(str(k)) + b":" + dump(v, ascii_only) for k, v in value.items()) + b"}"
    if isinstance(value, list):
        return b"[" + b",".join(dump(v, ascii_only) for v in value) + b"]"
    if isinstance(value, float) and not math.isfinite(value):
        return b"NaN" if math.isnan(value) else b"Infinity" if value > 0 else b"-Infinity"
    return json.dumps(value, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


HOSTILE_ATOMS: list[Any] = [
    None, True, False, 0, -1, 1.5, -0.0, 2**63, 2**64, -(2**63) - 1, 1e308, -1e308, 5e-324,
    Raw(b"1e400"), Raw(b"-1e400"), Raw(b"1e-400"), Raw(b"1" + b"0" * 400), Raw(b"9" * 5000), Raw(b"NaN"),
    Raw(b"Infinity"), Raw(b"-Infinity"), "", "x", "80", "\x00", "\ud800", "\udfff\ud800", "\u202egnp.exe", "🚜" * 3,
    "\\", '"', "[[[[", "x" * 300, "\u0000\u0001\u001b[31m", [], {}, [[]], {"": {}},
]


@dataclass
class Generator:
    rnd: random.Random
    root: str
    now: datetime
    # The largest payload the broker passes: a larger one at QoS 1 would be refused with a PUBACK
    # reason code (0x95) that paho takes for a protocol error and answers by reconnecting and
    # sending it again, forever.
    publish_limit: float = math.inf
    counter: int = 0

    def pick(self, options: list[Any]) -> Any:
        return options[self.rnd.randrange(len(options))]

    def atom(self) -> Any:
        return self.pick(HOSTILE_ATOMS)

    def nested(self, depth: int = 0) -> Any:
        roll = self.rnd.random()
        if depth > 4 or roll < 0.5:
            return self.atom()
        if roll < 0.75:
            return [self.nested(depth + 1) for _ in range(self.rnd.randrange(4))]
        return {self.pick(["a", "v", "ts", "id", "", "\u0000"]): self.nested(depth + 1)
                for _ in range(self.rnd.randrange(4))}

    def deep(self) -> Raw:
        levels = self.pick([MAX_JSON_DEPTH - 3, MAX_JSON_DEPTH, MAX_JSON_DEPTH + 1, 100, 1000, 5000])
        opener = self.pick([b"[", b'{"a":'])
        closer = b"]" if opener == b"[" else b"}"
        return Raw(opener * levels + b"1" + closer * levels * self.pick([1, 1, 0]))

    def value(self, good: Callable[[], Any]) -> Any:
        """Mostly a good value, sometimes anything."""
        roll = self.rnd.random()
        return good() if roll < 0.8 else self.atom() if roll < 0.96 else self.deep()

    def ts(self) -> Any:
        self.counter += 1
        past = self.now - timedelta(hours=2) + timedelta(milliseconds=self.counter)
        return self.pick([past.isoformat().replace("+00:00", "Z")] * 20 + [
            past.isoformat(), (self.now + timedelta(days=3)).isoformat(), "1970-01-01T00:00:00Z",
            "2026-01-01T00:00:00", "2026-02-30T00:00:00Z", "2026-01-01T23:59:60Z", "yesterday", "", "9" * 41,
            "0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59.999999-14:00", 1_700_000_000, None, []])

    def mutate(self, payload: bytes, max_bytes: int) -> bytes:
        """Sometimes break a payload as a network, a bug or an attacker would."""
        roll = self.rnd.random()
        if roll < 0.70:
            return payload
        if roll < 0.76 and payload:
            return payload[:self.rnd.randrange(len(payload))]
        if roll < 0.80 and payload:
            data = bytearray(payload)
            for _ in range(self.rnd.randint(1, 4)):
                data[self.rnd.randrange(len(data))] = self.rnd.randrange(256)
            return bytes(data)
        if roll < 0.83:
            return payload + self.pick([b" x", b"}", b"\x00", b"\xff", b" " * 3])
        if roll < 0.85:
            return b"\xef\xbb\xbf" + payload
        if roll < 0.87:
            return payload.decode("utf-8", "replace").encode("utf-16")
        if roll < 0.89:  # one byte too many, or (over the broker's limit) exactly as many as allowed
            size = max_bytes + 1 if max_bytes < self.publish_limit else max_bytes
            return payload + b" " * (size - len(payload))
        if roll < 0.91:
            return bytes(self.rnd.randrange(256) for _ in range(self.rnd.randrange(200)))
        if roll < 0.94:
            return bytes(self.deep())
        if roll < 0.96:
            return self.pick([b"", b"null", b"[]", b'"v"', b"1", b"{}", b'{"v":1}', b"\x00" * 8])
        return payload.replace(b'"v":1', b'"v":' + self.pick([b"true", b"1.0", b"2", b'"1"', b"null"]))

    # --- per topic kind ---

    def telemetry(self) -> bytes:
        readings = [self.reading_json() for _ in range(self.pick([1, 1, 1, 2, 5]))]
        body = {"v": self.value(lambda: 1), "seq": self.value(lambda: self.rnd.randrange(2**40)),
                "readings": self.value(lambda: readings)}
        if self.rnd.random() < 0.1:
            body["extra"] = self.nested()
        return self.mutate(dump(body, ascii_only=self.rnd.random() < 0.5), MAX_PAYLOAD_BYTES)

    def reading_json(self) -> Any:
        reading: dict[str, Any] = {"ts": self.ts()}
        for name in self.rnd.sample(CHANNELS, self.rnd.randint(0, len(CHANNELS))):
            low, high = CHANNEL_BOUNDS[name]
            reading[name] = self.value(lambda low=low, high=high: self.pick(
                [self.rnd.uniform(low, high)] * 4 + [low, high, high + 0.001, low - 1]))
        if self.rnd.random() < 0.2:
            reading["dtc"] = self.value(lambda: [{"spn": self.rnd.randrange(600_000), "fmi": self.rnd.randrange(40),
                                                  "oc": self.rnd.randrange(130)}])
        return self.value(lambda: reading)

    def binary(self) -> bytes:
        readings = []
        for _ in range(self.pick([1, 1, 2, 5])):
            self.counter += 1
            values = {name: self.rnd.uniform(*CHANNEL_BOUNDS[name]) for name in
                      self.rnd.sample(CHANNELS, self.rnd.randint(1, len(CHANNELS)))}
            if ("lat" in values) != ("lon" in values):
                values.pop("lat", None), values.pop("lon", None)
            codes = (FaultCode(self.rnd.randrange(524288), self.rnd.randrange(32), self.rnd.randrange(127)),) \
                if self.rnd.random() < 0.2 else ()
            at = self.now - timedelta(hours=2) + timedelta(milliseconds=self.counter)
            readings.append(Reading(ts=at, fault_codes=codes, **values))
        payload = encode_binary(self.rnd.randrange(2**40), readings)
        roll = self.rnd.random()
        if roll < 0.05:
            return b"\x01" + b"\xff" * self.rnd.randint(9, 20)  # an endless varint
        if roll < 0.10:
            return b"\x01\x01" + self.pick([b"\x00", b"\xe9\x07"]) + payload[3:]  # 0 or 1001 readings
        if roll < 0.15:
            data = bytearray(payload)
            data[-2:] = b"\xff\xff"
            return bytes(data)
        if roll < 0.20:
            return payload[:1] + b"\x01\x01" + (2**62).to_bytes(8, "big") + payload[11:]  # time far ahead
        return self.mutate(payload, MAX_PAYLOAD_BYTES)

    def status(self) -> bytes:
        if self.rnd.random() < 0.03:
            return b""  # an operator clearing the retained status
        body: dict[str, Any] = {"v": self.value(lambda: 1), "online": self.value(lambda: self.pick([True, False]))}
        for key, good in (("reason", lambda: self.pick(["clean", "lost"])), ("firmware", lambda: "2.1.0"),
                          ("signal_dbm", lambda: self.rnd.uniform(-150, 0)),
                          ("report_interval_s", lambda: self.pick([0.5, 1.0, 1e300, -1.0])),
                          ("locked", lambda: self.pick([True, False]))):
            if self.rnd.random() < 0.5:
                body[key] = self.value(good)
        return self.mutate(dump(body, ascii_only=self.rnd.random() < 0.5), MAX_DEVICE_MESSAGE_BYTES)

    def ack(self) -> bytes:
        body: dict[str, Any] = {"v": self.value(lambda: 1), "id": self.value(lambda: str(uuid.uuid4())),
                                "status": self.value(lambda: self.pick(["received", "executed", "rejected"]))}
        if self.rnd.random() < 0.5:
            body["result"] = self.value(lambda: {"seq": self.rnd.randrange(100), "x": self.nested()})
        if self.rnd.random() < 0.3:
            body["detail"] = self.value(lambda: "why not")
        return self.mutate(dump(body, ascii_only=self.rnd.random() < 0.5), MAX_DEVICE_MESSAGE_BYTES)

    def provisioning(self, client_id: str) -> bytes:
        body: dict[str, Any] = {"v": self.value(lambda: 1), "serial": self.value(lambda: client_id),
                                "model": self.value(lambda: "EX210")}
        if self.rnd.random() < 0.3:
            body["firmware"] = self.value(lambda: "2.1.0")
        return self.mutate(dump(body, ascii_only=self.rnd.random() < 0.5), MAX_DEVICE_MESSAGE_BYTES)

    def position(self) -> bytes:
        body: dict[str, Any] = {"v": self.value(lambda: 1), "ts": self.ts(),
                                "lat": self.value(lambda: self.pick([self.rnd.uniform(-90, 90)] * 8 + [90, 90.0001])),
                                "lon": self.value(lambda: self.pick([self.rnd.uniform(-180, 180)] * 8 + [-180, 181]))}
        if self.rnd.random() < 0.5:
            body["speed_kmh"] = self.value(lambda: self.pick([self.rnd.uniform(0, 300)] * 8 + [301, -1]))
        return self.mutate(dump(body, ascii_only=self.rnd.random() < 0.5), MAX_POSITION_BYTES)

    def entity_id(self, known: tuple[str, ...]) -> str:
        roll = self.rnd.random()
        if roll < 0.85:
            return self.pick(list(known))
        if roll < 0.93:
            return f"NOBODY-{self.rnd.randrange(50)}"
        # One topic level, valid UTF-8 without controls or wildcards (the broker would refuse those).
        return self.pick(["bad id", "ünïcödé", "x" * 65, "a.b-c_d", "%00", "' OR 1=1 --", "..", "🚜"])


@dataclass
class Expected:
    """What the decoders predict the workers will make of the messages."""

    ingest_messages: int = 0
    readings: int = 0
    ingest_dead_letters: int = 0
    device_messages: int = 0
    device_dead_letters: int = 0
    provisioning_answers: int = 0
    positions: int = 0
    positions_rejected: int = 0
    positions_unknown: int = 0
    sent: Counter[str] = field(default_factory=Counter)


def expect(kind: str, topic: str, payload: bytes, root: str, expected: Expected) -> None:
    now = _now()
    expected.sent[kind] += 1
    if kind in topics.TELEMETRY_KINDS:
        expected.ingest_messages += 1
        parsed = topics.parse_telemetry_topic(root, topic)
        if parsed is None or parsed[0] not in EQUIPMENT:
            expected.ingest_dead_letters += 1
            return
        decode = decode_binary if kind == topics.TELEMETRY_BINARY else decode_message
        try:
            decoded = decode(payload, now=now, future_tolerance_s=300)
        except InvalidTelemetry:
            expected.ingest_dead_letters += 1
            return
        expected.readings += len(decoded.readings)
        expected.ingest_dead_letters += len(decoded.rejected)
    elif kind == "position":
        vehicle = vehicle_id_from_topic(root, topic)
        try:
            if vehicle is None:
                raise InvalidTelemetry("bad_topic")
            decode_position(payload, now=now, future_tolerance_s=300)
        except InvalidTelemetry:
            expected.positions_rejected += 1
            return
        if vehicle in VANS:
            expected.positions += 1
        else:
            expected.positions_unknown += 1
    else:
        expected.device_messages += 1
        if kind == "ack":
            expected.device_dead_letters += 1  # malformed, or an answer to no command: all of them
        elif kind == "status":
            equipment_id = topics.parse_device_topic(root, topic, topics.STATUS)
            if equipment_id is None:
                expected.device_dead_letters += 1
            elif payload:
                try:
                    decode_status(payload)
                except InvalidTelemetry:
                    expected.device_dead_letters += 1
                    return
                if equipment_id not in EQUIPMENT:
                    expected.device_dead_letters += 1
        else:
            if topics.parse_provisioning_topic(root, topic) is None:
                expected.device_dead_letters += 1
                return
            expected.provisioning_answers += 1  # a refusal, or bad_request for a malformed one
            try:
                decode_provisioning_request(payload)
            except InvalidTelemetry:
                expected.device_dead_letters += 1


def generate(root: str, oversized_reach_ingest: bool) -> list[tuple[str, str, bytes]]:
    gen = Generator(random.Random(SEED), root, _now(), math.inf if oversized_reach_ingest else MAX_PAYLOAD_BYTES)
    messages: list[tuple[str, str, bytes]] = []
    for _ in range(MESSAGES["telemetry"]):
        messages.append(("telemetry", topics.telemetry_topic(root, gen.entity_id(EQUIPMENT)), gen.telemetry()))
    for _ in range(MESSAGES["telemetry-bin"]):
        messages.append(("telemetry-bin", topics.telemetry_topic(root, gen.entity_id(EQUIPMENT),
                                                                  topics.TELEMETRY_BINARY), gen.binary()))
    for _ in range(MESSAGES["status"]):
        messages.append(("status", topics.device_topic(root, gen.entity_id(EQUIPMENT), topics.STATUS), gen.status()))
    for _ in range(MESSAGES["ack"]):
        messages.append(("ack", topics.device_topic(root, gen.entity_id(EQUIPMENT), topics.ACK), gen.ack()))
    for i in range(MESSAGES["provisioning"]):
        client = gen.entity_id(("NEW-1", "NEW-2", f"NEW-{i}"))
        messages.append(("provisioning", topics.provisioning_topic(root, client, "request"), gen.provisioning(client)))
    for _ in range(MESSAGES["position"]):
        messages.append(("position", position_topic(root, gen.entity_id(VANS)), gen.position()))
    # The largest payload the broker passes, made of what is hardest to read; and, where the broker
    # passes them (no limit configured), larger ones.
    big = [b"[" * MAX_PAYLOAD_BYTES, b'{"v":1,"seq":1,"readings":[' + b"[" * (MAX_PAYLOAD_BYTES - 31) + b"]}",
           b" " * MAX_PAYLOAD_BYTES]
    if oversized_reach_ingest:
        big += [b"[" * (MAX_PAYLOAD_BYTES + 1), b"\x01" * 300_000]
    messages += [("telemetry", topics.telemetry_topic(root, "FZ-1"), payload) for payload in big]
    gen.rnd.shuffle(messages)
    return messages


class Publisher:
    """Publishes at QoS 1 many at a time and counts the broker's answers (refusals included)."""

    def __init__(self, mqtt_url: str, client_id: str) -> None:
        self.answered = 0
        self.refused = 0
        self._lock = threading.Lock()
        self.session = mqtt.Session(mqtt.parse_mqtt_url(mqtt_url), client_id, name="fuzz publisher",
                                    on_published=self._on_published, max_inflight=500).start()
        assert self.session.ready.wait(10)

    def _on_published(self, mid: int, failed: bool) -> None:
        with self._lock:
            self.answered += 1
            self.refused += failed

    def publish_all(self, messages: list[tuple[str, str, bytes]]) -> None:
        done = self.answered + len(messages)
        for _, topic, payload in messages:
            info = self.session.publish(topic, payload, qos=1)
            assert info.rc == mqtt.PUBLISH_QUEUED, mqtt.error_text(info.rc)
        wait_for(lambda: self.answered >= done, timeout_s=30, interval_s=0.05,
                 what=f"PUBACKs for {len(messages)} messages")


def _register(conn) -> None:
    for equipment_id in EQUIPMENT:
        registry.create_device(
            conn, equipment=EquipmentRecord(equipment_id, f"S-{equipment_id}", "EX210", "excavator", "acme"),
            equipment_id=equipment_id, serial=f"CTL-{equipment_id}", firmware=None, commissioned_on=None,
            report_interval_s=1.0)
    upsert_station(conn, Station("ST", "station", 48.0, 11.0))
    for i, van in enumerate(VANS):
        upsert_engineer(conn, Engineer(f"eng-{i}", f"Engineer {i}", "ST", ("EX210",)))
        upsert_vehicle(conn, Vehicle(van, "ST", f"eng-{i}"), at=_now() - timedelta(days=1))
    conn.commit()


@dataclass
class Rig:
    ingest: IngestWorker
    devices: DevicesWorker
    tracking: TrackingWorker
    threads: list[threading.Thread]


@pytest.fixture
def rig(settings, conn, background) -> Rig:
    _register(conn)
    ingest = IngestWorker(settings, settings.database_url, settings.mqtt_url, name="ingest-fuzz")
    devices = DevicesWorker(settings, settings.database_url, settings.mqtt_url, name="devices-fuzz")
    tracking = TrackingWorker(settings.database_url, settings.mqtt_url, topic_root=settings.topic_root,
                              client_id=f"{settings.topic_root}-tracking")
    threads = [background.start(ingest.run, "ingest"), background.start(devices.run, "devices"),
               background.start(tracking.run, "tracking")]
    assert ingest.connected.wait(10) and devices.connected.wait(10) and tracking.subscribed.wait(10)
    return Rig(ingest, devices, tracking, threads)


def _dead_letters_by_kind(conn, root: str) -> Counter[str]:
    rows = conn.execute("SELECT topic, reason FROM dead_letters").fetchall()
    conn.commit()
    kinds: Counter[str] = Counter()
    for topic, reason in rows:
        kind = topic.rsplit("/", 1)[-1]
        # A refused engine-hours value (the rest of its reading stored) depends on the readings stored
        # before it, which the model here does not follow: counted apart.
        kinds["counter" if reason == "counter_implausible"
              else "ingest" if kind in topics.TELEMETRY_KINDS else "devices"] += 1
    return kinds


def test_thousands_of_hostile_payloads_on_every_topic_leave_every_worker_running_and_every_message_counted(
        settings, conn, rig):
    root = settings.topic_root
    started = time.monotonic()
    oversized_reach_ingest = not _broker_drops_oversized(settings.mqtt_url, root)
    answers: list[str] = []
    responses = mqtt.Session(mqtt.parse_mqtt_url(settings.mqtt_url), f"{root}-answers", name="answers",
                             subscriptions=[topics.provisioning_topic(root, "+", "response")],
                             on_message=lambda m: answers.append(m.topic)).start()
    assert responses.ready.wait(10)
    messages = generate(root, oversized_reach_ingest)
    expected = Expected()
    for kind, topic, payload in messages:
        expect(kind, topic, payload, root, expected)

    publisher = Publisher(settings.mqtt_url, f"{root}-fuzz")
    try:
        publisher.publish_all(messages)
    finally:
        publisher.session.stop()
    assert publisher.refused == 0  # nothing here is over the broker's limit (if it has one)

    def ingest_totals() -> tuple[int, int, int]:
        row = conn.execute("SELECT coalesce(sum(messages), 0), coalesce(sum(readings_stored + readings_duplicate), 0),"
                           " coalesce(sum(dead_letters), 0) FROM ingest_stats").fetchone()
        conn.commit()
        return int(row[0]), int(row[1]), int(row[2])

    tracking = rig.tracking.stats
    try:
        wait_for(lambda: ingest_totals()[0] >= expected.ingest_messages
                 and rig.devices.handled >= expected.device_messages
                 and tracking.positions + tracking.rejected + tracking.unknown_vehicle
                 >= expected.sent["position"] - rig.tracking.dropped
                 and len(answers) >= expected.provisioning_answers,
                 timeout_s=40, interval_s=0.2, what="every message to be handled")
        time.sleep(0.5)  # anything beyond the expected would show now
    finally:
        responses.stop()

    # Every worker is alive: nothing a device sends stops one.
    assert all(thread.is_alive() for thread in rig.threads), [t.name for t in rig.threads if not t.is_alive()]
    # Ingest: each message's readings stored (or counted as duplicates) and its refusals dead-lettered.
    by_kind = _dead_letters_by_kind(conn, root)
    assert ingest_totals() == (expected.ingest_messages, expected.readings,
                               expected.ingest_dead_letters + by_kind["counter"])
    assert by_kind["ingest"] == expected.ingest_dead_letters
    # Devices: every message handled and acknowledged once, dead-lettered as predicted, provisioning answered.
    assert rig.devices.handled == expected.device_messages
    assert by_kind["devices"] == expected.device_dead_letters
    assert len(answers) == expected.provisioning_answers
    # Tracking: every position applied, rejected or from an unknown van; none dropped.
    assert rig.tracking.dropped == 0
    assert (tracking.positions, tracking.rejected, tracking.unknown_vehicle) == (
        expected.positions, expected.positions_rejected, expected.positions_unknown)
    # No message met a defect: nothing failed in a way the decoders did not foresee.
    reasons = Counter(r[0] for r in conn.execute("SELECT reason FROM dead_letters"))
    conn.commit()
    unforeseen = {"handler_error", "undecodable", "refused_by_database"}
    assert not unforeseen & set(reasons), reasons
    assert not unforeseen & set(rig.tracking.rejected.by_reason), rig.tracking.rejected.by_reason
    assert rig.ingest.unstorable.total == rig.devices.unstorable.total == 0
    assert reasons["too_deep"] + reasons["status_too_deep"] + reasons["ack_too_deep"] > 0
    print(f"\nfuzz: sent {dict(expected.sent)} ({len(messages)} messages, oversized reach ingest: "
          f"{oversized_reach_ingest}); ingest: {expected.ingest_messages} messages, {expected.readings} readings "
          f"stored, {expected.ingest_dead_letters} dead letters; devices: {expected.device_messages} handled, "
          f"{expected.device_dead_letters} dead letters, {expected.provisioning_answers} provisioning answers; "
          f"tracking: {tracking.positions} applied, {tracking.rejected} rejected, {tracking.unknown_vehicle} unknown "
          f"van; workers alive: {sum(t.is_alive() for t in rig.threads)}/3; "
          f"{time.monotonic() - started:.1f}s; top reasons {reasons.most_common(8)}")


# --- a failure in handling one message costs that message, never the worker ---


def test_the_issues_status_message_is_dead_lettered_and_the_next_status_recorded(settings, conn, rig):
    root = settings.topic_root
    publisher = Publisher(settings.mqtt_url, f"{root}-pub")
    try:
        publisher.publish_all([
            ("status", topics.device_topic(root, "FZ-1", topics.STATUS), NESTED_4K),
            ("ack", topics.device_topic(root, "FZ-1", topics.ACK), b'{"v":1,"result":' + NESTED_4K[:4000] + b"}"),
            ("provisioning", topics.provisioning_topic(root, "NEW-1", "request"), NESTED_4K),
            ("status", topics.device_topic(root, "FZ-1", topics.STATUS), encode_status(Status(True, firmware="9.9"))),
        ])
    finally:
        publisher.session.stop()
    wait_for(lambda: rig.devices.handled == 4, timeout_s=10, what="four device messages handled")
    assert conn.execute("SELECT firmware FROM device_presence WHERE equipment_id = 'FZ-1'").fetchone() == ("9.9",)
    reasons = sorted(r[0] for r in conn.execute("SELECT reason FROM dead_letters"))
    assert reasons == ["ack_too_deep", "provisioning_too_deep", "status_too_deep"]
    assert all(thread.is_alive() for thread in rig.threads)


def test_a_failing_handler_dead_letters_its_message_in_every_worker(settings, conn, rig, monkeypatch):
    import devices.worker
    import ingest.worker
    import tickets.tracking

    def broken(*args: object, **kwargs: object) -> object:
        raise ZeroDivisionError("a defect")

    root = settings.topic_root
    good_ts = _now() - timedelta(minutes=5)
    monkeypatch.setattr(devices.worker, "decode_ack", broken)
    monkeypatch.setattr(ingest.worker, "dead_letter_for_reading", broken)
    monkeypatch.setattr(tickets.tracking, "track_position", broken)
    publisher = Publisher(settings.mqtt_url, f"{root}-pub")
    telemetry = topics.telemetry_topic(root, "FZ-2")
    try:
        publisher.publish_all([
            ("ack", topics.device_topic(root, "FZ-1", topics.ACK), b'{"v":1,"id":"a","status":"received"}'),
            ("telemetry", telemetry, dump({"v": 1, "seq": 1, "readings": [{"ts": "x"}]})),  # a rejected reading
            ("position", position_topic(root, "VAN-1"), dump({"v": 1, "ts": good_ts.isoformat(), "lat": 1, "lon": 1})),
        ])
        wait_for(lambda: rig.devices.handled == 1 and rig.tracking.stats.rejected == 1 and conn.execute(
            "SELECT count(*) FROM dead_letters WHERE reason = 'handler_error'").fetchone()[0] == 2,
                 timeout_s=10, what="the failures dead-lettered and counted")
        monkeypatch.undo()  # fixed: the next messages go through
        publisher.publish_all([
            ("telemetry", telemetry, dump({"v": 1, "seq": 2, "readings": [
                {"ts": good_ts.isoformat(), "oil_temp_c": 80.0}]})),
            ("position", position_topic(root, "VAN-1"), dump({"v": 1, "ts": good_ts.isoformat(), "lat": 1, "lon": 1})),
        ])
    finally:
        publisher.session.stop()
    wait_for(lambda: conn.execute("SELECT count(*) FROM readings WHERE equipment_id = 'FZ-2'").fetchone()[0] == 1
             and rig.tracking.stats.positions == 1, timeout_s=10, what="the next messages stored")
    details = sorted(r[0] for r in conn.execute("SELECT detail FROM dead_letters WHERE reason = 'handler_error'"))
    assert details == ["ZeroDivisionError: a defect"] * 2
    assert rig.tracking.rejected.by_reason["handler_error"] == 1
    assert all(thread.is_alive() for thread in rig.threads)


# --- dead letters: retention and the staff API ---


def _dead_letter(conn, *, age: timedelta, reason: str = "not_json", equipment_id: str | None = "FZ-1",
                 topic: str = "root/v1/FZ-1/telemetry", payload: bytes = b"{") -> None:
    conn.execute("INSERT INTO dead_letters (received_at, topic, equipment_id, reason, detail, payload, payload_bytes)"
                 " VALUES (now() - %s, %s, %s, %s, %s, %s, %s)",
                 (age, topic, equipment_id, reason, "detail", payload, len(payload)))


def test_dead_letters_older_than_the_retention_are_purged_in_batches(settings, conn):
    for i in range(7):
        _dead_letter(conn, age=timedelta(days=15, minutes=i))
    for i in range(3):
        _dead_letter(conn, age=timedelta(days=13, minutes=i))
    conn.commit()
    assert purge_dead_letters(conn, timedelta(days=14), batch_rows=2) == 7
    assert conn.execute("SELECT count(*) FROM dead_letters").fetchone()[0] == 3

    _dead_letter(conn, age=timedelta(days=20))
    conn.commit()
    retention = DeadLetterRetention(settings.database_url, 14.0, 0.1, name="test")
    stop = threading.Event()
    thread = retention.start(stop)
    assert thread is not None
    try:
        wait_for(lambda: retention.purged == 1, timeout_s=10, what="the retention thread's purge")
    finally:
        stop.set()
        thread.join(5)
    assert DeadLetterRetention(settings.database_url, 0, 0.1, name="off").start(stop) is None
    assert conn.execute("SELECT count(*) FROM dead_letters").fetchone()[0] == 3
    conn.commit()


def test_staff_read_dead_letters_with_filters_paging_and_a_safe_preview_customers_do_not(settings, conn):
    hostile = "\x1b[31m\u202e".encode() + b"\xff\x00" + b"A" * 5000
    _dead_letter(conn, age=timedelta(hours=3), reason="not_json", payload=b'{"v":')
    _dead_letter(conn, age=timedelta(hours=2), reason="too_deep", payload=hostile,
                 topic="root/v1/FZ-1/telemetry\u202e")
    _dead_letter(conn, age=timedelta(hours=1), reason="not_json", equipment_id="FZ-2", payload=b"x")
    register_equipment(conn, [EquipmentRecord("FZ-1", "S-1", "EX210", "excavator", "acme")])
    conn.commit()
    api = ApiServer(settings, settings.database_url)
    try:
        admin = api.client()
        page = admin.get("/dead-letters").json()
        assert page["count"] == 3 and [d["reason"] for d in page["data"]] == ["not_json", "too_deep", "not_json"]
        deep = page["data"][1]
        assert deep["payload_bytes"] == len(hostile) and deep["payload_truncated"] is True
        assert base64.b64decode(deep["payload_base64"]) == hostile[:2048]
        preview = deep["payload_preview"]
        assert preview.startswith("\\x1b[31m\\u202e\\xff\\x00AAA") and preview.isprintable()
        assert deep["topic"] == "root/v1/FZ-1/telemetry\\u202e"
        assert admin.get("/dead-letters", params={"reason": "not_json"}).json()["count"] == 2
        assert admin.get("/dead-letters", params={"equipment_id": "FZ-2"}).json()["data"][0]["payload_preview"] == "x"
        since = (_now() - timedelta(minutes=150)).isoformat()
        assert admin.get("/dead-letters", params={"start": since}).json()["count"] == 2
        assert admin.get("/dead-letters", params={"end": since}).json()["count"] == 1
        second = admin.get("/dead-letters", params={"limit": 1, "offset": 1}).json()
        assert second["count"] == 3 and [d["reason"] for d in second["data"]] == ["too_deep"]
        assert admin.get("/dead-letters", params={"start": since, "end": since}).status_code == 422
        reasons = admin.get("/dead-letters/reasons").json()
        assert reasons["total"] == 3
        assert [(r["reason"], r["count"]) for r in reasons["data"]] == [("not_json", 2), ("too_deep", 1)]
        assert api.user("engineer").get("/dead-letters").status_code == 200
        customer = api.user("customer", customer="acme")
        assert customer.get("/dead-letters").status_code == 403
        assert customer.get("/dead-letters/reasons").status_code == 403
    finally:
        api.close()
