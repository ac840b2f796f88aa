"""A load generator: many controllers' telemetry at a controlled rate, from few processes.

Every simulated controller is its own MQTT 5 session over its own TCP connection, as on a real
fleet (``LoadSpec.connections`` can pool them into fewer connections instead). The generator
speaks just the part of MQTT it needs (CONNECT, PUBLISH at QoS 1, PUBACK, DISCONNECT) over
non-blocking sockets, and builds each packet from a per-controller template in which only the
timestamps and the sequence number change: paho's per-message cost would otherwise make the load
generator the bottleneck of the machine it measures. It counts what the broker acknowledged with a
success reason code, so loss is measured from acknowledgements, never assumed.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import selectors
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from core import mqtt, topics
from core.telemetry import Reading
from core.telemetry_binary import encode_binary, varint

log = logging.getLogger(__name__)

# Unacknowledged QoS 1 messages per connection: far below MQTT's 65,535 packet ids, large enough
# that the round trip to the broker does not limit a pooled connection's rate.
INFLIGHT_PER_CONNECTION = 2000
TICK_S = 0.01
# Connections opened before waiting for their CONNACKs: a burst of thousands would overflow the
# broker's listen backlog and stall in SYN retries.
CONNECT_WAVE = 250
CONNECT_TIMEOUT_S = 30.0
ACK_WAIT_S = 30.0
READ_BYTES = 65536

_CONNECT, _CONNACK, _PUBACK, _PINGRESP, _DISCONNECT = 1, 2, 4, 13, 14
# PUBACK reason codes below 0x80 are successes (0x10: accepted, no matching subscribers).
_FIRST_FAILURE_REASON = 0x80


@dataclass(frozen=True, slots=True)
class LoadSpec:
    mqtt_url: str
    topic_root: str
    equipment_ids: tuple[str, ...]
    msg_per_s: float
    readings_per_msg: int
    duration_s: float
    # None: one connection (one MQTT session) per controller.
    connections: int | None = None
    codec: str = "json"  # or "binary"
    client_id_prefix: str = "load"


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


def binary_payload(seq: int, timestamps_ms: list[int]) -> bytes:
    """The compact codec's message for readings at ``timestamps_ms`` (ascending) with template values."""
    out = bytearray(b"\x01") + varint(seq) + varint(len(timestamps_ms)) + timestamps_ms[0].to_bytes(8, "big")
    previous = timestamps_ms[0]
    for ts in timestamps_ms:
        out += varint((ts - previous) << 1) + _BINARY_BODY
        previous = ts
    return bytes(out)


# --- the MQTT 5 packets the generator sends ---

def _string(value: str) -> bytes:
    encoded = value.encode()
    return len(encoded).to_bytes(2, "big") + encoded


def connect_packet(client_id: str, username: str | None = None, password: str | None = None) -> bytes:
    """CONNECT, MQTT 5, clean start, no keep-alive (the generator never idles), no properties."""
    flags = 0x02 | (0x80 if username else 0) | (0x40 if password else 0)
    body = b"\x00\x04MQTT\x05" + bytes([flags]) + b"\x00\x00" + b"\x00" + _string(client_id)
    if username:
        body += _string(username)
    if password:
        body += _string(password)
    return bytes([_CONNECT << 4]) + varint(len(body)) + body


def publish_packet(topic_field: bytes, mid: int, payload: bytes) -> bytes:
    """PUBLISH at QoS 1; ``topic_field`` is the topic with its 2-byte length, built once per controller."""
    length = len(topic_field) + 3 + len(payload)  # packet id (2), property length (1)
    return b"\x32" + varint(length) + topic_field + mid.to_bytes(2, "big") + b"\x00" + payload


_DISCONNECT_PACKET = bytes([_DISCONNECT << 4, 0])


class _Connection:
    """One MQTT session: its socket, unsent bytes, unparsed input and acknowledgement counts."""

    __slots__ = ("sock", "out", "inbox", "next_mid", "unacked", "acked", "refused", "connack", "closed")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.out = bytearray()
        self.inbox = bytearray()
        self.next_mid = 0
        self.unacked = 0
        self.acked = 0
        self.refused = 0
        self.connack: int | None = None  # its reason code once received
        self.closed = False

    def take_mid(self) -> int:
        self.next_mid = self.next_mid % 65535 + 1
        self.unacked += 1
        return self.next_mid

    def receive(self) -> None:
        try:
            data = self.sock.recv(READ_BYTES)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.closed = True
            return
        self.inbox += data
        self._parse()

    def _parse(self) -> None:
        buf, pos = self.inbox, 0
        while len(buf) - pos >= 2:
            header, length, shift, cursor = buf[pos], 0, 0, pos + 1
            while True:
                if cursor >= len(buf):
                    del buf[:pos]
                    return
                byte = buf[cursor]
                length |= (byte & 0x7F) << shift
                shift += 7
                cursor += 1
                if not byte & 0x80:
                    break
            end = cursor + length
            if end > len(buf):
                break
            kind = header >> 4
            if kind == _PUBACK:
                reason = buf[cursor + 2] if length > 2 else 0
                self.unacked -= 1
                if reason < _FIRST_FAILURE_REASON:
                    self.acked += 1
                else:
                    self.refused += 1
            elif kind == _CONNACK:
                self.connack = buf[cursor + 1]
            elif kind == _DISCONNECT:
                log.warning("broker disconnected a load connection, reason 0x%02x", buf[cursor] if length else 0)
                self.closed = True
            pos = end
        del buf[:pos]

    def flush(self) -> None:
        if self.out and not self.closed:
            try:
                sent = self.sock.send(self.out)
            except BlockingIOError:
                return
            except OSError:
                self.closed = True
                return
            del self.out[:sent]


def _open_connections(spec: LoadSpec, count: int, selector: selectors.BaseSelector) -> list[_Connection]:
    address = mqtt.parse_mqtt_url(spec.mqtt_url)
    opened: list[_Connection] = []
    deadline = time.monotonic() + CONNECT_TIMEOUT_S
    for wave_start in range(0, count, CONNECT_WAVE):
        wave = []
        for i in range(wave_start, min(count, wave_start + CONNECT_WAVE)):
            sock = socket.create_connection((address.host, address.port), timeout=CONNECT_TIMEOUT_S)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            # Pooled connections are named after their slice's first controller: unique across processes.
            client_id = (f"{spec.client_id_prefix}-{spec.equipment_ids[i]}" if count == len(spec.equipment_ids)
                         else f"{spec.client_id_prefix}-{spec.equipment_ids[0]}-{i}")
            sock.sendall(connect_packet(client_id, address.username, address.password))
            sock.setblocking(False)
            connection = _Connection(sock)
            selector.register(sock, selectors.EVENT_READ, connection)
            wave.append(connection)
        while any(c.connack is None and not c.closed for c in wave):
            if time.monotonic() > deadline:
                raise TimeoutError(f"no CONNACK from {spec.mqtt_url} within {CONNECT_TIMEOUT_S:.0f}s")
            for key, _ in selector.select(0.1):
                key.data.receive()
        refused = [c for c in wave if c.connack or c.closed]
        if refused:
            reason = "closed" if refused[0].closed else f"reason 0x{refused[0].connack:02x}"
            raise ConnectionRefusedError(f"the broker refused {len(refused)} load connections ({reason})")
        opened.extend(wave)
    return opened


def run_load(spec: LoadSpec, when_connected: Callable[[], None] | None = None) -> dict[str, float]:
    """Publish ``spec``'s load for ``spec.duration_s``, wait for the acknowledgements, return the counts.

    ``when_connected`` runs once every session is up and before the first message: it may block, so
    that several load processes start publishing together.
    """
    n = len(spec.equipment_ids)
    connection_count = n if spec.connections is None else max(1, min(spec.connections, n))
    selector = selectors.DefaultSelector()
    connections = _open_connections(spec, connection_count, selector)
    if when_connected is not None:
        when_connected()
    kind = topics.TELEMETRY_BINARY if spec.codec == "binary" else topics.TELEMETRY
    topic_fields = [_string(topics.telemetry_topic(spec.topic_root, e, kind)) for e in spec.equipment_ids]
    connection_of = [connections[i % connection_count] for i in range(n)]
    per_controller_msg_s = spec.msg_per_s / n
    # Each controller's readings are spaced evenly over its own message period.
    reading_gap_ms = max(1, int(1000 / (per_controller_msg_s * spec.readings_per_msg)))
    seqs = [0] * n
    last_ts = [0] * n
    cache: dict[int, str] = {}
    published = throttled = 0
    next_index = 0
    pending_writes: set[_Connection] = set()
    start = time.monotonic()
    while (elapsed := time.monotonic() - start) < spec.duration_s:
        due = int(elapsed * spec.msg_per_s) - published - throttled
        now_ms = int(time.time() * 1000)
        for _ in range(max(0, due)):
            i = next_index
            next_index = (next_index + 1) % n
            connection = connection_of[i]
            if connection.unacked >= INFLIGHT_PER_CONNECTION or connection.closed:
                throttled += 1  # the broker is not keeping up with this session: offered load drops
                continue
            first = max(last_ts[i] + reading_gap_ms, now_ms - reading_gap_ms * (spec.readings_per_msg - 1))
            stamps = [first + k * reading_gap_ms for k in range(spec.readings_per_msg)]
            last_ts[i] = stamps[-1]
            seqs[i] += 1
            if spec.codec == "binary":
                payload = binary_payload(seqs[i], stamps)
            else:
                payload = json_payload(seqs[i], stamps, cache)
            connection.out += publish_packet(topic_fields[i], connection.take_mid(), payload)
            pending_writes.add(connection)
            published += 1
        _pump(selector, pending_writes, TICK_S)
    deadline = time.monotonic() + ACK_WAIT_S
    while time.monotonic() < deadline and any(c.unacked and not c.closed for c in connections):
        _pump(selector, pending_writes, TICK_S)
    for connection in connections:
        if not connection.closed:
            try:
                connection.sock.setblocking(True)
                connection.sock.sendall(bytes(connection.out) + _DISCONNECT_PACKET)
            except OSError:
                pass
        connection.sock.close()
    selector.close()
    acked = sum(c.acked for c in connections)
    return {
        "published": published, "acked": acked, "refused": sum(c.refused for c in connections),
        "unacked": sum(c.unacked for c in connections), "throttled": throttled,
        "readings_published": published * spec.readings_per_msg, "readings_acked": acked * spec.readings_per_msg,
        "connections": connection_count, "achieved_msg_per_s": published / spec.duration_s,
    }


def _pump(selector: selectors.BaseSelector, pending_writes: set[_Connection], timeout: float) -> None:
    """Send what is queued, then read acknowledgements until ``timeout`` has passed."""
    _flush(pending_writes)
    deadline = time.monotonic() + timeout
    while (remaining := deadline - time.monotonic()) > 0:
        events = selector.select(0 if pending_writes else remaining)
        for key, _ in events:
            key.data.receive()
        if pending_writes:
            _flush(pending_writes)
            if not events:
                time.sleep(min(remaining, 0.001))


def _flush(pending_writes: set[_Connection]) -> None:
    """Send what each connection can take now; forget those with nothing left to send."""
    for connection in pending_writes:
        connection.flush()
    pending_writes.difference_update([c for c in pending_writes if not c.out or c.closed])


def run_slice(spec: LoadSpec, results: mp.Queue, start_together: Any = None) -> None:
    """A load process's entry point: run the load, put the counts on ``results``.

    ``start_together``: a multiprocessing barrier shared with the other load processes and the
    caller, passed once this process is connected, so that the load window is known.
    """
    try:
        results.put(run_load(spec, None if start_together is None else start_together.wait))
    except Exception as exc:
        log.exception("load generator failed")
        results.put({"error": repr(exc)})
