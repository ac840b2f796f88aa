"""``ironsight run`` secures its embedded broker (Mosquitto): anonymous clients are refused, a
controller can publish only as itself, a van's tracker only its own position, and revoking a
tracker drops it; the simulated fleet provisions its controllers and the whole run still raises
alarms and opens tickets."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import uuid
from datetime import UTC, datetime

import httpx
import psutil
import pytest

from core import topics
from core.device_messages import Ack, Status, encode_ack, encode_status
from core.positions import position_topic
from core.telemetry import Reading, encode_message
from ironsight.embedded_broker import find_mosquitto
from ironsight.processes import free_tcp_port
from tests.helpers import wait_for
from tests.test_broker_security import Client, position_payload

pytestmark = pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto is not installed")

BROKER = re.compile(r"^started embedded mosquitto broker at (mqtt://\S+), secured")
LOGIN = re.compile(r"^login (\S+) / (\S+)")
STATUS = re.compile(r"readings/s\s+([\d.]+)\s+diagnosis lag\s+([\d.]+) s\s+online\s+(\d+)\s+active alarms\s+(\d+)\s+"
                    r"open tickets\s+(\d+)")
CONTROLLERS = 12
LONG_AGO = datetime(2001, 1, 1, tzinfo=UTC)


def test_run_secures_its_broker_and_still_raises_alarms_and_opens_tickets(new_database, tmp_path):
    data = tmp_path / "data"
    root = f"secrun-{uuid.uuid4().hex[:8]}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("IRONSIGHT_")}
    env.update(IRONSIGHT_DATA_DIR=str(data), IRONSIGHT_TOPIC_ROOT=root,
               IRONSIGHT_DATABASE_URL=new_database(f"secrun_{uuid.uuid4().hex[:6]}"))
    port = free_tcp_port()
    # Half the fleet reports a J1939 oil pressure code 20-60 s in: critical alarms, and tickets.
    process = subprocess.Popen(
        [sys.executable, "-m", "ironsight", "run", "--controllers", str(CONTROLLERS), "--api-port", str(port),
         "--status-every", "1", "--fault-share", "0.5", "--faults", "dtc_oil_pressure", "--diagnostics-workers", "1"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in process.stdout], daemon=True).start()
    seen: list[str] = []

    def statuses() -> list[tuple[float, int, int, int]]:
        while not lines.empty():
            seen.append(lines.get())
        return [(float(m.group(1)), int(m.group(3)), int(m.group(4)), int(m.group(5)))
                for line in seen if (m := STATUS.search(line))]

    clients: list[Client] = []

    def client(url: str, client_id: str) -> Client:
        made = Client(url, client_id)
        clients.append(made)
        return made

    descendants: list[psutil.Process] = []
    try:
        wait_for(lambda: any(rate > 0 and online == CONTROLLERS for rate, online, _, _ in statuses()), timeout_s=60,
                 what="a status line with every provisioned controller reporting")
        assert not [line for line in seen if "WARNING" in line], seen
        broker_url = next(m.group(1) for line in seen if (m := BROKER.match(line)))
        username, password = next(m.groups() for line in seen if (m := LOGIN.match(line)))
        api = httpx.Client(base_url=f"http://127.0.0.1:{port}/api/v1", timeout=10)

        def healthy() -> bool:
            try:
                return api.get("/health").status_code == 200
            except httpx.TransportError:
                return False  # the API process may still be starting on a busy machine

        wait_for(healthy, timeout_s=30, what="the API's health")
        token = api.post("/auth/token", data={"username": username, "password": password}).json()["access_token"]
        api.headers["Authorization"] = f"Bearer {token}"
        host = broker_url.removeprefix("mqtt://")

        def as_account(user: str, secret: str) -> str:
            return f"mqtt://{user}:{secret}@{host}"

        # Every controller provisioned its own credential (kept as a controller keeps it) and uses it.
        kept = {path.stem: json.loads(path.read_text()) for path in (data / "sim" / "credentials").glob("*.json")}
        assert len(kept) == CONTROLLERS and kept["EQ-00001"]["username"] == "EQ-00001"
        devices = api.get("/devices", params={"state": "active"}).json()
        assert devices["count"] == CONTROLLERS

        # No anonymous client, no guessed password.
        assert not client(broker_url, "anonymous-1").accepted
        assert not client(as_account("EQ-00001", "guessed"), "guessing-1").accepted

        # A controller may publish only as itself: another machine's telemetry, status and answers
        # to its commands are refused. EQ-00010 reports telemetry only (no status), so a command for
        # it waits queued.
        me = client(as_account("EQ-00001", kept["EQ-00001"]["password"]), "forger-1")
        assert me.accepted
        victim, presence_victim = "EQ-00010", "EQ-00002"
        command = api.post(f"/equipment/{victim}/commands", json={"kind": "lock", "reason": "forged ack test"})
        assert command.status_code == 202, command.text
        command_id = command.json()["id"]
        assert me.refused(topics.telemetry_topic(root, victim),
                          encode_message(1, [Reading(ts=LONG_AGO, oil_temp_c=140.0)]))
        assert me.refused(topics.device_topic(root, presence_victim, topics.STATUS),
                          encode_status(Status(False, reason="lost")))
        assert me.refused(topics.device_topic(root, victim, topics.ACK),
                          encode_ack(Ack(command_id, "executed", result={"locked": True})))
        assert not me.refused(topics.telemetry_topic(root, "EQ-00001"),
                              encode_message(1, [Reading(ts=LONG_AGO, oil_temp_c=80.0)]))
        wait_for(lambda: api.get("/equipment/EQ-00001/readings",
                                 params={"start": "2000-12-31T00:00:00Z", "end": "2001-01-02T00:00:00Z"}
                                 ).json()["count"] == 1,
                 timeout_s=15, what="the controller's own reading stored")
        assert api.get(f"/equipment/{victim}/readings",
                       params={"start": "2000-12-31T00:00:00Z", "end": "2001-01-02T00:00:00Z"}).json()["count"] == 0
        assert api.get(f"/equipment/{victim}/commands/{command_id}").json()["state"] == "queued"
        assert api.get(f"/equipment/{presence_victim}/presence").json()["connected"] is True

        # A van's tracker publishes its own position only; revoked, it is dropped and refused.
        assert api.put("/vehicles/VAN-TEST", json={"station_id": "ST-munich", "engineer_id": None}).status_code == 200
        issued = api.post("/vehicles/VAN-TEST/tracker-credential")
        assert issued.status_code == 201, issued.text
        tracker = issued.json()
        assert tracker["username"] == "vehicle~VAN-TEST"
        van_url = as_account(tracker["username"], tracker["password"])

        def van_accepted() -> Client | None:
            van = client(van_url, f"van-test-{uuid.uuid4().hex[:6]}")
            return van if van.accepted else None

        van = wait_for(van_accepted, timeout_s=15, interval_s=0.5, what="the broker to know the new tracker")
        assert van.refused(position_topic(root, "VAN-munich-day"), position_payload(45.764, 4.836))
        assert not van.refused(position_topic(root, "VAN-TEST"), position_payload(48.15, 11.58))
        wait_for(lambda: api.get("/vehicles/VAN-TEST").json()["lat"] == 48.15, timeout_s=15,
                 what="tracking to move the van by its own position")
        assert api.get("/vehicles/VAN-munich-day").json()["lat"] != 45.764
        assert api.delete("/vehicles/VAN-TEST/tracker-credential").status_code == 204
        assert van.disconnected.wait(15), "the revoked tracker is still connected"
        assert not client(van_url, "van-test-again").accepted

        # Meanwhile the fleet's faults became alarms and tickets.
        wait_for(lambda: any(alarms > 0 and tickets > 0 for _, _, alarms, tickets in statuses()), timeout_s=90,
                 what="alarms and tickets")
        descendants = psutil.Process(process.pid).children(recursive=True)
    finally:
        for made in clients:
            made.close()
        process.send_signal(signal.SIGINT)
        code = process.wait(timeout=60)
    assert code == 0
    gone, alive = psutil.wait_procs(descendants, timeout=10)
    assert not alive, f"left running: {[p.pid for p in alive]}"
