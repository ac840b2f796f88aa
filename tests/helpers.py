"""Small helpers shared by the tests that talk to real services."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from core import mqtt

T = TypeVar("T")


def wait_for(probe: Callable[[], T], *, timeout_s: float, interval_s: float = 0.2, what: str = "condition") -> T:
    """Poll ``probe`` until it returns something truthy; fail with ``what`` after the timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what} (last: {value!r})")
        time.sleep(interval_s)


class Publisher:
    """An MQTT session that publishes at QoS 1 and waits for every PUBACK."""

    def __init__(self, mqtt_url: str, client_id: str, *, subscriptions: Sequence[str] = (),
                 on_message: mqtt.MessageHandler | None = None) -> None:
        self.session = mqtt.Session(mqtt.parse_mqtt_url(mqtt_url), client_id, name=client_id,
                                    subscriptions=subscriptions, on_message=on_message).start()
        assert self.session.ready.wait(10), "publisher could not connect"

    def publish(self, topic: str, payload: bytes) -> None:
        info = self.session.publish(topic, payload, qos=1)
        info.wait_for_publish(timeout=10)
        assert info.is_published(), f"no PUBACK for {topic}"

    def close(self) -> None:
        self.session.stop()


def start_paho(client: paho.Client, mqtt_url: str, *, clean_start: bool = True, session_expiry_s: int = 0,
               receive_maximum: int | None = None) -> None:
    """Connect a bare paho client (for tests of the broker's own behaviour) and run its network thread."""
    address = mqtt.parse_mqtt_url(mqtt_url)
    properties = Properties(PacketTypes.CONNECT)
    if session_expiry_s:
        properties.SessionExpiryInterval = session_expiry_s
    if receive_maximum:
        properties.ReceiveMaximum = receive_maximum
    if address.username:
        client.username_pw_set(address.username, address.password)
    client.connect_async(address.host, address.port, keepalive=30, clean_start=clean_start, properties=properties)
    client.loop_start()


def stop_paho(client: paho.Client) -> None:
    client.disconnect()
    client.loop_stop()


# Credentials every test API server is started with (see ApiServer).
ADMIN_USERNAME = "admin"
ADMIN_PASSWORD = "test-admin-password"
ALARMS_API_KEY = "isk_test-alarms-service-key"


class ApiServer:
    """The real API served by uvicorn on a free local port, in a thread.

    It starts with a bootstrap admin and the alarms worker's key (ADMIN_PASSWORD, ALARMS_API_KEY)
    unless the settings name their own. ``client()`` is an httpx client on ``/api/v1`` that sends
    the admin's token; ``user(role, customer=…)`` creates an account and returns a client for it.
    """

    def __init__(self, settings, database_url: str) -> None:
        import socket

        import uvicorn
        from pydantic import SecretStr

        from api.app import create_app

        update = {}
        if settings.admin_password is None:
            update["admin_password"] = SecretStr(ADMIN_PASSWORD)
        if settings.alarms_api_key is None:
            update["alarms_api_key"] = SecretStr(ALARMS_API_KEY)
        self.settings = settings.model_copy(update=update) if update else settings
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        config = uvicorn.Config(create_app(self.settings, database_url), host="127.0.0.1", port=self.port,
                                log_level="warning", proxy_headers=False)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="api", daemon=True)
        self.thread.start()
        wait_for(lambda: self.server.started, timeout_s=15, what="API start")
        self.url = f"http://127.0.0.1:{self.port}"
        self.service_key = self.settings.alarms_api_key.get_secret_value()
        self.admin_token = self.login(self.settings.admin_username, self.settings.admin_password.get_secret_value())
        self.headers = {"Authorization": f"Bearer {self.admin_token}"}
        self._clients: list = []

    def login(self, username: str, password: str) -> str:
        import httpx

        response = httpx.post(self.url + "/api/v1/auth/token", data={"username": username, "password": password},
                              timeout=10)
        assert response.status_code == 200, response.text
        return response.json()["access_token"]

    def client(self, token: str | None = None):
        """An httpx client on /api/v1 sending ``token`` (default: the admin's); closed with the server."""
        import httpx

        client = httpx.Client(base_url=self.url + "/api/v1", timeout=10,
                              headers={"Authorization": f"Bearer {token or self.admin_token}"})
        self._clients.append(client)
        return client

    def user(self, role: str, *, customer: str | None = None, username: str | None = None):
        """Create an account with ``role`` (and ``customer``) and return a client logged in as it."""
        import uuid

        username = username or f"{role}-{uuid.uuid4().hex[:8]}"
        password = f"pw-{uuid.uuid4().hex}"
        created = self.client().post("/users", json={"username": username, "role": role, "password": password,
                                                     "customer": customer})
        assert created.status_code == 201, created.text
        return self.client(self.login(username, password))

    def close(self) -> None:
        for client in self._clients:
            client.close()
        self.server.should_exit = True
        self.thread.join(timeout=10)


class TcpProxy:
    """A TCP forwarder that a test can cut (every connection dropped, new ones refused) and restore:
    a database or broker becoming unreachable, without touching the server itself."""

    def __init__(self, target_host: str, target_port: int) -> None:
        import socket

        # A host that is a directory is PostgreSQL's Unix socket directory (the embedded server's).
        self._target = (f"{target_host}/.s.PGSQL.{target_port}" if target_host.startswith("/")
                        else (target_host, target_port))
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self.port = self._listener.getsockname()[1]
        self._cut = threading.Event()
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._sockets: list = []
        threading.Thread(target=self._accept, name="proxy-accept", daemon=True).start()

    def _accept(self) -> None:
        import socket

        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self._cut.is_set():
                client.close()
                continue
            try:
                if isinstance(self._target, str):
                    upstream = socket.socket(socket.AF_UNIX)
                    upstream.connect(self._target)
                else:
                    upstream = socket.create_connection(self._target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source, sink) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                try:
                    sock.close()
                except OSError:
                    pass

    def cut(self) -> None:
        import socket

        self._cut.set()
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def restore(self) -> None:
        self._cut.clear()

    def close(self) -> None:
        self._closed.set()
        self.cut()
        self._listener.close()


def drain_outbox(round_: Callable, conn, table: str, consumer: str | Callable[[], tuple[str, int] | None], *,
                 timeout_s: float = 15.0) -> None:
    """Run a consumer's rounds until its cursor reaches the newest row of ``table``.

    ``consumer`` is the name of a consumer with one stored cursor, or a sharded consumer's
    ``position`` (the oldest cursor of the shards it owns, kept in memory between checkpoints).
    Rows become visible to a consumer only once no older transaction is running anywhere on the
    server (core.outbox), so a single round may legitimately see nothing yet; poll instead.
    """
    def position() -> int:
        if callable(consumer):
            cursor = consumer()
            return cursor[1] if cursor else 0
        row = conn.execute("SELECT last_id FROM consumer_cursors WHERE consumer = %s", (consumer,)).fetchone()
        return row[0] if row else 0

    def caught_up() -> bool:
        round_(conn)
        newest = conn.execute(f"SELECT coalesce(max(id), 0) FROM {table}").fetchone()[0]
        reached = position()
        conn.commit()
        return reached >= newest

    name = consumer if isinstance(consumer, str) else "the consumer"
    wait_for(caught_up, timeout_s=timeout_s, interval_s=0.05, what=f"{name} to process {table}")


def at_once_in_transactions(database_url: str, workers: int, action: Callable) -> list:
    """Run ``action(connection)`` from ``workers`` threads released together, each in its own
    connection and transaction; return what each returned."""
    import psycopg

    barrier = threading.Barrier(workers)
    results: list = []

    def run() -> None:
        with psycopg.connect(database_url) as own:
            barrier.wait()
            with own.transaction():
                results.append(action(own))

    threads = [threading.Thread(target=run) for _ in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


class SecuredMosquitto:
    """A Mosquitto of the test's own, run with the production config (deploy/mosquitto/) on a free
    local port, its password, ACL and pid files in ``directory``. Stopped by its pid."""

    CONFIG = __import__("pathlib").Path(__file__).resolve().parents[1] / "deploy" / "mosquitto" / "mosquitto.conf"

    def __init__(self, directory) -> None:
        import os
        import subprocess

        from ironsight.embedded_broker import find_mosquitto
        from ironsight.processes import free_tcp_port

        executable = find_mosquitto()
        assert executable, "mosquitto is not installed"
        self.directory = directory
        self.auth_dir = directory / "auth"
        self.auth_dir.mkdir(parents=True, exist_ok=True)
        (directory / "data").mkdir(exist_ok=True)
        for name in ("passwd", "acl"):
            (self.auth_dir / name).touch()
        self.port = free_tcp_port()
        self.pid_file = self.auth_dir / "mosquitto.pid"
        replacements = {
            "listener": f"listener {self.port} 127.0.0.1",
            "persistence_location": f"persistence_location {directory / 'data'}/",
            "log_dest": "log_dest stderr",
            "password_file": f"password_file {self.auth_dir / 'passwd'}",
            "acl_file": f"acl_file {self.auth_dir / 'acl'}",
            "pid_file": f"pid_file {self.pid_file}",
        }
        lines = []
        for line in self.CONFIG.read_text().splitlines():
            key = line.split(" ", 1)[0]
            lines.append(replacements.get(key, line))
        if os.geteuid() == 0:
            lines.append("user root")  # the test's temporary files belong to root
        self.config = directory / "mosquitto.conf"
        self.config.write_text("\n".join(lines) + "\n")
        self.log = open(directory / "mosquitto.log", "wb")  # noqa: SIM115 - closed in close()
        self.process = subprocess.Popen([executable, "-c", str(self.config)], stdout=self.log,
                                        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        from ironsight.processes import port_accepts

        wait_for(lambda: port_accepts(self.port) or self.process.poll() is not None, timeout_s=10,
                 interval_s=0.05, what="mosquitto to listen")
        assert self.process.poll() is None, (directory / "mosquitto.log").read_text()

    def url(self, username: str | None = None, password: str | None = None) -> str:
        credentials = f"{username}:{password}@" if username else ""
        return f"mqtt://{credentials}127.0.0.1:{self.port}"

    def log_text(self) -> str:
        return (self.directory / "mosquitto.log").read_text(errors="replace")

    def close(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except Exception:
            self.process.kill()
            self.process.wait()
        self.log.close()


class Tenant:
    """One customer's seeded data (see seed_tenant)."""

    def __init__(self, customer: str, equipment_id: str, serial: str, alarm_id: int, fault_id: int,
                 ticket_id: int, open_ticket_id: int) -> None:
        self.customer = customer
        self.equipment_id = equipment_id
        self.serial = serial
        self.alarm_id = alarm_id
        self.fault_id = fault_id
        self.ticket_id = ticket_id
        self.open_ticket_id = open_ticket_id


def seed_tenant(conn, customer: str, equipment_id: str, *, minutes: int = 120, step_s: int = 60,
                model: str = "EX210") -> Tenant:
    """A customer with one machine: readings up to now (moving, fuel burning, engine hours growing,
    a J1939 fault code), an open fault with its alarm, a resolved ticket awaiting its survey and an
    open one with an engineer and parts."""
    from datetime import UTC, datetime, timedelta

    from alarms.lifecycle import raise_or_reopen
    from core.register import EquipmentRecord, register_equipment
    from core.telemetry import FaultCode, Reading
    from ingest.writer import Batch, BatchWriter
    from tickets import service
    from tickets.resources import Engineer, Station, Vehicle, upsert_engineer, upsert_station, upsert_vehicle

    serial = f"SN-{equipment_id}"
    register_equipment(conn, [EquipmentRecord(equipment_id, serial, model, "excavator", customer)])
    now = datetime.now(UTC).replace(microsecond=0)
    start = now - timedelta(minutes=minutes)
    steps = minutes * 60 // step_s
    readings = []
    for i in range(steps):
        working = (i // 10) % 2 == 0
        readings.append((equipment_id, Reading(
            ts=start + timedelta(seconds=(i + 1) * step_s), oil_temp_c=80.0 + i % 7,
            engine_rpm=1800.0 if working else 800.0, hydraulic_pressure_bar=200.0, coolant_temp_c=85.0,
            fuel_level_pct=90.0 - i * 0.1, engine_hours=1000.0 + i * step_s / 3600, lat=51.9 + i * 1e-4,
            lon=4.1 + i * 1e-4, speed_kmh=5.0 if working else 0.0,
            fault_codes=(FaultCode(spn=110, fmi=0, oc=1),) if i == steps - 1 else ())))
    BatchWriter(conn, "seed", now).write(Batch(messages=1, readings=readings, sequences={equipment_id: [steps]}))
    fault_id = conn.execute(
        "INSERT INTO faults (equipment_id, fault_code, severity, rule, rule_version, started_at, evidence) "
        "VALUES (%s, 'OIL_OVERHEAT', 'major', 'threshold', 1, %s, '{}') RETURNING id",
        (equipment_id, now - timedelta(minutes=10))).fetchone()[0]
    with conn.transaction():
        alarm_id = raise_or_reopen(conn, equipment_id, "OIL_OVERHEAT", "major", now - timedelta(minutes=10),
                                   fault_id).alarm_id
    upsert_station(conn, Station("ST-seed", "seed station", 51.9, 4.1))
    upsert_engineer(conn, Engineer("karl", "Karl", "ST-seed", (model,)))
    upsert_vehicle(conn, Vehicle("VAN-karl", "ST-seed", "karl"), at=now)
    ticket, _ = service.create_ticket(conn, service.NewTicket(equipment_id, f"overheating {equipment_id}", "major"))
    for action, fields in (("accept", {}), ("dispatch", {"engineer": "karl"}), ("engineer_accept", {}),
                           ("arrive", {}), ("resolve", {"work_done": "cleaned the cooler", "first_time_fix": True,
                                                        "parts_used": [{"part": "oil filter", "quantity": 1}]})):
        service.apply_action(conn, ticket["id"], action, actor="anna", fields=fields)
    open_ticket, _ = service.create_ticket(conn, service.NewTicket(equipment_id, f"check {equipment_id}", "minor"))
    conn.commit()
    return Tenant(customer, equipment_id, serial, alarm_id, fault_id, ticket["id"], open_ticket["id"])
