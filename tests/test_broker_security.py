"""Broker security on a real Mosquitto run with deploy/mosquitto/mosquitto.conf: per-device
credentials and ACL generated from the registry, revocation, and provisioning; the service vans'
trackers, each confined to its own position topic."""

from __future__ import annotations

import threading
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from core import mqtt, topics
from core.device_messages import Ack, Command, Status, encode_ack, encode_command, encode_status
from core.paho_fast import new_client
from core.positions import Position, encode_position, position_subscription, position_topic
from core.register import EquipmentRecord
from core.telemetry import Reading, encode_message
from device_sim.controller import SimulatedController, provision
from device_sim.simulated_fleet import build_fleet
from devices import registry
from devices.broker_auth import (
    BrokerAuthSync,
    ServicePasswords,
    StaticAccounts,
    hash_password,
    render,
    tracker_username,
    verify_password,
)
from devices.worker import DevicesWorker
from ingest.worker import IngestWorker
from tests.helpers import ApiServer, SecuredMosquitto, start_paho, wait_for
from tickets.resources import Station, Vehicle, upsert_station, upsert_vehicle
from tickets.tracking import TrackingWorker

PASSWORDS = ServicePasswords(ingest="ingest-secret", backend="backend-secret", provisioning="provisioning-secret")


class Client:
    """A bare MQTT 5 client that records what it receives and how the broker answered."""

    def __init__(self, url: str, client_id: str, *, wait: bool = True) -> None:
        self.connack = threading.Event()
        self.reason = None
        self.messages: list[tuple[str, bytes]] = []
        self.subacks: list = []
        self.client = new_client(client_id)
        self.client.on_connect = self._on_connect
        self.client.on_message = lambda c, u, m: self.messages.append((m.topic, m.payload))
        self.client.on_subscribe = lambda c, u, mid, codes, p: self.subacks.append(codes)
        self.pubacks: dict[int, object] = {}  # mid → the broker's reason code
        self.client.on_publish = lambda c, u, mid, code, p: self.pubacks.__setitem__(mid, code)
        self.disconnected = threading.Event()
        self.client.on_disconnect = lambda *args: self.disconnected.set()
        start_paho(self.client, url, clean_start=True)
        if wait:
            assert self.connack.wait(10), f"no CONNACK for {client_id}"

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        self.reason = reason_code
        if not reason_code.is_failure:
            self.disconnected.clear()
        self.connack.set()

    @property
    def accepted(self) -> bool:
        return self.reason is not None and not self.reason.is_failure

    def subscribe(self, topic: str) -> None:
        before = len(self.subacks)
        self.client.subscribe(topic, qos=1)
        wait_for(lambda: len(self.subacks) > before, timeout_s=5, interval_s=0.02, what=f"SUBACK for {topic}")

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(timeout=5)

    def refused(self, topic: str, payload: bytes) -> bool:
        """Publish at QoS 1; whether the broker's PUBACK says "not authorized" (MQTT 5 reason 0x87)."""
        info = self.client.publish(topic, payload, qos=1)
        code = wait_for(lambda: self.pubacks.get(info.mid), timeout_s=5, interval_s=0.02, what=f"PUBACK on {topic}")
        return code.is_failure

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def reading_payload(seq: int) -> bytes:
    return encode_message(seq, [Reading(ts=datetime.now(UTC), oil_temp_c=80.0)])


@pytest.fixture
def broker(tmp_path):
    server = SecuredMosquitto(tmp_path / "mosquitto")
    yield server
    server.close()


@pytest.fixture
def fleet(conn):
    specs = build_fleet(3, fault_share=0.0, id_prefix="SEC")
    for spec in specs:
        registry.create_device(
            conn, equipment=EquipmentRecord(spec.equipment_id, spec.serial, spec.model, spec.kind, spec.customer,
                                            spec.site),
            equipment_id=spec.equipment_id, serial=f"CTL-{spec.equipment_id}", firmware=None, commissioned_on=None,
            report_interval_s=1.0)
    return specs


@pytest.fixture
def secured(settings, broker, fleet, conn, background):
    """Two devices with credentials, the third pending; devices and ingest workers on their accounts."""
    credentials = {spec.equipment_id: registry.issue_credential(conn, spec.equipment_id) for spec in fleet[:2]}
    settings = settings.model_copy(update={
        "mqtt_url": broker.url("backend", PASSWORDS.backend), "broker_auth_dir": broker.auth_dir,
        "broker_pid_file": broker.pid_file, "mqtt_ingest_password": PASSWORDS.ingest,
        "mqtt_backend_password": PASSWORDS.backend, "mqtt_provisioning_password": PASSWORDS.provisioning,
        "command_tick_s": 0.1})
    # The files first, as an installation does before the broker takes clients.
    BrokerAuthSync(broker.auth_dir, settings.topic_root, PASSWORDS, broker.pid_file).sync(conn)
    wait_for(lambda: "backend" in (broker.auth_dir / "passwd").read_text(), timeout_s=5, what="password file")
    worker = DevicesWorker(settings, settings.database_url, settings.mqtt_url, name="devices-sec")
    background.start(worker.run, "devices")
    ingest = IngestWorker(settings, settings.database_url, broker.url("ingest", PASSWORDS.ingest), name="ingest-sec")
    background.start(ingest.run, "ingest")
    assert worker.connected.wait(10), broker.log_text()
    assert ingest.connected.wait(10), broker.log_text()
    return settings, credentials, worker


def test_hash_is_mosquittos_pbkdf2_sha512_form():
    encoded = hash_password("s3cret", salt=b"0123456789ab")
    assert encoded.startswith("$7$101$MDEyMzQ1Njc4OWFi$") and len(encoded.split("$")[4]) == 88
    assert verify_password("s3cret", encoded) and not verify_password("other", encoded)


def test_unknown_and_anonymous_clients_are_refused(secured, broker):
    anonymous = Client(broker.url(), "anon-1")
    wrong = Client(broker.url("SEC-00001", "not-the-password"), "wrong-1")
    try:
        assert not anonymous.accepted and not wrong.accepted
    finally:
        anonymous.close()
        wrong.close()


def test_a_device_publishes_only_as_itself(secured, broker, fleet, conn):
    settings, credentials, _ = secured
    root = settings.topic_root
    a, b = fleet[0].equipment_id, fleet[1].equipment_id
    observer = Client(broker.url("ingest", PASSWORDS.ingest), "observer-1")
    device = Client(broker.url(a, credentials[a]), "dev-a")
    try:
        assert device.accepted
        observer.subscribe(topics.telemetry_subscription(root))
        device.publish(topics.telemetry_topic(root, b), reading_payload(1))  # as B: dropped by the broker
        device.publish(topics.device_topic(root, b, topics.STATUS), encode_status(Status(False, reason="lost")))
        device.publish(topics.telemetry_topic(root, a), reading_payload(2))  # as itself: delivered
        wait_for(lambda: observer.messages, timeout_s=5, what="A's own telemetry")
        assert [t for t, _ in observer.messages] == [topics.telemetry_topic(root, a)]
        wait_for(lambda: conn.execute("SELECT count(*) FROM readings WHERE equipment_id = %s", (a,)).fetchone()[0]
                 == 1 or conn.rollback(), timeout_s=10, what="A's reading stored by ingest on its account")
        assert conn.execute("SELECT count(*) FROM readings WHERE equipment_id = %s", (b,)).fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM device_presence WHERE equipment_id = %s", (b,)).fetchone()[0] == 0
    finally:
        observer.close()
        device.close()


def test_a_device_reads_only_its_own_commands(secured, broker, fleet):
    settings, credentials, _ = secured
    root = settings.topic_root
    a, b = fleet[0].equipment_id, fleet[1].equipment_id
    device = Client(broker.url(a, credentials[a]), "dev-a-sub")
    backend = Client(broker.url("backend", PASSWORDS.backend), "backend-test")
    try:
        device.subscribe(topics.device_topic(root, b, topics.COMMAND))
        device.subscribe(topics.device_subscription(root, topics.COMMAND))  # every machine's commands
        device.subscribe(topics.device_topic(root, a, topics.COMMAND))
        expires = datetime.now(UTC) + timedelta(minutes=1)
        for target in (b, a):
            backend.publish(topics.device_topic(root, target, topics.COMMAND),
                            encode_command(Command(str(uuid.uuid4()), "snapshot", expires)))
        wait_for(lambda: device.messages, timeout_s=5, what="A's own command")
        assert {t for t, _ in device.messages} == {topics.device_topic(root, a, topics.COMMAND)}
    finally:
        device.close()
        backend.close()


def test_the_provisioning_credential_can_only_ask_for_a_credential(secured, broker):
    settings, credentials, _ = secured
    root = settings.topic_root
    observer = Client(broker.url("ingest", PASSWORDS.ingest), "observer-2")
    newcomer = Client(broker.url("provisioning", PASSWORDS.provisioning), "CTL-UNKNOWN")
    backend = Client(broker.url("backend", PASSWORDS.backend), "backend-test-2")
    device = Client(broker.url("SEC-00002", credentials["SEC-00002"]), "dev-b-marker")
    try:
        assert newcomer.accepted
        observer.subscribe(topics.telemetry_subscription(root))
        newcomer.subscribe(topics.provisioning_topic(root, "CTL-OTHER", "response"))
        newcomer.subscribe(topics.device_subscription(root, topics.COMMAND))
        newcomer.subscribe(topics.provisioning_topic(root, "CTL-UNKNOWN", "response"))
        newcomer.publish(topics.telemetry_topic(root, "SEC-00001"), reading_payload(1))
        backend.publish(topics.telemetry_topic(root, "SEC-00001"), reading_payload(2))  # backend sends no telemetry
        backend.publish(topics.provisioning_topic(root, "CTL-OTHER", "response"), b'{"v":1}')
        backend.publish(topics.device_topic(root, "SEC-00001", topics.COMMAND), b'{"v":1}')
        # Markers each may see, sent last: once they arrive, anything refused would have arrived too.
        device.publish(topics.telemetry_topic(root, "SEC-00002"), reading_payload(3))
        backend.publish(topics.provisioning_topic(root, "CTL-UNKNOWN", "response"), b'{"v":1,"marker":1}')
        wait_for(lambda: observer.messages and newcomer.messages, timeout_s=5, what="the markers")
        assert [t for t, _ in observer.messages] == [topics.telemetry_topic(root, "SEC-00002")]
        assert [t for t, _ in newcomer.messages] == [topics.provisioning_topic(root, "CTL-UNKNOWN", "response")]
    finally:
        for client in (observer, newcomer, backend, device):
            client.close()


def test_commands_run_end_to_end_under_the_acl(secured, broker, fleet):
    settings, credentials, _ = secured
    spec = fleet[0]
    controller = SimulatedController(spec, broker.url(), topic_root=settings.topic_root, interval_s=0.5,
                                     username=spec.equipment_id, password=credentials[spec.equipment_id]).start()
    api = ApiServer(settings, settings.database_url)
    try:
        with httpx.Client(base_url=api.url, timeout=10, headers=api.headers) as http:
            wait_for(lambda: http.get(f"/api/v1/equipment/{spec.equipment_id}/presence").json()["online"],
                     timeout_s=10, what="controller online")
            command = http.post(f"/api/v1/equipment/{spec.equipment_id}/commands",
                                json={"kind": "lock", "reason": "theft report"}).json()
            wait_for(lambda: http.get(f"/api/v1/equipment/{spec.equipment_id}/commands/{command['id']}"
                                      ).json()["state"] == "executed", timeout_s=10, what="lock executed")
        assert controller.machine.locked
    finally:
        api.close()
        controller.stop()


def test_a_revoked_device_is_dropped_and_refused(secured, broker, fleet, conn):
    settings, credentials, worker = secured
    spec = fleet[1]
    controller = SimulatedController(spec, broker.url(), topic_root=settings.topic_root, interval_s=0.5,
                                     username=spec.equipment_id, password=credentials[spec.equipment_id]).start()
    try:
        assert controller.connected.wait(10)
        reloads = worker.auth_sync.reloads
        registry.revoke(conn, spec.equipment_id)
        conn.commit()
        wait_for(lambda: worker.auth_sync.reloads > reloads, timeout_s=10, what="the files rewritten")
        assert spec.equipment_id not in (broker.auth_dir / "passwd").read_text()
        wait_for(lambda: not controller.connected.is_set(), timeout_s=10, what="the revoked device dropped")
        wait_for(lambda: controller.refused.is_set(), timeout_s=15, what="its reconnection refused")
        assert not controller.connected.is_set()
    finally:
        controller.kill()
    again = Client(broker.url(spec.equipment_id, credentials[spec.equipment_id]), "dev-revoked")
    try:
        assert not again.accepted
    finally:
        again.close()


def test_provisioning_gives_a_pending_controller_its_own_working_credential(secured, broker, fleet, conn):
    settings, _, _ = secured
    spec = fleet[2]
    serial = f"CTL-{spec.equipment_id}"
    answer = provision(broker.url(), topic_root=settings.topic_root, serial=serial, model=spec.model,
                       username="provisioning", password=PASSWORDS.provisioning, firmware="sim-3.0.1")
    assert answer.accepted and answer.equipment_id == spec.equipment_id and answer.username == spec.equipment_id
    device = registry.get_device(conn, spec.equipment_id)
    conn.commit()
    assert device["state"] == "active" and device["firmware"] == "sim-3.0.1"
    controller = SimulatedController(spec, broker.url(), topic_root=settings.topic_root, interval_s=0.5,
                                     username=answer.username, password=answer.password).start()
    try:
        assert controller.connected.wait(10), broker.log_text()[-2000:]
        wait_for(lambda: conn.execute("SELECT connected FROM device_presence WHERE equipment_id = %s",
                                      (spec.equipment_id,)).fetchone() == (True,) or conn.rollback(),
                 timeout_s=10, what="the new controller's presence")
    finally:
        controller.stop()
    # Once provisioned, the serial cannot be provisioned again (that would hand its identity to anyone).
    again = provision(broker.url(), topic_root=settings.topic_root, serial=serial, model=spec.model,
                      username="provisioning", password=PASSWORDS.provisioning)
    assert not again.accepted and again.reason == "already_provisioned"


def test_provisioning_refusals(secured, broker, fleet, conn):
    settings, _, _ = secured
    root = settings.topic_root
    unknown = provision(broker.url(), topic_root=root, serial="CTL-NOBODY", model="EX210",
                        username="provisioning", password=PASSWORDS.provisioning)
    assert not unknown.accepted and unknown.reason == "unknown_serial"
    spec = fleet[2]
    wrong_model = provision(broker.url(), topic_root=root, serial=f"CTL-{spec.equipment_id}", model="XX999",
                            username="provisioning", password=PASSWORDS.provisioning)
    assert not wrong_model.accepted and wrong_model.reason == "model_mismatch"
    registry.revoke(conn, spec.equipment_id)
    conn.commit()
    revoked = provision(broker.url(), topic_root=root, serial=f"CTL-{spec.equipment_id}", model=spec.model,
                        username="provisioning", password=PASSWORDS.provisioning)
    assert not revoked.accepted and revoked.reason == "revoked"
    with pytest.raises(TimeoutError):
        provision(broker.url(), topic_root=root, serial=f"CTL-{spec.equipment_id}", model=spec.model,
                  username="provisioning", password="guessed", timeout_s=2)
    assert registry.get_device(conn, spec.equipment_id)["state"] == "revoked"


def test_the_compose_stack_gives_the_devices_worker_the_brokers_files_and_process():
    from pathlib import Path

    import yaml

    from ironsight.cli import build_parser

    deploy = Path(__file__).resolve().parents[1] / "deploy"
    services = yaml.safe_load((deploy / "docker-compose.yml").read_text())["services"]
    devices, broker = services["devices"], services["mosquitto"]
    assert build_parser().parse_args(devices["command"]).command == "devices"
    assert devices["pid"] == "service:mosquitto"  # SIGHUP reaches the broker
    auth_dir = devices["environment"]["IRONSIGHT_BROKER_AUTH_DIR"]
    volume = next(v.split(":")[0] for v in devices["volumes"] if v.split(":")[1] == auth_dir)
    assert f"{volume}:{auth_dir}" in broker["volumes"]
    config = {line.split(" ", 1)[0]: line.split(" ", 1)[1] for line in
              (deploy / "mosquitto" / "mosquitto.conf").read_text().splitlines() if line and not line.startswith("#")}
    assert config["allow_anonymous"] == "false"
    assert config["password_file"] == f"{auth_dir}/passwd" and config["acl_file"] == f"{auth_dir}/acl"
    assert config["pid_file"] == devices["environment"]["IRONSIGHT_BROKER_PID_FILE"]


def test_open_provisioning_lets_an_unknown_controller_register_itself(secured, broker, conn):
    settings, _, worker = secured
    worker.settings.provisioning_open = True
    answer = provision(broker.url(), topic_root=settings.topic_root, serial="CTL-NEW-1", model="TC500",
                       username="provisioning", password=PASSWORDS.provisioning)
    assert answer.accepted and answer.equipment_id == "CTL-NEW-1"
    machine = conn.execute("SELECT model, kind, customer FROM equipment WHERE id = 'CTL-NEW-1'").fetchone()
    assert machine == ("TC500", registry.UNKNOWN_KIND, registry.UNASSIGNED_CUSTOMER)
    conn.commit()
    spec = replace(build_fleet(1, fault_share=0.0, id_prefix="X")[0], equipment_id="CTL-NEW-1")
    controller = SimulatedController(spec, broker.url(), topic_root=settings.topic_root, interval_s=0.5,
                                     username=answer.username, password=answer.password).start()
    try:
        assert controller.connected.wait(10)
    finally:
        controller.stop()


def test_files_are_rewritten_only_when_the_accounts_change(conn, fleet, tmp_path):
    first = BrokerAuthSync(tmp_path, "root", PASSWORDS, pid_file=None)
    assert first.sync(conn) is True
    assert first.sync(conn) is False
    # Another process (a restarted worker) hashes the service passwords with other salts: still no change.
    assert BrokerAuthSync(tmp_path, "root", PASSWORDS, pid_file=None).sync(conn) is False
    changed = ServicePasswords(ingest="new-ingest-secret", backend=PASSWORDS.backend,
                               provisioning=PASSWORDS.provisioning)
    assert BrokerAuthSync(tmp_path, "root", changed, pid_file=None).sync(conn) is True
    registry.issue_credential(conn, fleet[0].equipment_id)
    assert first.sync(conn) is True
    acl = (tmp_path / "acl").read_text()
    assert f"user {fleet[0].equipment_id}\ntopic write root/v1/{fleet[0].equipment_id}/telemetry\n" in acl
    assert fleet[1].equipment_id not in acl  # pending: no credential, no account
    unwritable = BrokerAuthSync(tmp_path / "acl" / "below-a-file", "root", PASSWORDS, pid_file=None)
    assert unwritable.sync(conn) is False  # logged, not raised: the broker keeps its files


# --- service vans' trackers ---

def position_payload(lat: float, lon: float, at: datetime | None = None) -> bytes:
    return encode_position(Position(at or datetime.now(UTC), lat, lon, 0.0))


@pytest.fixture
def vans(conn):
    """Two vans at a station (48.0, 11.0) with no position reported yet."""
    upsert_station(conn, Station("ST-SEC", "secured station", 48.0, 11.0))
    for vehicle_id in ("VAN-A", "VAN-B"):
        upsert_vehicle(conn, Vehicle(vehicle_id, "ST-SEC", None), at=datetime.now(UTC))
    conn.commit()
    return "VAN-A", "VAN-B"


def issue_tracker(conn, worker, vehicle_id: str) -> str:
    """A tracker credential, once the devices worker has put it into the broker's files."""
    reloads = worker.auth_sync.reloads
    password = registry.issue_tracker_credential(conn, vehicle_id)
    conn.commit()
    wait_for(lambda: worker.auth_sync.reloads > reloads, timeout_s=10, what="the files rewritten")
    return password


def test_the_tracker_username_never_names_a_controller_and_gets_only_its_position():
    username = tracker_username("VAN-1")
    assert username == "vehicle~VAN-1" and ":" not in username
    assert not topics.EQUIPMENT_ID_PATTERN.match(username)
    files = render("root", [("VAN-1", "$7$d"), ("backend", "$7$x")], {"backend": "$7$b"},
                   trackers=[("VAN-1", "$7$v")],
                   static=StaticAccounts(("simulator:$7$s",), "user simulator\ntopic readwrite root/sim/+/repaired"))
    assert files.passwd.splitlines() == ["backend:$7$b", "simulator:$7$s", "VAN-1:$7$d", "vehicle~VAN-1:$7$v"]
    # A machine named like a service account never gets that account (nor its ACL).
    assert files.acl.count("user backend\n") == 1
    assert "user vehicle~VAN-1\ntopic write root/v1/vehicles/VAN-1/position\n\n" in files.acl
    assert "user simulator\ntopic readwrite root/sim/+/repaired\n" in files.acl
    # Hand-kept ACL lines that do not begin with their user would extend the account above: left out.
    loose = render("root", [], {"backend": "$7$b"}, static=StaticAccounts(("x:$7$s",), "topic readwrite #"))
    assert "readwrite #" not in loose.acl


def test_a_van_publishes_only_its_own_position_and_tracking_reads_it_on_the_backend_account(
        secured, broker, conn, vans, background):
    settings, credentials, worker = secured
    root = settings.topic_root
    mine, other = vans
    password = issue_tracker(conn, worker, mine)
    tracking = TrackingWorker(settings.database_url, broker.url("backend", PASSWORDS.backend), topic_root=root,
                              client_id=f"tracking-{uuid.uuid4().hex[:8]}")
    background.start(tracking.run, "tracking")
    assert tracking.subscribed.wait(10), broker.log_text()[-2000:]
    van = Client(broker.url(tracker_username(mine), password), "van-a")
    device = Client(broker.url("SEC-00001", credentials["SEC-00001"]), "dev-a-van")
    try:
        assert van.accepted
        # Another van's position (a van "moved to another city"), a machine's telemetry, status or
        # answer: refused. A controller cannot move a van either.
        assert van.refused(position_topic(root, other), position_payload(45.76, 4.84))
        assert van.refused(topics.telemetry_topic(root, "SEC-00001"), reading_payload(1))
        assert van.refused(topics.device_topic(root, "SEC-00001", topics.STATUS),
                           encode_status(Status(False, reason="lost")))
        assert van.refused(topics.device_topic(root, "SEC-00001", topics.ACK),
                           encode_ack(Ack(str(uuid.uuid4()), "executed")))
        assert device.refused(position_topic(root, other), position_payload(45.76, 4.84))
        # It reads nothing, not even positions (the broker grants the subscription and delivers nothing).
        van.subscribe(position_subscription(root))
        # Its own position is taken, and moves the van.
        assert not van.refused(position_topic(root, mine), position_payload(48.2, 11.3))

        def moved():
            row = conn.execute("SELECT lat, lon FROM vehicles WHERE id = %s", (mine,)).fetchone()
            conn.rollback()
            return row == (48.2, 11.3)

        wait_for(moved, timeout_s=10, what="the van moved by its own position")
        assert conn.execute("SELECT reported_at FROM vehicles WHERE id = %s", (other,)).fetchone() == (None,)
        assert van.messages == []  # not even its own position came back to it
        assert tracking.stats.positions == 1 and tracking.stats.unknown_vehicle == 0
    finally:
        van.close()
        device.close()


def test_a_revoked_van_tracker_is_dropped_and_refused(secured, broker, conn, vans):
    settings, _, worker = secured
    mine, _ = vans
    password = issue_tracker(conn, worker, mine)
    address = mqtt.parse_mqtt_url(broker.url()).with_credentials(tracker_username(mine), password)
    tracker = mqtt.Session(address, "van-revoked", name="van tracker").start()
    try:
        assert tracker.ready.wait(10), broker.log_text()[-2000:]
        reloads = worker.auth_sync.reloads
        revoked = registry.revoke_tracker_credential(conn, mine)
        conn.commit()
        assert revoked["state"] == "revoked" and revoked["revoked_at"] is not None
        wait_for(lambda: worker.auth_sync.reloads > reloads, timeout_s=10, what="the files rewritten")
        assert tracker_username(mine) not in (broker.auth_dir / "passwd").read_text()
        wait_for(lambda: not tracker.ready.is_set(), timeout_s=10, what="the revoked tracker dropped")
        wait_for(lambda: tracker.refused.is_set(), timeout_s=15, what="its reconnection refused")
    finally:
        tracker.kill()
    again = Client(broker.url(tracker_username(mine), password), "van-revoked-2")
    try:
        assert not again.accepted
    finally:
        again.close()


def test_tracker_credentials_through_the_api(settings, conn, vans):
    mine, other = vans
    api = ApiServer(settings, settings.database_url)
    try:
        admin = api.client()
        assert admin.post("/vehicles/VAN-NOBODY/tracker-credential").status_code == 404
        assert admin.delete(f"/vehicles/{other}/tracker-credential").status_code == 404  # never had one
        assert api.user("engineer").post(f"/vehicles/{mine}/tracker-credential").status_code == 403
        issued = api.user("dispatcher").post(f"/vehicles/{mine}/tracker-credential")
        assert issued.status_code == 201, issued.text
        body = issued.json()
        assert body["username"] == f"vehicle~{mine}" and body["topic"] == position_topic(settings.topic_root, mine)

        def stored_hash():
            row = conn.execute("SELECT password_hash FROM vehicle_trackers WHERE vehicle_id = %s", (mine,)).fetchone()
            conn.rollback()
            return row[0]

        assert verify_password(body["password"], stored_hash())
        again = admin.post(f"/vehicles/{mine}/tracker-credential").json()
        assert not verify_password(body["password"], stored_hash()) and verify_password(again["password"],
                                                                                       stored_hash())
        assert admin.delete(f"/vehicles/{mine}/tracker-credential").status_code == 204
        assert stored_hash() is None
        assert registry.get_tracker(conn, mine)["state"] == "revoked"
        conn.rollback()
    finally:
        api.close()


def test_a_burst_of_reloads_ends_with_one_more_signal(tmp_path, monkeypatch):
    """Mosquitto clears its reload flag after reloading, so a SIGHUP that arrives during a reload is
    lost (seen with twelve van credentials issued at once): after a burst the broker hears once more."""
    import os
    import signal
    import time

    from devices import broker_auth

    received: list[float] = []
    previous = signal.signal(signal.SIGHUP, lambda signum, frame: received.append(time.monotonic()))
    monkeypatch.setattr(broker_auth, "RELOAD_SETTLE_S", 0.2)
    pid_file = tmp_path / "broker.pid"
    pid_file.write_text(str(os.getpid()))
    try:
        sync = BrokerAuthSync(tmp_path, "root", PASSWORDS, pid_file)
        sync._reload_broker()  # alone: one signal, nothing more
        time.sleep(0.5)
        assert len(received) == 1
        for _ in range(3):  # a burst: three signals, then one more once it settled
            sync._reload_broker()
        wait_for(lambda: len(received) == 5, timeout_s=5, interval_s=0.05, what="the settling signal")
        time.sleep(0.5)
        assert len(received) == 5 and received[-1] - received[-2] >= 0.2
    finally:
        signal.signal(signal.SIGHUP, previous)


def test_a_controller_asking_before_the_devices_worker_listens_asks_again(settings, broker, fleet, conn, background):
    """A provisioning request nobody is subscribed to yet is lost (the worker's first start, as in
    `ironsight run`): the controller asks again until it is answered."""
    settings = settings.model_copy(update={
        "mqtt_url": broker.url("backend", PASSWORDS.backend), "broker_auth_dir": broker.auth_dir,
        "broker_pid_file": broker.pid_file, "mqtt_ingest_password": PASSWORDS.ingest,
        "mqtt_backend_password": PASSWORDS.backend, "mqtt_provisioning_password": PASSWORDS.provisioning})
    BrokerAuthSync(broker.auth_dir, settings.topic_root, PASSWORDS, broker.pid_file).sync(conn)
    wait_for(lambda: "provisioning" in (broker.auth_dir / "passwd").read_text(), timeout_s=5, what="password file")
    spec = fleet[0]
    answers: list = []
    asking = threading.Thread(target=lambda: answers.append(provision(
        broker.url(), topic_root=settings.topic_root, serial=f"CTL-{spec.equipment_id}", model=spec.model,
        username="provisioning", password=PASSWORDS.provisioning, timeout_s=20, ask_again_s=1.0)))
    asking.start()
    threading.Event().wait(2.0)  # its first request is gone by now
    worker = DevicesWorker(settings, settings.database_url, settings.mqtt_url, name="devices-late")
    background.start(worker.run, "devices")
    asking.join(25)
    assert answers and answers[0].accepted and answers[0].username == spec.equipment_id
