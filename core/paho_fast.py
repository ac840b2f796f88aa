"""paho-mqtt's client with a network path fit for tens of thousands of messages per second.

Only ``core.mqtt.Session`` builds these (and tests of the broker itself). paho spends most of a
busy consumer's time in system calls and per-message objects; this subclass buffers reads, handles
a burst of packets per wake-up, decodes plain PUBLISH packets in a few lines and acknowledges a
batch with one write. It overrides paho internals, hence the pinned minor version in pyproject.toml:
bench/ingest.py measures what it is worth (docs/scaling.md).
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Iterable

import paho.mqtt.client as paho

# One recv() fills the read buffer with up to this much: hundreds of small PUBLISH packets.
READ_CHUNK_BYTES = 256 * 1024
# Packets handled per wake-up of the network loop before it looks at its outgoing queue again.
READ_BURST_PACKETS = 1000
_PUBACK = 0x40


class _BufferedSocket:
    """A TCP socket whose reads are served from a buffer filled ``READ_CHUNK_BYTES`` at a time.

    paho reads every packet with several tiny recv() calls (one per header byte, then the body);
    at thousands of messages per second those system calls are most of a consumer's time. paho
    asks ``pending()`` (meant for TLS) before it waits in select(), so bytes already buffered
    are handled at once instead of waiting for the socket to become readable again.
    """

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._buffer = b""
        self._offset = 0

    def recv(self, size: int) -> bytes:
        if self._offset >= len(self._buffer):
            data = self._sock.recv(max(size, READ_CHUNK_BYTES))  # BlockingIOError when there is nothing
            if len(data) <= size:
                return data
            self._buffer, self._offset = data, 0
        start = self._offset
        self._offset = min(start + size, len(self._buffer))
        return self._buffer[start:self._offset]

    def pending(self) -> int:
        return len(self._buffer) - self._offset

    @property
    def raw(self) -> socket.socket:
        return self._sock

    def __getattr__(self, name: str):
        return getattr(self._sock, name)


class _LightMessage(paho.MQTTMessage):
    """A received message built without paho's per-message extras (a publish-tracking condition
    variable, an empty properties object): it is handed to ``on_message`` and dropped."""

    def __init__(self, mid: int, topic: bytes, qos: int, retain: bool, dup: bool, payload: bytes) -> None:
        self.timestamp = time.monotonic()
        self.state = paho.mqtt_ms_invalid
        self.mid = mid
        self._topic = topic
        self.qos = qos
        self.retain = retain
        self.dup = dup
        self.payload = payload
        self.properties = None  # ``info`` stays unset: nobody tracks the delivery of a received message


class Client(paho.Client):
    """paho's client with a network path fit for tens of thousands of messages per second.

    Reads are buffered (see ``_BufferedSocket``), one wake-up of the network loop handles up to
    ``READ_BURST_PACKETS`` packets instead of one, a QoS 0/1 PUBLISH without properties is decoded
    in a few lines, and ``ack_many`` acknowledges a whole batch with one write. Everything else,
    including reconnects, sessions and any other packet, is paho's own. It relies on paho's
    internals, hence the pinned paho minor version in pyproject.toml.
    """

    _topic_callbacks = False

    def message_callback_add(self, sub: str, callback) -> None:
        self._topic_callbacks = True
        super().message_callback_add(sub, callback)

    def _handle_publish(self) -> paho.MQTTErrorCode:
        command = self._in_packet["command"]
        packet = self._in_packet["packet"]
        qos = (command & 0x06) >> 1
        if qos > 1 or self._protocol != paho.MQTTv5 or self._topic_callbacks or len(packet) < 3:
            return super()._handle_publish()
        topic_end = 2 + int.from_bytes(packet[:2], "big")
        position = topic_end + 2 * qos  # the packet id, at QoS 1
        if position >= len(packet) or packet[position] != 0:  # properties present (or malformed)
            return super()._handle_publish()
        mid = int.from_bytes(packet[topic_end:position], "big") if qos else 0
        view = memoryview(packet)
        message = _LightMessage(mid, bytes(view[2:topic_end]), qos, bool(command & 0x01), bool(command & 0x08),
                                bytes(view[position + 1:]))
        with self._callback_mutex:
            on_message = self.on_message
        if on_message is not None:
            with self._in_callback_mutex:
                try:
                    on_message(self, self._userdata, message)
                except Exception as err:
                    self._easy_log(paho.MQTT_LOG_ERR, "Caught exception in on_message: %s", err)
                    if not self.suppress_exceptions:
                        raise
        if qos == 1 and not self._manual_ack:
            return self._send_puback(mid)
        return paho.MQTTErrorCode.MQTT_ERR_SUCCESS

    def _create_socket(self):
        sock = super()._create_socket()
        # TLS sockets buffer by themselves and have their own pending(); only plain TCP is wrapped.
        return _BufferedSocket(sock) if type(sock) is socket.socket else sock

    def loop_read(self, max_packets: int = 1) -> paho.MQTTErrorCode:
        for _ in range(max(max_packets, READ_BURST_PACKETS)):
            if self._sock is None:
                return paho.MQTTErrorCode.MQTT_ERR_NO_CONN
            rc = self._packet_read()
            if rc > 0:
                return self._loop_rc_handle(rc)
            if rc == paho.MQTTErrorCode.MQTT_ERR_AGAIN:
                break
        return paho.MQTTErrorCode.MQTT_ERR_SUCCESS

    def ack_many(self, mids: Iterable[int]) -> None:
        """Acknowledge QoS 1 messages received with ``manual_ack``: one write for all of them."""
        packets = b"".join(struct.pack("!BBH", _PUBACK, 2, mid) for mid in mids)
        if packets:
            self._packet_queue(_PUBACK, packets, 0, 0)


def new_client(client_id: str, *, manual_ack: bool = False) -> Client:
    client = Client(
        callback_api_version=paho.CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=paho.MQTTv5,
        manual_ack=manual_ack,
    )
    # Small packets (acks, commands) must not wait for Nagle's algorithm to meet a delayed ACK.
    client.on_socket_open = _no_delay
    return client


def _no_delay(client: paho.Client, userdata, sock) -> None:
    sock = sock.raw if isinstance(sock, _BufferedSocket) else sock
    if isinstance(sock, socket.socket) and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
