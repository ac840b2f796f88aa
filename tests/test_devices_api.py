"""The device registry through the API: create, read, update, delete, credentials, revocation."""

from __future__ import annotations

import httpx
import pytest

from devices.broker_auth import verify_password
from tests.helpers import ApiServer

MACHINE = {"model": "EX210", "kind": "excavator", "customer": "acme-construction", "site": "rotterdam-port"}


@pytest.fixture
def http(settings):
    api = ApiServer(settings, settings.database_url)
    with httpx.Client(base_url=api.url + "/api/v1", timeout=10, headers=api.headers) as client:
        yield client
    api.close()


def test_registry_crud(http, conn):
    created = http.post("/devices", json={"equipment_id": "EQ-7", "serial": "CTL-7", "firmware": "2.0.1",
                                          "commissioned_on": "2026-03-01", "report_interval_s": 5,
                                          "equipment_serial": "EX210-777", **MACHINE})
    assert created.status_code == 201, created.text
    device = created.json()
    assert device["state"] == "pending" and device["equipment_serial"] == "EX210-777"
    assert device["commissioned_on"] == "2026-03-01" and device["report_interval_s"] == 5.0
    assert http.get("/equipment/EQ-7").json()["model"] == "EX210"  # the machine was registered with it

    # A controller for a machine already registered: no machine details needed.
    second = http.post("/devices", json={"equipment_id": "EQ-8", "serial": "CTL-8", **MACHINE})
    assert second.status_code == 201
    assert http.post("/devices", json={"equipment_id": "EQ-9", "serial": "CTL-8", **MACHINE}).status_code == 409
    assert http.post("/devices", json={"equipment_id": "EQ-8", "serial": "CTL-88"}).status_code == 409
    assert http.post("/devices", json={"equipment_id": "NOPE", "serial": "CTL-99"}).status_code == 404
    assert http.post("/devices", json={"equipment_id": "EQ-9", "serial": "CTL-9", "model": "EX210"}
                     ).status_code == 422
    assert http.post("/devices", json={"equipment_id": "bad id", "serial": "CTL-9"}).status_code == 422

    updated = http.patch("/devices/EQ-7", json={"firmware": "2.1.0", "report_interval_s": 2})
    assert updated.status_code == 200 and updated.json()["firmware"] == "2.1.0"
    assert updated.json()["report_interval_s"] == 2.0 and updated.json()["commissioned_on"] == "2026-03-01"
    assert http.patch("/devices/NOPE", json={"firmware": "1"}).status_code == 404
    for required in ("report_interval_s", "customer", "kind"):
        assert http.patch("/devices/EQ-7", json={required: None}).status_code == 422
    moved = http.patch("/devices/EQ-7", json={"customer": "nordbau", "site": "munich-ring"}).json()
    assert (moved["customer"], moved["site"], moved["firmware"]) == ("nordbau", "munich-ring", "2.1.0")
    assert http.get("/equipment", params={"customer": "nordbau"}).json()["count"] == 1

    credential = http.post("/devices/EQ-7/credential")
    assert credential.status_code == 201
    secret = credential.json()
    assert secret["username"] == "EQ-7" and len(secret["password"]) >= 32
    stored = conn.execute("SELECT password_hash FROM devices WHERE equipment_id = 'EQ-7'").fetchone()[0]
    assert stored.startswith("$7$") and verify_password(secret["password"], stored)
    assert secret["password"] not in stored
    assert http.get("/devices", params={"state": "active"}).json()["count"] == 1
    assert http.get("/devices", params={"state": "pending"}).json()["data"][0]["equipment_id"] == "EQ-8"

    revoked = http.post("/devices/EQ-7/revoke").json()
    assert revoked["state"] == "revoked" and revoked["revoked_at"]
    conn.rollback()
    assert conn.execute("SELECT password_hash FROM devices WHERE equipment_id = 'EQ-7'").fetchone()[0] is None
    reinstated = http.post("/devices/EQ-7/credential").json()
    assert reinstated["password"] != secret["password"]
    assert http.get("/devices/EQ-7").json()["state"] == "active"

    assert http.delete("/devices/EQ-8").status_code == 204
    assert http.get("/devices/EQ-8").status_code == 404
    assert http.delete("/devices/EQ-8").status_code == 404
    assert http.get("/equipment/EQ-8").status_code == 200  # the machine stays registered
    assert http.get("/devices").json()["count"] == 1


def test_commands_and_presence_refuse_what_cannot_be(http):
    http.post("/devices", json={"equipment_id": "EQ-1", "serial": "CTL-1", **MACHINE})
    assert http.post("/equipment/NOPE/commands", json={"kind": "snapshot"}).status_code == 404
    assert http.post("/equipment/EQ-1/commands", json={"kind": "self_destruct"}).status_code == 422
    assert http.post("/equipment/EQ-1/commands", json={"kind": "snapshot", "params": {"x": 1}}).status_code == 422
    assert http.post("/equipment/EQ-1/commands", json={"kind": "unlock", "reason": "  "}).status_code == 422
    assert http.post("/equipment/EQ-1/commands", json={"kind": "snapshot", "timeout_s": 0}).status_code == 422
    assert http.post("/equipment/EQ-1/commands", json={
        "kind": "set_report_interval", "params": {"interval_s": 0.01, "duration_s": 60}}).status_code == 422
    assert http.get("/equipment/EQ-1/commands/not-a-uuid").status_code == 404
    assert http.get("/equipment/NOPE/presence").status_code == 404
    presence = http.get("/equipment/EQ-1/presence").json()
    assert presence["online"] is False and presence["connected"] is None
    queued = http.post("/equipment/EQ-1/commands", json={"kind": "snapshot", "timeout_s": 5}).json()
    assert queued["state"] == "queued" and queued["send_count"] == 0
    other = http.post("/devices", json={"equipment_id": "EQ-2", "serial": "CTL-2", **MACHINE})
    assert other.status_code == 201
    assert http.get(f"/equipment/EQ-2/commands/{queued['id']}").status_code == 404
