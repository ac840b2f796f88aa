"""MQTT for every IronSight client: broker addresses and ``Session``, the one owner of paho.

A ``Session`` is one MQTT 5 connection. It connects in the background and reconnects by itself,
subscribes again to its topic filters after every connect, and hands each received message either
to a typed callback in paho's network thread (for quick work) or to a bounded inbox that the
owner's own thread drains. ``ready`` says when it is connected and its subscriptions are granted.

The inbox is bounded by what the broker may send: a session that acknowledges its messages itself
(``manual_ack``) announces the inbox size as its MQTT 5 Receive Maximum, so the broker never has
more unacknowledged QoS 1 messages in flight to it than the inbox holds. QoS 0 messages, and QoS 1
messages that paho acknowledges on arrival, escape that flow control: beyond the inbox size they
are dropped, counted and logged rather than growing the inbox or stopping the network thread.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from core import metrics
from core.inbound import BadInputLog, InboundMessage
from core.paho_fast import new_client

log = logging.getLogger(__name__)

DEFAULT_PORT = 1883
KEEPALIVE_S = 30
DEFAULT_INBOX_MESSAGES = 1000
RECONNECT_MIN_DELAY_S = 1
RECONNECT_MAX_DELAY_S = 10
SUBSCRIPTION_QOS = 1


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    host: str
    port: int
    username: str | None = None
    password: str | None = None

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    def with_credentials(self, username: str | None, password: str | None) -> BrokerAddress:
        return BrokerAddress(self.host, self.port, username, password)


def parse_mqtt_url(url: str) -> BrokerAddress:
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "tcp"):
        raise ValueError(f"unsupported MQTT URL scheme {parts.scheme!r} (use mqtt://host:port)")
    if not parts.hostname:
        raise ValueError(f"MQTT URL without a host: {url!r}")
    return BrokerAddress(parts.hostname, parts.port or DEFAULT_PORT, parts.username, parts.password)


@dataclass(frozen=True, slots=True)
class Will:
    """What the broker publishes for the session when its connection is lost without DISCONNECT."""

    topic: str
    payload: bytes
    retain: bool = True


class Notice:
    """Something other than a message in a session's inbox; owners subclass it for their own wake-ups."""


InboxItem = InboundMessage | Notice
# What ``Session.publish`` returns in ``rc`` when the message is on its way (queued for sending).
PUBLISH_QUEUED = paho.MQTT_ERR_SUCCESS
# ... and when it was dropped because the session is not connected (QoS 0), or queued for later.
PUBLISH_NOT_CONNECTED = paho.MQTT_ERR_NO_CONN


def error_text(rc: int) -> str:
    return paho.error_string(rc)
MessageHandler = Callable[[InboundMessage], None]
# The broker answered a QoS 1 publish: its message id, and whether the broker refused it.
PublishHandler = Callable[[int, bool], None]


class Session:
    """One MQTT 5 connection; see the module docstring.

    ``on_message`` given: messages are handled in paho's network thread, which must stay quick
    (an exception there is counted and logged, never raised into paho). Otherwise they go to
    ``inbox``. ``on_ready`` runs in the network thread once the subscriptions of a new connection
    are granted, before ``ready`` is set; ``on_published`` runs there for every answered QoS 1 publish.
    """

    def __init__(
        self,
        address: BrokerAddress,
        client_id: str,
        *,
        name: str,
        subscriptions: Sequence[str] = (),
        on_message: MessageHandler | None = None,
        on_ready: Callable[[], None] | None = None,
        manual_ack: bool = False,
        clean_start: bool = True,
        session_expiry_s: int = 0,
        inbox_size: int = DEFAULT_INBOX_MESSAGES,
        on_published: PublishHandler | None = None,
        will: Will | None = None,
        max_inflight: int | None = None,
        metrics_label: str | None = None,
    ) -> None:
        self.address = address
        self.client_id = client_id
        self.name = name
        self.inbox: queue.Queue[InboxItem] = queue.Queue()
        self.inbox_size = inbox_size
        self.ready = threading.Event()
        self.refused = threading.Event()  # the broker refused the last connection attempt
        self.connect_failures = 0
        # With ``metrics_label`` (a worker's own sessions; never one per controller): core.metrics counts.
        self._metrics = (metrics.SessionMetrics(metrics_label, self.inbox.qsize, self.ready.is_set)
                         if metrics_label else None)
        self.dropped = BadInputLog(log, f"{name}: dropped", on_record=self._metrics.dropped if self._metrics else None)
        self.handler_errors = BadInputLog(log, f"{name}: message handler failed",
                                          on_record=self._metrics.handler_errors if self._metrics else None)
        self._subscriptions: list[str] = list(subscriptions)
        self._on_message_handler = on_message
        self._on_ready = on_ready
        self._manual_ack = manual_ack
        self._clean_start = clean_start
        self._session_expiry_s = session_expiry_s
        self._on_published = on_published
        self._lock = threading.Lock()
        self._client = new_client(client_id, manual_ack=manual_ack)
        if max_inflight is not None:
            self._client.max_inflight_messages_set(max_inflight)
        if will is not None:
            self._client.will_set(will.topic, will.payload, qos=1, retain=will.retain)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_paho_message
        if on_published is not None:
            self._client.on_publish = self._on_publish
        self._pending_subscribe: int | None = None
        self._stopping = False

    # --- lifecycle (the owner's thread) ---

    def start(self) -> Session:
        """Connect in the background and run paho's network thread; it reconnects by itself."""
        self._stopping = False
        if self.address.username:
            self._client.username_pw_set(self.address.username, self.address.password)
        properties = Properties(PacketTypes.CONNECT)
        if self._session_expiry_s:
            properties.SessionExpiryInterval = self._session_expiry_s
        if self._manual_ack:
            properties.ReceiveMaximum = self.inbox_size
        self._client.reconnect_delay_set(min_delay=RECONNECT_MIN_DELAY_S, max_delay=RECONNECT_MAX_DELAY_S)
        self._client.connect_async(self.address.host, self.address.port, keepalive=KEEPALIVE_S,
                                   clean_start=self._clean_start, properties=properties)
        self._client.loop_start()
        return self

    def stop(self) -> None:
        """Disconnect cleanly (the broker discards the will) and end the network thread."""
        self._stopping = True
        self._client.disconnect()
        self._client.loop_stop()
        self.ready.clear()

    def kill(self) -> None:
        """Drop the connection without DISCONNECT, as a power cut would: the broker publishes the will."""
        self._client.loop_stop()
        sock = self._client.socket()
        if sock is not None:
            sock.close()
        self.ready.clear()

    # --- talking (any thread) ---

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False,
                expiry_s: float | None = None) -> paho.MQTTMessageInfo:
        """Queue a message; with ``expiry_s`` the broker drops it rather than deliver it later."""
        properties = None
        if expiry_s is not None:
            properties = Properties(PacketTypes.PUBLISH)
            properties.MessageExpiryInterval = max(1, math.ceil(expiry_s))
        return self._client.publish(topic, payload, qos=qos, retain=retain, properties=properties)

    def subscribe(self, topic_filter: str) -> None:
        """Subscribe now (if connected) and again after every reconnect."""
        with self._lock:
            if topic_filter in self._subscriptions:
                return
            self._subscriptions.append(topic_filter)
        if self._client.is_connected():
            self._client.subscribe(topic_filter, qos=SUBSCRIPTION_QOS)

    def ack(self, message: InboundMessage) -> None:
        if message.qos > 0:
            self._client.ack(message.mid, message.qos)

    def ack_many(self, messages: Iterable[InboundMessage]) -> None:
        """Acknowledge messages taken from the inbox (``manual_ack``) with one write."""
        self._client.ack_many(m.mid for m in messages if m.qos > 0)

    def put(self, notice: Notice) -> None:
        """Wake the inbox's reader with the owner's own notice (never dropped)."""
        self.inbox.put(notice)

    def offer(self, message: InboundMessage) -> bool:
        """Put a received message into the inbox, or drop it (counted, logged) if the inbox is full.

        A QoS 1 message this session acknowledges itself is always taken: the broker's flow control
        (Receive Maximum = inbox size) already bounds how many of those can be waiting.
        """
        if not (self._manual_ack and message.qos > 0) and self.inbox.qsize() >= self.inbox_size:
            self.dropped.record("inbox_full", "%d waiting already (topic %s)", self.inbox_size, message.topic[:120])
            return False
        self.inbox.put(message)
        return True

    # --- paho's network thread ---

    def _on_connect(self, client: paho.Client, userdata: Any, flags: paho.ConnectFlags, reason_code: ReasonCode,
                    properties: Properties | None) -> None:
        if reason_code.is_failure:
            self.connect_failures += 1
            self.refused.set()
            if self._metrics:
                self._metrics.refusals.inc()
            log.error("%s: broker %s refused the connection: %s", self.name, self.address.url, reason_code)
            return
        self.refused.clear()
        if self._metrics:
            self._metrics.connects.inc()
        with self._lock:
            subscriptions = list(self._subscriptions)
        log.info("%s connected to %s (session present: %s)", self.name, self.address.url, flags.session_present)
        if subscriptions:
            _, mid = client.subscribe([(topic_filter, SUBSCRIPTION_QOS) for topic_filter in subscriptions])
            self._pending_subscribe = mid
        else:
            self._become_ready()

    def _on_subscribe(self, client: paho.Client, userdata: Any, mid: int, reason_codes: list[ReasonCode],
                      properties: Properties | None) -> None:
        refused = [str(code) for code in reason_codes if code.is_failure]
        if refused:
            log.error("%s: broker refused a subscription: %s", self.name, ", ".join(refused))
        if mid == self._pending_subscribe:
            self._pending_subscribe = None
            self._become_ready()

    def _become_ready(self) -> None:
        if self._on_ready is not None:
            try:
                self._on_ready()
            except Exception:
                log.exception("%s: on_ready failed", self.name)
        self.ready.set()

    def _on_disconnect(self, client: paho.Client, userdata: Any, flags: paho.DisconnectFlags,
                       reason_code: ReasonCode, properties: Properties | None) -> None:
        was_ready = self.ready.is_set()
        self.ready.clear()
        if self._metrics:
            self._metrics.disconnects.inc()
        if was_ready and not self._stopping:
            log.warning("%s disconnected from %s: %s", self.name, self.address.url, reason_code)

    def _on_paho_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        payload = message.payload
        inbound = InboundMessage(message.topic, payload if type(payload) is bytes else bytes(payload), message.mid,
                                 message.qos)
        handler = self._on_message_handler
        if handler is None:
            self.offer(inbound)
            return
        try:
            handler(inbound)
        except Exception as exc:
            self.handler_errors.record(type(exc).__name__, "%s on %s", exc, inbound.topic[:120])

    def _on_publish(self, client: paho.Client, userdata: Any, mid: int, reason_code: ReasonCode,
                    properties: Properties | None) -> None:
        if self._on_published is not None:
            self._on_published(mid, reason_code.is_failure)
