"""The embedded services against real processes: Mosquitto and iotcore (rumqttd) brokers, PostgreSQL."""

from __future__ import annotations

import os
import queue
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as paho
import psutil
import psycopg
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from core.mqtt import parse_mqtt_url
from core.paho_fast import new_client
from ironsight.embedded_broker import EmbeddedBroker, find_mosquitto, start_embedded_broker
from ironsight.embedded_postgres import start_embedded_postgres
from ironsight.processes import free_tcp_port

REPO_ROOT = Path(__file__).resolve().parents[1]
WAIT_S = 5.0

BROKER_KINDS = [
    pytest.param(
        "mosquitto",
        marks=pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto is not installed"),
    ),
    "iotcore",
]


# --------------------------------------------------------------------------------------------------
# MQTT helpers


class Client:
    """A paho MQTT 5 client (built by core.mqtt) that connects synchronously and queues what it gets."""

    def __init__(self, url: str, client_id: str | None = None) -> None:
        self.address = parse_mqtt_url(url)
        self.client_id = client_id or f"test-{uuid.uuid4().hex[:10]}"
        self.paho = new_client(self.client_id)
        self.messages: queue.Queue[paho.MQTTMessage] = queue.Queue()
        self.connected = threading.Event()
        self.subscribed = threading.Event()
        self.session_present: bool | None = None
        self.paho.on_connect = self._on_connect
        self.paho.on_subscribe = self._on_subscribe
        self.paho.on_message = self._on_message

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        self.session_present = flags.session_present
        if not reason_code.is_failure:
            self.connected.set()

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        assert all(not rc.is_failure for rc in reason_codes), reason_codes
        self.subscribed.set()

    def _on_message(self, client, userdata, message: paho.MQTTMessage) -> None:
        self.messages.put(message)

    def start(self, *, clean_start: bool = True, session_expiry_s: int = 0) -> Client:
        self.connected.clear()
        properties = Properties(PacketTypes.CONNECT)
        if session_expiry_s:
            properties.SessionExpiryInterval = session_expiry_s
        self.paho.connect(
            self.address.host, self.address.port, keepalive=30, clean_start=clean_start, properties=properties
        )
        self.paho.loop_start()
        assert self.connected.wait(WAIT_S), f"{self.client_id} did not connect"
        return self

    def subscribe(self, topic_filter: str, qos: int = 1) -> None:
        self.subscribed.clear()
        result, _ = self.paho.subscribe(topic_filter, qos=qos)
        assert result == paho.MQTT_ERR_SUCCESS
        assert self.subscribed.wait(WAIT_S), f"no SUBACK for {topic_filter}"

    def publish(self, topic: str, payload: bytes, qos: int = 1) -> None:
        info = self.paho.publish(topic, payload, qos=qos)
        info.wait_for_publish(WAIT_S)
        assert info.is_published(), f"PUBACK missing for {topic}"

    def receive(self, count: int, timeout: float = WAIT_S) -> list[paho.MQTTMessage]:
        received: list[paho.MQTTMessage] = []
        deadline = time.monotonic() + timeout
        while len(received) < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                received.append(self.messages.get(timeout=remaining))
            except queue.Empty:
                break
        return received

    def drain(self, quiet_s: float = 0.3) -> list[paho.MQTTMessage]:
        """Everything that arrives until nothing has for ``quiet_s``."""
        received: list[paho.MQTTMessage] = []
        while True:
            try:
                received.append(self.messages.get(timeout=quiet_s))
            except queue.Empty:
                return received

    def stop(self) -> None:
        self.paho.disconnect(reasoncode=ReasonCode(PacketTypes.DISCONNECT, "Normal disconnection"))
        self.paho.loop_stop()


@pytest.fixture(scope="module", params=BROKER_KINDS)
def broker(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[EmbeddedBroker]:
    started = start_embedded_broker(tmp_path_factory.mktemp(f"broker-{request.param}"), prefer=request.param)
    assert started.kind == request.param
    yield started
    started.stop()


@pytest.fixture
def clients() -> Iterator[list[Client]]:
    made: list[Client] = []
    yield made
    for client in made:
        try:
            client.stop()
        except Exception:  # best-effort teardown
            pass


def _topic_root() -> str:
    return f"ironsight-test/{uuid.uuid4().hex[:10]}"


# --------------------------------------------------------------------------------------------------
# Broker


def test_free_tcp_port_is_bindable() -> None:
    port = free_tcp_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_broker_delivers_qos1_to_mqtt5_client(broker: EmbeddedBroker, clients: list[Client]) -> None:
    assert broker.url == f"mqtt://127.0.0.1:{broker.port}"
    root = _topic_root()
    sub = Client(broker.url).start()
    pub = Client(broker.url).start()
    clients += [sub, pub]
    assert sub.paho.protocol == paho.MQTTv5
    sub.subscribe(f"{root}/#", qos=1)

    pub.publish(f"{root}/pump-1/readings", b'{"oil_temp_c": 71.5}', qos=1)

    (message,) = sub.receive(1)
    assert message.topic == f"{root}/pump-1/readings"
    assert message.payload == b'{"oil_temp_c": 71.5}'
    assert message.qos == 1


def test_broker_shares_a_subscription_between_group_members(
    broker: EmbeddedBroker, clients: list[Client]
) -> None:
    root = _topic_root()
    members = [Client(broker.url).start() for _ in range(2)]
    pub = Client(broker.url).start()
    clients += [*members, pub]
    for member in members:
        member.subscribe(f"$share/g/{root}/#", qos=1)

    sent = [f"m{i}".encode() for i in range(20)]
    for i, payload in enumerate(sent):
        pub.publish(f"{root}/excavator-{i % 3}/readings", payload, qos=1)

    per_member = [[m.payload for m in member.drain()] for member in members]
    everything = [payload for got in per_member for payload in got]
    assert sorted(everything) == sorted(sent), "each message goes to exactly one group member"
    assert all(per_member), f"both members get a share: {[len(got) for got in per_member]}"


def test_broker_queues_qos1_for_an_offline_persistent_session(
    broker: EmbeddedBroker, clients: list[Client]
) -> None:
    root = _topic_root()
    client_id = f"ingest-{uuid.uuid4().hex[:8]}"
    consumer = Client(broker.url, client_id).start(clean_start=False, session_expiry_s=300)
    consumer.subscribe(f"{root}/#", qos=1)
    consumer.stop()

    pub = Client(broker.url).start()
    clients.append(pub)
    sent = [f"offline-{i}".encode() for i in range(5)]
    for payload in sent:
        pub.publish(f"{root}/crane-7/readings", payload, qos=1)

    again = Client(broker.url, client_id)
    clients.append(again)
    again.start(clean_start=False, session_expiry_s=300)  # no new SUBSCRIBE: the session has it
    assert again.session_present is True
    received = again.receive(len(sent))
    assert [m.payload for m in received] == sent
    assert all(m.qos == 1 for m in received)


def test_broker_stop_ends_the_process_and_is_idempotent(tmp_path: Path) -> None:
    broker = start_embedded_broker(tmp_path, prefer="iotcore")
    process = psutil.Process(broker.pid)
    # Own session: a Ctrl-C in the terminal reaches the supervisor, not the broker.
    assert os.getsid(process.pid) != os.getsid(0)
    broker.stop()
    broker.stop()
    assert not process.is_running()
    assert not broker.running
    with pytest.raises(ConnectionError):
        socket.create_connection(("127.0.0.1", broker.port), timeout=0.5).close()


def test_broker_refuses_a_port_in_use(tmp_path: Path, broker: EmbeddedBroker) -> None:
    with pytest.raises(RuntimeError, match="in use"):
        start_embedded_broker(tmp_path, port=broker.port, prefer=broker.kind)


@pytest.mark.parametrize("kind", BROKER_KINDS)
def test_broker_dies_with_its_parent(tmp_path: Path, kind: str) -> None:
    script = textwrap.dedent(
        f"""
        import sys, time
        from pathlib import Path
        from ironsight.embedded_broker import start_embedded_broker
        broker = start_embedded_broker(Path({str(tmp_path)!r}), prefer={kind!r})
        print(broker.pid, flush=True)
        time.sleep(60)
        """
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, env=env, text=True)
    try:
        assert parent.stdout is not None
        broker_pid = int(parent.stdout.readline())
        broker_process = psutil.Process(broker_pid)
        parent.send_signal(signal.SIGKILL)  # no atexit, no cleanup: only the kernel can tell the child
        parent.wait(WAIT_S)
        try:
            broker_process.wait(WAIT_S)
        except psutil.TimeoutExpired:
            broker_process.kill()
            pytest.fail(f"the {kind} broker outlived its parent")
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()


@pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto is not installed")
def test_mosquitto_keeps_queued_messages_across_a_restart(tmp_path: Path) -> None:
    root = _topic_root()
    client_id = f"ingest-{uuid.uuid4().hex[:8]}"
    broker = start_embedded_broker(tmp_path, prefer="mosquitto")
    try:
        consumer = Client(broker.url, client_id).start(clean_start=False, session_expiry_s=3600)
        consumer.subscribe(f"{root}/#", qos=1)
        consumer.stop()
        pub = Client(broker.url).start()
        pub.publish(f"{root}/pump-2/readings", b"kept", qos=1)
        pub.stop()
    finally:
        broker.stop()

    broker = start_embedded_broker(tmp_path, port=broker.port, prefer="mosquitto")
    consumer = Client(broker.url, client_id)
    try:
        consumer.start(clean_start=False, session_expiry_s=3600)
        assert consumer.session_present is True
        assert [m.payload for m in consumer.receive(1)] == [b"kept"]
    finally:
        consumer.stop()
        broker.stop()


# --------------------------------------------------------------------------------------------------
# PostgreSQL


def _postgres_processes(pgdata: Path) -> list[psutil.Process]:
    """The postmaster and all its children: every postgres process works in its data directory."""
    found = []
    for proc in psutil.process_iter(["name"]):
        if proc.info["name"] != "postgres":
            continue
        try:
            if Path(proc.cwd()) == pgdata:
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def test_postgres_starts_stops_and_keeps_its_data(tmp_path: Path) -> None:
    pg = start_embedded_postgres(tmp_path)
    pgdata = tmp_path / "postgres"
    try:
        assert (pgdata / "PG_VERSION").exists()
        assert len(_postgres_processes(pgdata)) > 1  # postmaster, checkpointer, ...
        with psycopg.connect(pg.url, autocommit=True) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
            conn.execute("CREATE TABLE kept (id int PRIMARY KEY, note text)")
            conn.execute("INSERT INTO kept VALUES (1, 'survives a restart')")
    finally:
        pg.stop()
    pg.stop()  # a second stop is a no-op
    assert not pg.running
    assert _postgres_processes(pgdata) == []
    assert not (pgdata / "postmaster.pid").exists()

    pg = start_embedded_postgres(tmp_path)
    try:
        with psycopg.connect(pg.url) as conn:
            assert conn.execute("SELECT note FROM kept").fetchall() == [("survives a restart",)]
    finally:
        pg.stop()
    assert _postgres_processes(pgdata) == []
