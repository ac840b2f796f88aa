"""The load generator's own MQTT and core.mqtt.Client's fast paths, against the real broker."""

import threading
import time
import uuid
from collections import defaultdict
from datetime import UTC, datetime

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from core import topics
from core.paho_fast import new_client
from core.telemetry import decode_message
from core.telemetry_binary import decode_binary
from device_sim.load import LoadSpec, run_load
from tests.helpers import start_paho, stop_paho, wait_for


class Collector:
    """A manual-ack subscriber on core.mqtt.Client that acknowledges in batches, like ingest."""

    def __init__(self, mqtt_url: str, topic_filter: str, client_id: str | None = None) -> None:
        self.messages: list = []
        self.lock = threading.Lock()
        self.ready = threading.Event()
        self.client = new_client(client_id or f"collector-{uuid.uuid4().hex[:8]}", manual_ack=True)
        self.client.on_connect = lambda c, u, flags, *a: (
            self.ready.set() if flags.session_present else c.subscribe(topic_filter, qos=1))
        self.client.on_subscribe = lambda *a: self.ready.set()
        self.client.on_message = self._on_message
        start_paho(self.client, mqtt_url, clean_start=client_id is None,
                   session_expiry_s=60 if client_id else 0, receive_maximum=5000)
        assert self.ready.wait(10)

    def _on_message(self, client, userdata, message) -> None:
        with self.lock:
            self.messages.append(message)

    def ack_all(self) -> int:
        with self.lock:
            taken, self.messages = self.messages, []
        self.client.ack_many(m.mid for m in taken if m.qos == 1)
        return len(taken)

    def stop(self) -> None:
        stop_paho(self.client)


def test_the_load_generator_publishes_every_controller_in_order_and_counts_broker_acks(mqtt_url):
    root = f"load-{uuid.uuid4().hex[:8]}"
    ids = tuple(f"L{i:03d}" for i in range(40))
    received = defaultdict(list)
    collector = Collector(mqtt_url, f"{root}/v1/+/+")
    try:
        for codec, readings_per_msg in (("json", 1), ("binary", 5)):
            counts = run_load(LoadSpec(mqtt_url, root, ids, msg_per_s=400, readings_per_msg=readings_per_msg,
                                       duration_s=1.0, codec=codec, client_id_prefix=root))
            assert counts["published"] >= 300 and counts["acked"] == counts["published"], counts
            assert counts["connections"] == len(ids) and counts["refused"] == counts["unacked"] == 0
            published = counts["published"]
            wait_for(lambda n=published: len(collector.messages) == n, timeout_s=10, what="all messages")
            now = datetime.now(UTC)
            for message in collector.messages:
                equipment_id, kind = topics.parse_telemetry_topic(root, message.topic)
                decode = decode_binary if kind == topics.TELEMETRY_BINARY else decode_message
                decoded = decode(message.payload, now=now, future_tolerance_s=60)
                assert len(decoded.readings) == readings_per_msg and not decoded.rejected
                received[(codec, equipment_id)].append((decoded.seq, decoded.readings[0].ts))
            collector.ack_all()
        for (codec, equipment_id), seen in received.items():
            # Each controller is its own session: its messages arrive in order, numbered from 1.
            assert [seq for seq, _ in seen] == list(range(1, len(seen) + 1)), (codec, equipment_id)
            assert [ts for _, ts in seen] == sorted(ts for _, ts in seen)
        assert {e for _, e in received} == set(ids)
    finally:
        collector.stop()


def test_pooled_load_connections_are_unique_per_process(mqtt_url):
    root = f"load-{uuid.uuid4().hex[:8]}"
    ids = tuple(f"P{i:03d}" for i in range(30))
    results = [run_load(LoadSpec(mqtt_url, root, ids[k::2], 200, 1, 0.5, connections=3, client_id_prefix=root))
               for k in range(2)]
    assert all(r["connections"] == 3 and r["acked"] == r["published"] > 0 for r in results), results


def test_batch_acks_and_messages_with_properties_keep_their_meaning(mqtt_url):
    root = f"fast-{uuid.uuid4().hex[:8]}"
    collector = Collector(mqtt_url, f"{root}/#", client_id=f"{root}-collector")
    publisher = new_client(f"{root}-pub")
    start_paho(publisher, mqtt_url, clean_start=True)
    try:
        wait_for(publisher.is_connected, timeout_s=10, what="publisher")
        payloads = [f"m{i}".encode() * (1 + i % 50) for i in range(3000)]
        for payload in payloads:
            publisher.publish(f"{root}/bulk", payload, qos=1)
        properties = Properties(PacketTypes.PUBLISH)
        properties.UserProperty = ("origin", "test")
        publisher.publish(f"{root}/with-properties", b"tagged", qos=1, properties=properties)
        publisher.publish(f"{root}/qos0", b"fire and forget", qos=0)
        wait_for(lambda: len(collector.messages) == len(payloads) + 2, timeout_s=20, what="every message")
        by_topic = defaultdict(list)
        for message in collector.messages:
            by_topic[message.topic].append(message)
        assert [m.payload for m in by_topic[f"{root}/bulk"]] == payloads
        tagged = by_topic[f"{root}/with-properties"][0]
        assert tagged.payload == b"tagged" and tagged.properties.UserProperty == [("origin", "test")]
        assert by_topic[f"{root}/qos0"][0].qos == 0

        # Acknowledge the first 2,000 in one write, then leave: the broker keeps the session and sends
        # exactly the unacknowledged rest again on return.
        acked = by_topic[f"{root}/bulk"][:2000]
        collector.client.ack_many(m.mid for m in acked)
        time.sleep(0.5)
        collector.stop()
        collector = Collector(mqtt_url, f"{root}/#", client_id=f"{root}-collector")
        wait_for(lambda: len(collector.messages) >= 1001, timeout_s=10, what="the unacknowledged messages")
        time.sleep(0.5)
        again = [m.payload for m in collector.messages]
        assert sorted(again) == sorted(payloads[2000:] + [b"tagged"])
        collector.ack_all()
    finally:
        stop_paho(publisher)
        collector.stop()
