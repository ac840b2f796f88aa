"""A load generator: many controllers' telemetry at a controlled rate, from few processes.

Every simulated controller is its own MQTT 5 session over its own TCP connection, as on a real
fleet (``LoadSpec.connections`` can pool them into fewer connections instead). The generator
speaks just the part of MQTT it needs (CONNECT, PUBLISH at QoS 1, PUBACK, DISCONNECT) over
non-blocking sockets, and builds each packet from pre-built parts: paho's per-message cost would
otherwise make the load generator the bottleneck of the machine it measures. It counts what the
broker acknowledged with a success reason code, so loss is measured from acknowledgements, never
assumed.

Values vary like a working machine's (sensor noise on temperatures, rpm and pressure, the engine
dropping to part throttle now and then, engine hours counting up), so that healthy machines raise
nothing: a constant reading trips the stuck-sensor rule within a minute. The variation costs little
per message: ``VARIANTS`` channel sets are encoded once per codec and each controller walks through
them from its own offset, so consecutive readings of one controller always differ. Only the
timestamps, the sequence number and the engine hours are formatted per reading.

``LoadSpec.faults`` injects faults at known moments (``InjectedFault``): a J1939 DTC carried by
every reading from then on, or oil temperature above the overheat limit. The generator reports,
per injected fault, the wall-clock time at which it published the reading that makes the fault due
(the first reading carrying the DTC; the first overheated reading ``overheat_sustain_s`` after the
first overheated one), which is the ground truth fault latency is measured from.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import random
import selectors
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypedDict

from core import mqtt, topics
from core.telemetry import CHANNELS, FaultCode, Reading
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
    # Faults to inject; those of controllers outside ``equipment_ids`` are ignored, so one plan can
    # be handed to every load process.
    faults: tuple[InjectedFault, ...] = ()
    # How long oil must stay above the limit before the rule raises (the rulebook's sustain time):
    # the due time of an injected overheat.
    overheat_sustain_s: float = 30.0


DTC = "dtc"
OIL_OVERHEAT = "oil_overheat"


@dataclass(frozen=True, slots=True)
class InjectedFault:
    """From ``at_s`` after the start of the load window until its end, ``equipment_id``'s readings
    carry the J1939 code (``spn``, ``fmi``) (kind DTC) or oil above the overheat limit (kind
    OIL_OVERHEAT). Never cleared during the run, so that each is raised exactly once."""

    equipment_id: str
    kind: str
    at_s: float
    spn: int = 0
    fmi: int = 0


def fault_plan(equipment_ids: tuple[str, ...] | list[str], share: float, window_s: tuple[float, float], *,
               kinds: tuple[tuple[str, int, int], ...] = ((DTC, 100, 17),), seed: int = 1) -> tuple[InjectedFault, ...]:
    """A fault for ``share`` of the controllers (one each), starting at moments spread evenly over
    ``window_s`` (seconds into the load window), the kinds ((kind, spn, fmi), …) taken in turn."""
    rng = random.Random(seed)
    chosen = rng.sample(list(equipment_ids), round(len(equipment_ids) * share))
    first, last = window_s
    step = (last - first) / max(1, len(chosen) - 1) if len(chosen) > 1 else 0.0
    plan = []
    for n, equipment_id in enumerate(sorted(chosen)):
        kind, spn, fmi = kinds[n % len(kinds)]
        plan.append(InjectedFault(equipment_id, kind, first + n * step, spn, fmi))
    return tuple(plan)


def storm_plan(equipment_ids: tuple[str, ...] | list[str], at_s: float, spn: int = 97,
               fmi: int = 0) -> tuple[InjectedFault, ...]:
    """Every controller starts reporting the same DTC at the same moment (default: water in fuel, a
    minor fault, which raises alarms but opens no tickets)."""
    return tuple(InjectedFault(e, DTC, at_s, spn, fmi) for e in equipment_ids)


def _iso_ms(epoch_ms: int, cache: dict[int, str]) -> str:
    second = epoch_ms // 1000
    prefix = cache.get(second)
    if prefix is None:
        cache.clear()
        prefix = cache[second] = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{prefix}.{epoch_ms % 1000:03d}Z"


# Channel sets each controller cycles through; an even count, so that the alternating offsets below
# make every pair of neighbours (also the last and the first) differ.
VARIANTS = 256
# Oil of an injected overheat: above every model's raise limit (105 °C, 108 °C on the EX350), below
# where the rulebook calls it critical (limit + 10 °C).
OVERHEATED_OIL_C = 110.0
# Engine hours start between these (milli-hours) per controller: clear of the service-due warning,
# which comes 10 h before each 250 h boundary (2,240 h here), for days of running.
_HOURS_FROM_MILLI, _HOURS_SPREAD_MILLI = 2_010_000, 180_000
# Milliseconds of running per milli-hour of engine hours.
_MS_PER_MILLI_HOUR = 3600


def healthy_channels(count: int = VARIANTS, *, overheated: bool = False, seed: int = 7) -> list[dict[str, float]]:
    """``count`` sets of channel values (all but engine hours) of a healthy excavator at work, rounded
    to what the binary codec carries. Temperatures alternate around their level by 0.05-0.6 °C, so
    that neighbours always differ (the stuck-sensor rule wants movement above 0.001 within 45 s);
    every 8th set is part throttle (rpm below the 1,600 rpm of "working"), which also keeps the
    rate-of-change rule, that needs 7 minutes of steady rpm, from judging the noise."""
    rng = random.Random(seed)
    out = []
    for v in range(count):
        side = 1.0 if v % 2 else -1.0
        oil_level = OVERHEATED_OIL_C if overheated else 86.0
        part_throttle = v % 8 == 7
        out.append({
            "oil_temp_c": round(oil_level + side * rng.uniform(0.05, 0.6), 2),
            "engine_rpm": round((1450.0 if part_throttle else 1810.0) + rng.uniform(-25.0, 25.0), 1),
            "hydraulic_pressure_bar": round((215.0 if part_throttle else 243.0) + rng.uniform(-6.0, 6.0), 1),
            "coolant_temp_c": round(84.2 + side * rng.uniform(0.05, 0.4), 2),
            "fuel_level_pct": round(61.35 + rng.uniform(-0.15, 0.15), 2),
            "lat": round(51.949011 + rng.uniform(-2e-6, 2e-6), 7),
            "lon": round(4.142035 + rng.uniform(-2e-6, 2e-6), 7),
            "speed_kmh": round(rng.uniform(0.0, 0.6), 1),
            # Not from rng: the other channels keep the values (and the neighbours' differences) they had.
            "ambient_temp_c": round(14.0 + 0.05 * (v % 5), 2),
        })
    return out


def _json_channels(values: dict[str, float]) -> str:
    return ",".join(f'"{name}":{values[name]!r}' for name in CHANNELS if name in values)


def _binary_parts(values: dict[str, float]) -> tuple[bytes, bytes, bytes]:
    """The binary form of one reading after its time delta, split around engine hours (the one value
    that changes per reading): presence mask, the channels before, the channels after."""
    template = Reading(datetime(2026, 1, 1, tzinfo=UTC), **values, engine_hours=0.0, fault_codes=())
    body = encode_binary(0, [template])[1 + 1 + 1 + 8 + 1:]
    hours_at = 2 + 2 * CHANNELS.index("engine_hours")  # every channel before it is 2 bytes wide
    # After the hours: lat and lon (4 bytes each), speed and ambient temperature (2 each).
    assert CHANNELS.index("engine_hours") == 5 and len(body) == hours_at + 4 + 12, "binary layout changed"
    return body[:2], body[2:hours_at], body[hours_at + 4:]


_U32 = struct.Struct(">I")
_DTC_MASK_BIT = 0x80


class Payloads:
    """Builds the messages of ``equipment_ids`` (their index in it is ``i``) and follows the injected
    faults: which readings carry them, and when each became due."""

    def __init__(self, equipment_ids: tuple[str, ...], codec: str, start_ms: int,
                 faults: tuple[InjectedFault, ...] = (), overheat_sustain_s: float = 30.0) -> None:
        self.codec = codec
        self.start_ms = start_ms
        n = len(equipment_ids)
        self.offsets = [(i * 97) % VARIANTS for i in range(n)]
        self.readings_sent = [0] * n
        self.hours0 = [_HOURS_FROM_MILLI + (i * 7919) % _HOURS_SPREAD_MILLI for i in range(n)]
        healthy, hot = healthy_channels(), healthy_channels(overheated=True)
        self.json_healthy = [_json_channels(v) for v in healthy]
        self.json_hot = [_json_channels(v) for v in hot]
        self.bin_healthy = [_binary_parts(v) for v in healthy]
        self.bin_hot = [_binary_parts(v) for v in hot]
        self.cache: dict[int, str] = {}
        never = 1 << 62
        self.hot_from = [never] * n
        # Per controller with DTCs: [(from_ms, fault)], in time order.
        self.dtc_plan: list[list[tuple[int, InjectedFault]] | None] = [None] * n
        self.overheat: dict[int, InjectedFault] = {}
        self.first_hot_ms: dict[int, int] = {}
        self.sustain_ms = round(overheat_sustain_s * 1000)
        self.pending: dict[int, list[InjectedFault]] = {}
        self.due: list[dict[str, Any]] = []
        index = {e: i for i, e in enumerate(equipment_ids)}
        for fault in faults:
            i = index.get(fault.equipment_id)
            if i is None:
                continue
            from_ms = start_ms + round(fault.at_s * 1000)
            if fault.kind == DTC:
                plan = self.dtc_plan[i] = self.dtc_plan[i] or []
                plan.append((from_ms, fault))
                plan.sort(key=lambda entry: entry[0])
            elif fault.kind == OIL_OVERHEAT:
                self.hot_from[i] = min(self.hot_from[i], from_ms)
                self.overheat[i] = fault
            else:
                raise ValueError(f"unknown fault kind {fault.kind!r}")
            self.pending.setdefault(i, []).append(fault)
        self.planned = sum(len(v) for v in self.pending.values())

    def payload(self, i: int, seq: int, stamps: list[int]) -> bytes:
        if i in self.pending:
            self._note_due(i, stamps)
        base = self.offsets[i] + self.readings_sent[i]
        self.readings_sent[i] += len(stamps)
        if self.codec == "binary":
            return self._binary(i, seq, stamps, base)
        return self._json(i, seq, stamps, base)

    def _codes(self, i: int, ts: int) -> list[InjectedFault]:
        plan = self.dtc_plan[i]
        return [fault for from_ms, fault in plan if from_ms <= ts] if plan else []

    def _json(self, i: int, seq: int, stamps: list[int], base: int) -> bytes:
        parts = []
        hot_from, hours0, start, cache = self.hot_from[i], self.hours0[i], self.start_ms, self.cache
        for k, ts in enumerate(stamps):
            channels = (self.json_hot if ts >= hot_from else self.json_healthy)[(base + k) % VARIANTS]
            hours = hours0 + (ts - start) // _MS_PER_MILLI_HOUR
            dtc = ""
            if self.dtc_plan[i] is not None and (codes := self._codes(i, ts)):
                dtc = ',"dtc":[' + ",".join(f'{{"spn":{c.spn},"fmi":{c.fmi},"oc":1}}' for c in codes) + "]"
            parts.append(f'{{"ts":"{_iso_ms(ts, cache)}",{channels},"engine_hours":{hours // 1000}.{hours % 1000:03d}'
                         f"{dtc}}}")
        return f'{{"v":1,"seq":{seq},"readings":[{",".join(parts)}]}}'.encode()

    def _binary(self, i: int, seq: int, stamps: list[int], base: int) -> bytes:
        out = bytearray(b"\x01") + varint(seq) + varint(len(stamps)) + stamps[0].to_bytes(8, "big")
        hot_from, hours0, start = self.hot_from[i], self.hours0[i], self.start_ms
        previous = stamps[0]
        for k, ts in enumerate(stamps):
            mask, head, tail = (self.bin_hot if ts >= hot_from else self.bin_healthy)[(base + k) % VARIANTS]
            hours = hours0 + (ts - start) // _MS_PER_MILLI_HOUR
            codes = self._codes(i, ts) if self.dtc_plan[i] is not None else ()
            out += varint((ts - previous) << 1)
            if codes:
                out += bytes([mask[0] | _DTC_MASK_BIT, mask[1]]) + head + _U32.pack(hours) + tail
                out.append(len(codes))
                for c in codes:
                    out += _U32.pack(c.spn << 13 | c.fmi << 8 | 1)
            else:
                out += mask + head + _U32.pack(hours) + tail
            previous = ts
        return bytes(out)

    def _note_due(self, i: int, stamps: list[int]) -> None:
        """Record the faults this message makes due: its publish time is the ground truth."""
        if i in self.overheat and i not in self.first_hot_ms:
            first_hot = next((ts for ts in stamps if ts >= self.hot_from[i]), None)
            if first_hot is not None:
                self.first_hot_ms[i] = first_hot
        for fault in list(self.pending[i]):
            if fault.kind == DTC:
                from_ms = self.start_ms + round(fault.at_s * 1000)
                due_ts = next((ts for ts in stamps if ts >= from_ms), None)
            else:
                first_hot = self.first_hot_ms.get(i)
                due_ts = None if first_hot is None else next(
                    (ts for ts in stamps if ts - first_hot >= self.sustain_ms), None)
            if due_ts is None:
                continue
            self.pending[i].remove(fault)
            self.due.append({"equipment_id": fault.equipment_id, "kind": fault.kind, "spn": fault.spn,
                             "fmi": fault.fmi, "at_s": fault.at_s, "due_ts_ms": due_ts,
                             "published_at": time.time()})
        if not self.pending[i]:
            del self.pending[i]


_TABLES: dict[bool, list[dict[str, float]]] = {}


def reading_values(i: int, r: int, ts_ms: int, start_ms: int, *, overheated: bool = False,
                   codes: tuple[FaultCode, ...] = ()) -> Reading:
    """Controller ``i``'s ``r``-th reading at ``ts_ms`` as a Reading, with the values the generator
    would publish (for writing a backlog straight to the database, and for tests)."""
    table = _TABLES.get(overheated)
    if table is None:
        table = _TABLES[overheated] = healthy_channels(overheated=overheated)
    hours = _HOURS_FROM_MILLI + (i * 7919) % _HOURS_SPREAD_MILLI + (ts_ms - start_ms) // _MS_PER_MILLI_HOUR
    return Reading(datetime.fromtimestamp(ts_ms / 1000, UTC), **table[((i * 97) % VARIANTS + r) % VARIANTS],
                   engine_hours=hours / 1000, fault_codes=codes)


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


class LoadCounts(TypedDict):
    """What run_load reports (see its return statement)."""

    published: int
    acked: int
    refused: int
    unacked: int
    throttled: int
    readings_published: int
    readings_acked: int
    connections: int
    achieved_msg_per_s: float
    started_at: float  # epoch seconds
    faults_due: list[dict[str, Any]]  # Payloads.due
    faults_not_due: int


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


def run_load(spec: LoadSpec, when_connected: Callable[[], None] | None = None) -> LoadCounts:
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
    published = throttled = 0
    next_index = 0
    pending_writes: set[_Connection] = set()
    start = time.monotonic()
    start_wall = time.time()
    payloads = Payloads(spec.equipment_ids, spec.codec, int(start_wall * 1000), spec.faults, spec.overheat_sustain_s)
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
            payload = payloads.payload(i, seqs[i], stamps)
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
        # The load window's start (epoch seconds), the injected faults that became due with the
        # publish time of the reading that made each due, and how many never did before the end.
        "started_at": start_wall, "faults_due": payloads.due, "faults_not_due": payloads.planned - len(payloads.due),
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
