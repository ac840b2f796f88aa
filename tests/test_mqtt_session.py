"""core.mqtt.Session, the one owner of paho: against the real broker, and its inbox policy."""

from __future__ import annotations

import uuid

from core import mqtt
from core.inbound import InboundMessage
from tests.helpers import Publisher, TcpProxy, wait_for


def new_root() -> str:
    return f"session-{uuid.uuid4().hex[:8]}"


def test_subscriptions_come_back_after_the_connection_is_lost(mqtt_url):
    root = new_root()
    address = mqtt.parse_mqtt_url(mqtt_url)
    proxy = TcpProxy(address.host, address.port)
    session = mqtt.Session(mqtt.BrokerAddress("127.0.0.1", proxy.port), f"{root}-sub", name="test session",
                           subscriptions=[f"{root}/a"])
    publisher = Publisher(mqtt_url, f"{root}-pub")
    try:
        session.start()
        assert session.ready.wait(10)
        session.subscribe(f"{root}/b")  # added while connected: restored too
        wait_for(lambda: _publish_and_receive(publisher, session, f"{root}/b"), timeout_s=5, what="b before")
        proxy.cut()
        wait_for(lambda: not session.ready.is_set(), timeout_s=60, what="the session noticed the cut")
        proxy.restore()
        assert session.ready.wait(30), "no reconnect"
        for topic in (f"{root}/a", f"{root}/b"):
            assert _publish_and_receive(publisher, session, topic), f"{topic} not subscribed after reconnect"
    finally:
        session.stop()
        publisher.close()
        proxy.close()


def _publish_and_receive(publisher: Publisher, session: mqtt.Session, topic: str) -> bool:
    publisher.publish(topic, b"hello")
    try:
        item = session.inbox.get(timeout=2)
    except Exception:
        return False
    return isinstance(item, InboundMessage) and item.topic == topic and item.payload == b"hello"


def test_receive_maximum_bounds_what_a_manual_ack_session_is_sent(mqtt_url):
    root = new_root()
    session = mqtt.Session(mqtt.parse_mqtt_url(mqtt_url), f"{root}-sub", name="test session",
                           subscriptions=[f"{root}/#"], manual_ack=True, inbox_size=5)
    publisher = Publisher(mqtt_url, f"{root}-pub")
    try:
        session.start()
        assert session.ready.wait(10)
        for i in range(20):
            publisher.publish(f"{root}/m", str(i).encode())
        wait_for(lambda: session.inbox.qsize() == 5, timeout_s=5, what="the first five")
        assert session.inbox.qsize() == 5 and session.dropped.by_reason == {}
        received: list[bytes] = []
        while len(received) < 20:
            item = session.inbox.get(timeout=5)
            assert isinstance(item, InboundMessage)
            received.append(item.payload)
            session.ack(item)
        assert received == [str(i).encode() for i in range(20)]
    finally:
        session.stop()
        publisher.close()


def test_a_failing_handler_costs_its_message_only(mqtt_url, caplog):
    root = new_root()
    handled: list[bytes] = []

    def handle(message: InboundMessage) -> None:
        if message.payload == b"bad":
            raise ValueError("cannot read this")
        handled.append(message.payload)

    session = mqtt.Session(mqtt.parse_mqtt_url(mqtt_url), f"{root}-sub", name="test session",
                           subscriptions=[f"{root}/#"], on_message=handle)
    publisher = Publisher(mqtt_url, f"{root}-pub")
    try:
        session.start()
        assert session.ready.wait(10)
        with caplog.at_level("WARNING", logger="core.mqtt"):
            for payload in (b"one", b"bad", b"two", b"bad"):
                publisher.publish(f"{root}/m", payload)
            wait_for(lambda: handled == [b"one", b"two"], timeout_s=5, what="the good messages")
        assert session.handler_errors.by_reason == {"ValueError": 2}
        assert sum("message handler failed" in r.getMessage() for r in caplog.records) == 1
    finally:
        session.stop()
        publisher.close()


def test_floods_that_escape_flow_control_are_dropped_counted_and_logged(caplog):
    address = mqtt.parse_mqtt_url("mqtt://127.0.0.1:1")
    manual = mqtt.Session(address, "manual", name="manual", manual_ack=True, inbox_size=3)
    auto = mqtt.Session(address, "auto", name="auto", inbox_size=3)
    with caplog.at_level("WARNING", logger="core.mqtt"):
        for _ in range(5):
            manual.offer(InboundMessage("t", b"{}", 0, 0))
        # QoS 1 with manual ack is bounded by the broker's Receive Maximum, never dropped here.
        assert manual.offer(InboundMessage("t", b"{}", 7, 1))
        for mid in range(5):
            auto.offer(InboundMessage("t", b"{}", mid, 1))  # paho acknowledged these already
    assert manual.dropped.by_reason == {"inbox_full": 2} and manual.inbox.qsize() == 4
    assert auto.dropped.by_reason == {"inbox_full": 2} and auto.inbox.qsize() == 3
    assert sum("inbox_full" in r.getMessage() for r in caplog.records) == 2  # the first of each session
