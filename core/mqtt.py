"""The one place that builds paho-mqtt clients: MQTT 5, addresses from ``mqtt://`` URLs."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

DEFAULT_PORT = 1883
KEEPALIVE_S = 30


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    host: str
    port: int
    username: str | None = None
    password: str | None = None

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"


def parse_mqtt_url(url: str) -> BrokerAddress:
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "tcp"):
        raise ValueError(f"unsupported MQTT URL scheme {parts.scheme!r} (use mqtt://host:port)")
    if not parts.hostname:
        raise ValueError(f"MQTT URL without a host: {url!r}")
    return BrokerAddress(parts.hostname, parts.port or DEFAULT_PORT, parts.username, parts.password)


def new_client(client_id: str, *, manual_ack: bool = False) -> paho.Client:
    client = paho.Client(
        callback_api_version=paho.CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=paho.MQTTv5,
        manual_ack=manual_ack,
    )
    # Small packets (acks, commands) must not wait for Nagle's algorithm to meet a delayed ACK.
    client.on_socket_open = _no_delay
    return client


def _no_delay(client: paho.Client, userdata, sock) -> None:
    if isinstance(sock, socket.socket) and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def start(
    client: paho.Client,
    address: BrokerAddress,
    *,
    clean_start: bool,
    session_expiry_s: int = 0,
    receive_maximum: int | None = None,
) -> None:
    """Connect in the background and run paho's network thread; it reconnects by itself.

    The caller learns of the connection in its ``on_connect`` callback.
    """
    if address.username:
        client.username_pw_set(address.username, address.password)
    properties = Properties(PacketTypes.CONNECT)
    if session_expiry_s:
        properties.SessionExpiryInterval = session_expiry_s
    if receive_maximum:
        properties.ReceiveMaximum = receive_maximum
    client.reconnect_delay_set(min_delay=1, max_delay=10)
    client.connect_async(
        address.host, address.port, keepalive=KEEPALIVE_S, clean_start=clean_start, properties=properties
    )
    client.loop_start()


def stop(client: paho.Client) -> None:
    client.disconnect()
    client.loop_stop()
