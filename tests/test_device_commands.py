"""Presence and remote commands end to end: API → devices worker → broker → simulated controller
→ acks → API, on the real broker and database."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

import httpx
import pytest

from core import topics
from core.device_messages import Command, Status, encode_ack, encode_command, encode_status
from core.register import EquipmentRecord
from device_sim.controller import SimulatedController
from device_sim.simulated_fleet import build_fleet
from devices import registry
from devices.worker import DevicesWorker
from ingest.worker import IngestWorker
from tests.helpers import ApiServer, Publisher, wait_for

FAST = {"command_tick_s": 0.1, "offline_after_s": 30.0}


@dataclass
class Rig:
    settings: object
    api: ApiServer
    http: httpx.Client
    worker: DevicesWorker

    def controller(self, spec, **kwargs) -> SimulatedController:
        return SimulatedController(spec, self.settings.mqtt_url, topic_root=self.settings.topic_root,
                                   interval_s=kwargs.pop("interval_s", 0.5), **kwargs)

    def command(self, equipment_id: str, kind: str, **body) -> dict:
        response = self.http.post(f"/api/v1/equipment/{equipment_id}/commands", json={"kind": kind, **body})
        assert response.status_code == 202, response.text
        return response.json()

    def get(self, equipment_id: str, command_id: str) -> dict:
        response = self.http.get(f"/api/v1/equipment/{equipment_id}/commands/{command_id}")
        assert response.status_code == 200, response.text
        return response.json()

    def wait_state(self, equipment_id: str, command_id: str, *states: str, timeout_s: float = 15) -> dict:
        return wait_for(lambda: (c := self.get(equipment_id, command_id))["state"] in states and c,
                        timeout_s=timeout_s, interval_s=0.05, what=f"command {command_id} to reach {states}")

    def presence(self, equipment_id: str) -> dict:
        response = self.http.get(f"/api/v1/equipment/{equipment_id}/presence")
        assert response.status_code == 200, response.text
        return response.json()


def register(conn, spec) -> None:
    registry.create_device(
        conn, equipment=EquipmentRecord(spec.equipment_id, spec.serial, spec.model, spec.kind, spec.customer,
                                        spec.site),
        equipment_id=spec.equipment_id, serial=f"CTL-{spec.equipment_id}", firmware=None, commissioned_on=None,
        report_interval_s=0.5)


@pytest.fixture
def specs(conn):
    fleet = build_fleet(3, fault_share=0.0, id_prefix="DEV")
    for spec in fleet:
        register(conn, spec)
    return fleet


@pytest.fixture
def rig(settings, specs, background):
    settings = settings.model_copy(update=FAST)
    worker = DevicesWorker(settings, settings.database_url, settings.mqtt_url, name="devices-test")
    background.start(worker.run, "devices")
    ingest = IngestWorker(settings, settings.database_url, settings.mqtt_url, name="ingest-devtest")
    background.start(ingest.run, "ingest")
    assert worker.connected.wait(10) and ingest.connected.wait(10)
    api = ApiServer(settings, settings.database_url)
    http = httpx.Client(base_url=api.url, timeout=10, headers=api.headers)
    yield Rig(settings, api, http, worker)
    http.close()
    api.close()


@pytest.fixture
def controllers():
    started: list[SimulatedController] = []
    yield started
    for controller in started:
        controller.stop()


def online(rig: Rig, equipment_id: str) -> dict:
    return wait_for(lambda: (p := rig.presence(equipment_id))["online"] and p, timeout_s=15, interval_s=0.05,
                    what=f"{equipment_id} online")


def test_presence_follows_connect_clean_and_unclean_disconnect(rig, specs, controllers):
    spec = specs[0]
    assert rig.presence(spec.equipment_id)["connected"] is None
    controller = rig.controller(spec).start()
    presence = online(rig, spec.equipment_id)
    assert presence["connected"] is True and presence["firmware"] == controller.firmware
    assert -150 <= presence["signal_dbm"] <= 0 and presence["locked"] is False
    wait_for(lambda: rig.presence(spec.equipment_id)["last_telemetry_at"], timeout_s=10, what="a heartbeat")

    controller.stop()
    gone = wait_for(lambda: (p := rig.presence(spec.equipment_id))["connected"] is False and p, timeout_s=10,
                    what="clean disconnect")
    assert gone["online"] is False and gone["disconnect_reason"] == "clean"
    assert rig.http.get(f"/api/v1/equipment/{spec.equipment_id}").json()["online"] is False

    again = rig.controller(spec).start()
    controllers.append(again)
    online(rig, spec.equipment_id)
    again.kill()  # no DISCONNECT: the broker publishes the last will
    lost = wait_for(lambda: (p := rig.presence(spec.equipment_id))["connected"] is False and p, timeout_s=10,
                    what="last will")
    assert lost["online"] is False and lost["disconnect_reason"] == "lost"


def test_snapshot_round_trip_is_executed_and_its_reading_is_stored(rig, specs, controllers, conn):
    spec = specs[0]
    controller = rig.controller(spec, interval_s=30.0).start()  # no periodic reading gets in the way
    controllers.append(controller)
    online(rig, spec.equipment_id)
    dispatcher = rig.api.user("dispatcher", username="dispatcher-7")
    asked = dispatcher.post(f"/equipment/{spec.equipment_id}/commands", json={"kind": "snapshot"})
    assert asked.status_code == 202, asked.text
    command = asked.json()
    assert command["state"] == "queued"
    done = rig.wait_state(spec.equipment_id, command["id"], "executed")
    assert controller.executions["snapshot"] == 1
    seq = done["result"]["seq"]
    assert [e["state"] for e in done["events"]] == ["queued", "sent", "acknowledged", "executed"]
    assert done["events"][0]["actor"] == "dispatcher-7"
    wait_for(lambda: conn.execute("SELECT last_seq FROM equipment_state WHERE equipment_id = %s",
                                  (spec.equipment_id,)).fetchone() == (seq,) or conn.rollback(),
             timeout_s=10, what="the snapshot reading stored")
    listed = rig.http.get(f"/api/v1/equipment/{spec.equipment_id}/commands").json()
    assert listed["count"] == 1 and listed["data"][0]["id"] == command["id"]


def test_report_interval_is_raised_then_reverts_after_its_duration(rig, specs, controllers):
    spec = specs[0]
    controller = rig.controller(spec, interval_s=5.0).start()
    controllers.append(controller)
    online(rig, spec.equipment_id)
    bad = rig.http.post(f"/api/v1/equipment/{spec.equipment_id}/commands",
                        json={"kind": "set_report_interval", "params": {"interval_s": 0.2}})
    assert bad.status_code == 422
    command = rig.command(spec.equipment_id, "set_report_interval", params={"interval_s": 0.2, "duration_s": 2})
    done = rig.wait_state(spec.equipment_id, command["id"], "executed")
    assert done["result"]["interval_s"] == 0.2
    assert controller.interval_s() == 0.2
    seq_before = controller.seq
    wait_for(lambda: controller.seq >= seq_before + 3, timeout_s=5, interval_s=0.05,
             what="readings at the raised rate")
    wait_for(lambda: controller.interval_s() == 5.0, timeout_s=5, interval_s=0.1, what="the interval to revert")


def test_lock_stops_the_engine_until_unlocked_and_is_audited(rig, specs, controllers, conn):
    spec = specs[1]
    controller = rig.controller(spec, interval_s=0.2).start()
    controllers.append(controller)
    online(rig, spec.equipment_id)
    missing = rig.http.post(f"/api/v1/equipment/{spec.equipment_id}/commands", json={"kind": "lock"})
    assert missing.status_code == 422 and "reason" in missing.text

    # Only an admin may inhibit an engine: a dispatcher is refused, and nothing is queued.
    dispatcher = rig.api.user("dispatcher")
    refused = dispatcher.post(f"/equipment/{spec.equipment_id}/commands", json={"kind": "lock", "reason": "x"})
    assert refused.status_code == 403 and "admin" in refused.json()["detail"]
    assert rig.http.get(f"/api/v1/equipment/{spec.equipment_id}/commands").json()["count"] == 0
    lock = rig.command(spec.equipment_id, "lock", reason="contract breach #4411")
    done = rig.wait_state(spec.equipment_id, lock["id"], "executed")
    assert done["result"] == {"locked": True} and done["reason"] == "contract breach #4411"
    assert done["events"][0] == {**done["events"][0], "state": "queued", "actor": rig.api.settings.admin_username,
                                 "detail": "contract breach #4411"}
    assert rig.presence(spec.equipment_id)["locked"] is True

    def latest_rpms(n: int) -> list[float]:
        rows = conn.execute("SELECT engine_rpm FROM readings WHERE equipment_id = %s AND ts > %s ORDER BY ts DESC "
                            "LIMIT %s", (spec.equipment_id, done["finished_at"], n)).fetchall()
        conn.commit()
        return [r[0] for r in rows]

    wait_for(lambda: len(latest_rpms(5)) == 5, timeout_s=10, what="readings after the lock")
    assert latest_rpms(5) == [0.0] * 5

    unlock = rig.command(spec.equipment_id, "unlock", reason="paid")
    unlocked = rig.wait_state(spec.equipment_id, unlock["id"], "executed")
    assert rig.presence(spec.equipment_id)["locked"] is False
    wait_for(lambda: (rows := conn.execute(
        "SELECT engine_rpm FROM readings WHERE equipment_id = %s AND ts > %s", (spec.equipment_id,
                                                                                unlocked["finished_at"])).fetchall())
             and conn.commit() is None and any(r[0] > 0 for r in rows),
             timeout_s=10, what="the engine running again")


def test_a_silent_controller_lets_the_command_expire(rig, specs, settings):
    spec = specs[0]
    # Connected (it says so) and subscribed, but it never answers.
    received: list[bytes] = []
    mute = Publisher(settings.mqtt_url, f"mute-{spec.equipment_id}",
                     subscriptions=[topics.device_topic(rig.settings.topic_root, spec.equipment_id, topics.COMMAND)],
                     on_message=lambda m: received.append(m.payload))
    try:
        mute.publish(topics.device_topic(rig.settings.topic_root, spec.equipment_id, topics.STATUS),
                     encode_status(Status(True)))
        online(rig, spec.equipment_id)
        command = rig.command(spec.equipment_id, "snapshot", timeout_s=1.5)
        rig.wait_state(spec.equipment_id, command["id"], "sent")
        expired = rig.wait_state(spec.equipment_id, command["id"], "expired", timeout_s=10)
        assert [e["state"] for e in expired["events"]] == ["queued", "sent", "expired"]
        assert len(received) == 1 and json.loads(received[0])["id"] == command["id"]
    finally:
        mute.close()


def test_commands_wait_for_an_offline_controller_and_only_valid_ones_are_delivered(rig, specs, controllers):
    spec = specs[2]
    first = rig.controller(spec).start()
    online(rig, spec.equipment_id)
    first.kill()
    wait_for(lambda: rig.presence(spec.equipment_id)["connected"] is False, timeout_s=10, what="offline")

    short = rig.command(spec.equipment_id, "lock", reason="theft report", timeout_s=1.0)
    valid = rig.command(spec.equipment_id, "snapshot", timeout_s=60)
    rig.wait_state(spec.equipment_id, short["id"], "expired")
    assert rig.get(spec.equipment_id, valid["id"])["state"] == "queued"

    back = rig.controller(spec).start()
    controllers.append(back)
    done = rig.wait_state(spec.equipment_id, valid["id"], "executed")
    assert done["send_count"] == 1
    assert back.executions == {"snapshot": 1}  # the expired lock never reached the machine
    assert back.machine.locked is False
    assert rig.get(spec.equipment_id, short["id"])["state"] == "expired"


def test_a_repeated_command_is_executed_once_and_answered_again(rig, specs, controllers, settings, conn):
    spec = specs[0]
    controller = rig.controller(spec, interval_s=30.0).start()
    controllers.append(controller)
    online(rig, spec.equipment_id)
    command = rig.command(spec.equipment_id, "lock", reason="test of a repeat")
    rig.wait_state(spec.equipment_id, command["id"], "executed")
    created = rig.get(spec.equipment_id, command["id"])
    # The same command again on the command topic, as a redelivery would bring it.
    repeat = Command(command["id"], "lock", expires_at=_parse(created["expires_at"]))
    backend = Publisher(settings.mqtt_url, f"{settings.topic_root}-resend")
    try:
        backend.publish(topics.device_topic(settings.topic_root, spec.equipment_id, topics.COMMAND),
                        encode_command(repeat))
        wait_for(lambda: controller.repeats == 1, timeout_s=10, interval_s=0.05, what="the repeat to arrive")
    finally:
        backend.close()
    assert controller.executions == {"lock": 1}
    time.sleep(0.3)  # the repeated answer reaches the worker: it must change nothing and not be bad input
    final = rig.get(spec.equipment_id, command["id"])
    assert final["state"] == "executed" and [e["state"] for e in final["events"]].count("executed") == 1
    assert conn.execute("SELECT count(*) FROM dead_letters").fetchone()[0] == 0


def test_bad_acks_and_statuses_are_dead_lettered_and_the_worker_goes_on(rig, specs, controllers, settings, conn):
    victim, other = specs[0], specs[1]
    controller = rig.controller(victim, interval_s=30.0).start()
    controllers.append(controller)
    online(rig, victim.equipment_id)
    command = rig.command(victim.equipment_id, "snapshot")
    rig.wait_state(victim.equipment_id, command["id"], "executed")
    root = settings.topic_root
    rogue = Publisher(settings.mqtt_url, f"{root}-rogue")
    try:
        pending = rig.command(victim.equipment_id, "lock", reason="x", timeout_s=30)
        ack_topic = topics.device_topic(root, other.equipment_id, topics.ACK)
        rogue.publish(ack_topic, b"{not json")
        rogue.publish(ack_topic, encode_ack_for("not-a-uuid"))
        rogue.publish(ack_topic, encode_ack_for("6f1c2a7e-3d55-4b7e-9a52-0e8b7c1d2f30"))
        rogue.publish(ack_topic, encode_ack_for(pending["id"]))  # someone else's command
        rogue.publish(ack_topic, b"x" * 100_000)
        rogue.publish(topics.device_topic(root, "NOT-REGISTERED", topics.STATUS), encode_status(Status(True)))
        rogue.publish(topics.device_topic(root, other.equipment_id, topics.STATUS), b'{"v":1,"online":"yes"}')
    finally:
        rogue.close()
    reasons = wait_for(lambda: (rows := conn.execute("SELECT reason FROM dead_letters ORDER BY id").fetchall())
                       and conn.commit() is None and len(rows) == 7 and [r[0] for r in rows],
                       timeout_s=10, what="seven dead letters")
    assert reasons == ["ack_not_json", "unknown_command", "unknown_command", "foreign_command",
                       "ack_payload_too_large", "unknown_equipment", "status_bad_field"]
    rig.wait_state(victim.equipment_id, pending["id"], "executed")  # still working


def encode_ack_for(command_id: str) -> bytes:
    from core.device_messages import Ack

    return encode_ack(Ack(command_id, "executed"))


def _parse(text: str):
    from datetime import datetime

    return datetime.fromisoformat(text.replace("Z", "+00:00"))



def test_a_command_lost_with_the_connection_is_sent_again_when_the_controller_returns(rig, specs, settings,
                                                                                    controllers):
    spec = specs[1]
    root = rig.settings.topic_root
    # The controller gets the command, then loses its connection before it can answer.
    received: list[bytes] = []
    doomed = Publisher(settings.mqtt_url, f"doomed-{spec.equipment_id}",
                       subscriptions=[topics.device_topic(root, spec.equipment_id, topics.COMMAND)],
                       on_message=lambda m: received.append(m.payload))
    doomed.publish(topics.device_topic(root, spec.equipment_id, topics.STATUS), encode_status(Status(True)))
    online(rig, spec.equipment_id)
    command = rig.command(spec.equipment_id, "lock", reason="unpaid invoice", timeout_s=60)
    wait_for(lambda: received, timeout_s=10, interval_s=0.05, what="the first delivery")
    assert rig.wait_state(spec.equipment_id, command["id"], "sent")["send_count"] == 1
    doomed.publish(topics.device_topic(root, spec.equipment_id, topics.STATUS),
                   encode_status(Status(False, reason="lost")))
    doomed.close()

    back = rig.controller(spec).start()
    controllers.append(back)
    done = rig.wait_state(spec.equipment_id, command["id"], "executed")
    assert done["send_count"] == 2 and back.executions == {"lock": 1} and back.machine.locked
    assert [e["state"] for e in done["events"]] == ["queued", "sent", "sent", "acknowledged", "executed"]
