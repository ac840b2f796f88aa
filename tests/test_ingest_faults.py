"""Ingest survives its own death, the database going away, and a broker restart under load: every
reading the broker acknowledged ends up in ``readings`` exactly once."""

import os
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from core import topics
from core.paho_fast import new_client
from core.register import EquipmentRecord, register_equipment
from core.settings import Settings
from core.telemetry import Reading, encode_message
from ingest.worker import IngestWorker
from ironsight.embedded_broker import start_embedded_broker
from tests.helpers import TcpProxy, start_paho, stop_paho, wait_for

# The outage the ingest path must ride through (the database down for a minute under load).
DB_OUTAGE_S = 60.0


class Load:
    """Publishes one reading per message at a steady rate from a thread; remembers what was acked."""

    def __init__(self, mqtt_url: str, topic: str, client_id: str, rate_per_s: float = 200.0) -> None:
        self.topic = topic
        self.interval_s = 1.0 / rate_per_s
        self.acked: list[datetime] = []
        self.stop = threading.Event()
        self.paused = threading.Event()
        self.client = new_client(client_id)
        self.client.max_queued_messages_set(0)
        self._connected = threading.Event()
        self.client.on_connect = lambda *a: self._connected.set()
        start_paho(self.client, mqtt_url, clean_start=True)
        assert self._connected.wait(10)
        self._start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=30)  # ms precision on the wire
        self._pending: list = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        i = 0
        while not self.stop.is_set():
            if self.paused.is_set():
                self._collect()
                time.sleep(self.interval_s)
                continue
            ts = self._start + timedelta(milliseconds=10 * i)
            info = self.client.publish(self.topic, encode_message(i, [Reading(ts=ts, oil_temp_c=80.0)]), qos=1)
            self._pending.append((ts, info))
            i += 1
            self._collect()
            time.sleep(self.interval_s)

    def _collect(self) -> None:
        still = []
        for ts, info in self._pending:
            try:
                published = info.is_published()
            except (RuntimeError, ValueError):  # published while the broker was away: never acknowledged
                continue
            if published:
                self.acked.append(ts)
            else:
                still.append((ts, info))
        self._pending = still

    def finish(self, drain_s: float = 15.0) -> None:
        self.stop.set()
        self.thread.join()
        deadline = time.monotonic() + drain_s
        while self._pending and time.monotonic() < deadline:
            self._collect()
            time.sleep(0.1)
        stop_paho(self.client)


def stored_of(database_url: str, equipment_id: str) -> list[datetime]:
    with psycopg.connect(database_url) as conn:
        return [r[0] for r in conn.execute("SELECT ts FROM readings WHERE equipment_id = %s", (equipment_id,))]


def assert_exactly_once(database_url: str, equipment_id: str, acked: list[datetime]) -> None:
    assert len(acked) > 100, "the load did not run"
    wait_for(lambda: set(acked) - set(stored_of(database_url, equipment_id)) == set(), timeout_s=60,
             what="every acknowledged reading stored")
    stored = stored_of(database_url, equipment_id)
    assert len(stored) == len(set(stored))  # the primary key makes this hold; asserted all the same


@pytest.fixture
def fleet(conn):
    register_equipment(conn, [EquipmentRecord("EX-1", "S-1", "EX210", "excavator", "acme")])


def test_a_killed_worker_restarted_loses_and_duplicates_nothing(settings, fleet, tmp_path):
    env = {**os.environ, "IRONSIGHT_DATABASE_URL": settings.database_url, "IRONSIGHT_MQTT_URL": settings.mqtt_url,
           "IRONSIGHT_TOPIC_ROOT": settings.topic_root, "IRONSIGHT_LOG_LEVEL": "WARNING"}
    command = [sys.executable, "-m", "ironsight", "ingest", "--name", "killable"]

    def start_worker() -> subprocess.Popen:
        worker = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1.5)  # connected and subscribed
        return worker

    worker = start_worker()
    load = Load(settings.mqtt_url, topics.telemetry_topic(settings.topic_root, "EX-1"), f"{settings.topic_root}-load")
    try:
        wait_for(lambda: len(stored_of(settings.database_url, "EX-1")) > 200, timeout_s=20, what="ingest running")
        worker.send_signal(signal.SIGKILL)
        worker.wait()
        time.sleep(2.0)  # the broker queues for the dead worker's persistent session meanwhile
        worker = start_worker()
        time.sleep(2.0)
        load.finish()
        assert_exactly_once(settings.database_url, "EX-1", load.acked)
    finally:
        worker.terminate()
        worker.wait(10)


def test_the_database_away_for_a_minute_under_load(settings, fleet, background):
    params = conninfo_to_dict(settings.database_url)
    proxy = TcpProxy(params.get("host") or "127.0.0.1", int(params.get("port") or 5432))
    through_proxy = make_conninfo(**{**params, "host": "127.0.0.1", "port": str(proxy.port)})
    worker = IngestWorker(settings, through_proxy, settings.mqtt_url, name="outage")
    background.start(worker.run, "ingest")
    assert worker.connected.wait(10)
    load = Load(settings.mqtt_url, topics.telemetry_topic(settings.topic_root, "EX-1"), f"{settings.topic_root}-load")
    try:
        wait_for(lambda: len(stored_of(settings.database_url, "EX-1")) > 200, timeout_s=20, what="ingest running")
        proxy.cut()
        before = len(stored_of(settings.database_url, "EX-1"))
        time.sleep(DB_OUTAGE_S)
        assert len(stored_of(settings.database_url, "EX-1")) == before  # nothing got through: it was down
        proxy.restore()
        time.sleep(3.0)
        load.finish()
        assert_exactly_once(settings.database_url, "EX-1", load.acked)
        assert len(load.acked) > DB_OUTAGE_S * 100  # the load kept being acknowledged during the outage
    finally:
        proxy.close()


def test_a_broker_restart_under_load(database_url, fleet, background, tmp_path):
    broker = start_embedded_broker(tmp_path / "broker")
    settings = Settings(database_url=database_url, mqtt_url=broker.url, topic_root="restart-test")
    try:
        worker = IngestWorker(settings, database_url, broker.url, name="restart")
        background.start(worker.run, "ingest")
        assert worker.connected.wait(10)
        load = Load(broker.url, topics.telemetry_topic(settings.topic_root, "EX-1"), "restart-test-load")
        wait_for(lambda: len(stored_of(database_url, "EX-1")) > 200, timeout_s=20, what="ingest running")
        port = broker.port
        # Mosquitto (2.0.11 here) restores persistent sessions and their queued messages, but not
        # their shared subscriptions: until ingest has subscribed again, new telemetry has no
        # subscriber and is dropped. The load pauses over that window (docs/scaling.md).
        load.paused.set()
        broker.stop()
        time.sleep(1.0)
        broker = start_embedded_broker(tmp_path / "broker", port=port)
        wait_for(worker.connected.is_set, timeout_s=60, what="the worker reconnected")
        time.sleep(0.5)  # its subscriptions acknowledged
        load.paused.clear()
        time.sleep(3.0)
        load.finish()
        assert_exactly_once(database_url, "EX-1", load.acked)
    finally:
        broker.stop()
