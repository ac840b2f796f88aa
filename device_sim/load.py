"""A load generator: many controllers' telemetry at a controlled rate, from few processes.

Payloads are built from a per-controller template (only the timestamps and sequence number
change), so the generator spends its time publishing, not simulating. Each process owns a slice of
the controllers and several MQTT connections (QoS 1, a bounded window of unacknowledged messages
per connection) and counts what the broker acknowledged.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from core import mqtt, topics
from core.telemetry import Reading
from core.telemetry_binary import encode_binary

log = logging.getLogger(__name__)

# Unacknowledged QoS 1 messages per connection: below MQTT's 65,535 packet ids with room to spare,
# large enough that the round trip to the broker does not limit the rate.
INFLIGHT_PER_CONNECTION = 2000
TICK_S = 0.01


@dataclass(frozen=True, slots=True)
class LoadSpec:
    mqtt_url: str
    topic_root: str
    equipment_ids: tuple[str, ...]
    msg_per_s: float
    readings_per_msg: int
    duration_s: float
    connections: int = 4
    codec: str = "json"  # or "binary"


def _iso_ms(epoch_ms: int, cache: dict[int, str]) -> str:
    second = epoch_ms // 1000
    prefix = cache.get(second)
    if prefix is None:
        cache.clear()
        prefix = cache[second] = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{prefix}.{epoch_ms % 1000:03d}Z"


_CHANNELS = ('"oil_temp_c":86.4,"engine_rpm":1812.5,"hydraulic_pressure_bar":243.1,"coolant_temp_c":84.2,'
             '"fuel_level_pct":61.35,"engine_hours":2210.4172,"lat":51.949011,"lon":4.142035,"speed_kmh":0.0')


def json_payload(seq: int, timestamps_ms: list[int], cache: dict[int, str]) -> bytes:
    readings = ",".join(f'{{"ts":"{_iso_ms(t, cache)}",{_CHANNELS}}}' for t in timestamps_ms)
    return f'{{"v":1,"seq":{seq},"readings":[{readings}]}}'.encode()


_TEMPLATE = Reading(ts=datetime(2026, 1, 1, tzinfo=UTC), oil_temp_c=86.4, engine_rpm=1812.5,
                    hydraulic_pressure_bar=243.1, coolant_temp_c=84.2, fuel_level_pct=61.35, engine_hours=2210.417,
                    lat=51.949011, lon=4.142035, speed_kmh=0.0)
# The binary form of one reading after its time delta: presence mask and channel values, constant here.
_BINARY_BODY = encode_binary(0, [_TEMPLATE])[1 + 1 + 1 + 8 + 1:]


def _varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def binary_payload(seq: int, timestamps_ms: list[int]) -> bytes:
    """The compact codec's message for readings at ``timestamps_ms`` (ascending) with template values."""
    out = bytearray(b"\x01") + _varint(seq) + _varint(len(timestamps_ms)) + timestamps_ms[0].to_bytes(8, "big")
    previous = timestamps_ms[0]
    for ts in timestamps_ms:
        out += _varint((ts - previous) << 1) + _BINARY_BODY
        previous = ts
    return bytes(out)


def run_slice(spec: LoadSpec, results: mp.Queue) -> None:
    """Publish this process's share of the load for ``spec.duration_s``; report counts at the end."""
    address = mqtt.parse_mqtt_url(spec.mqtt_url)
    acked = [0]
    lock = threading.Lock()

    def on_publish(client, userdata, mid, reason_code, properties) -> None:
        with lock:
            acked[0] += 1

    clients = []
    for i in range(spec.connections):
        client = mqtt.new_client(f"{spec.topic_root}-load-{spec.equipment_ids[0]}-{i}")
        client.max_inflight_messages_set(INFLIGHT_PER_CONNECTION)
        client.max_queued_messages_set(0)
        connected = threading.Event()
        client.on_connect = lambda *a, ev=connected: ev.set()
        client.on_publish = on_publish
        mqtt.start(client, address, clean_start=True)
        connected.wait(10)
        clients.append(client)
    kind = topics.TELEMETRY_BINARY if spec.codec == "binary" else topics.TELEMETRY
    topic_of = [topics.telemetry_topic(spec.topic_root, e, kind) for e in spec.equipment_ids]
    n = len(spec.equipment_ids)
    seqs = [0] * n
    # Each controller's readings are spaced evenly over its own message period.
    per_controller_msg_s = spec.msg_per_s / n
    reading_gap_ms = max(1, int(1000 / (per_controller_msg_s * spec.readings_per_msg)))
    last_ts = [0] * n
    cache: dict[int, str] = {}
    published = readings = errors = 0
    start = time.monotonic()
    next_index = 0
    while True:
        elapsed = time.monotonic() - start
        if elapsed >= spec.duration_s:
            break
        due = int(elapsed * spec.msg_per_s) - published
        now_ms = int(time.time() * 1000)
        for _ in range(max(0, due)):
            i = next_index
            next_index = (next_index + 1) % n
            first = max(last_ts[i] + reading_gap_ms, now_ms - reading_gap_ms * (spec.readings_per_msg - 1))
            stamps = [first + k * reading_gap_ms for k in range(spec.readings_per_msg)]
            last_ts[i] = stamps[-1]
            seqs[i] += 1
            if spec.codec == "binary":
                payload = binary_payload(seqs[i], stamps)
            else:
                payload = json_payload(seqs[i], stamps, cache)
            info = clients[i % len(clients)].publish(topic_of[i], payload, qos=1)
            if info.rc != 0:
                errors += 1
            published += 1
            readings += spec.readings_per_msg
        time.sleep(TICK_S)
    deadline = time.monotonic() + 30
    while acked[0] < published - errors and time.monotonic() < deadline:
        time.sleep(0.05)
    for client in clients:
        mqtt.stop(client)
    results.put({"published": published, "acked": acked[0], "readings_published": readings,
                 "readings_acked": acked[0] * spec.readings_per_msg, "errors": errors,
                 "achieved_msg_per_s": published / spec.duration_s})
