"""The HTTP API over a real database: equipment, readings (raw and bucketed), tickets, alarms."""

from datetime import UTC, datetime, timedelta

import httpx
import pytest

from core.register import EquipmentRecord, register_equipment
from tests.helpers import ApiServer


@pytest.fixture
def api(settings, conn):
    register_equipment(conn, [EquipmentRecord("EX-1", "S-1", "EX210", "excavator", "acme", "rotterdam"),
                              EquipmentRecord("CR-2", "S-2", "TC500", "crane", "nordbau", "munich")])
    server = ApiServer(settings, settings.database_url)
    yield server.client()
    server.close()


def test_health_and_openapi_docs(api):
    assert api.get("/health").json() == {"status": "ok", "database": True, "detail": None}
    root = str(api.base_url).removesuffix("/").removesuffix("/api/v1")
    paths = httpx.get(root + "/openapi.json").json()["paths"]
    assert httpx.get(root + "/docs").status_code == 200
    for path in ("/api/v1/equipment", "/api/v1/equipment/{equipment_id}", "/api/v1/equipment/{equipment_id}/readings",
                 "/api/v1/alarms", "/api/v1/tickets", "/api/v1/tickets/{ticket_id}", "/api/v1/health"):
        assert path in paths


def test_equipment_list_filter_and_unknown(api):
    body = api.get("/equipment").json()
    assert body["count"] == 2 and [e["id"] for e in body["data"]] == ["CR-2", "EX-1"]
    assert body["data"][1]["online"] is False and body["data"][1]["last_ts"] is None
    assert api.get("/equipment", params={"customer": "nordbau"}).json()["count"] == 1
    assert api.get("/equipment/EX-1").json()["model"] == "EX210"
    assert api.get("/equipment/NOPE").status_code == 404


def test_readings_raw_and_downsampled(api, conn):
    start = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
    conn.execute(
        "INSERT INTO readings (equipment_id, ts, oil_temp_c, engine_hours, lat, lon) "
        "SELECT 'EX-1', %s + make_interval(secs => s), 80 + (s / 60), 100 + s / 3600.0, 51.0 + s * 1e-5, 4.0 "
        "FROM generate_series(0, 599) AS s", (start,))
    conn.commit()
    window = {"start": start.isoformat(), "end": (start + timedelta(minutes=10)).isoformat()}
    raw = api.get("/equipment/EX-1/readings", params=window).json()
    assert raw["count"] == 600 and raw["bucket_s"] is None
    assert raw["data"][0]["oil_temp_c"] == 80.0
    bucketed = api.get("/equipment/EX-1/readings", params=window | {"bucket": "5m"}).json()
    assert bucketed["bucket_s"] == 300
    assert [b["samples"] for b in bucketed["data"]] == [300, 300]
    first = bucketed["data"][0]
    assert first["oil_temp_c"] == pytest.approx(sum(80 + s // 60 for s in range(300)) / 300, abs=1e-3)
    assert first["lat"] == pytest.approx(51.0 + 299e-5)  # last known position in the bucket
    assert first["engine_hours"] == pytest.approx(100 + 299 / 3600)


@pytest.mark.parametrize("params, status", [
    ({"bucket": "5 minutes"}, 422),
    ({"bucket": "0s"}, 422),
    ({"start": "2026-01-01T00:00:00Z", "end": "2026-03-01T00:00:00Z"}, 422),  # raw over 7 days
    ({"start": "2026-01-01T00:00:00Z", "end": "2026-03-01T00:00:00Z", "bucket": "1s"}, 422),  # too many points
    ({"start": "2026-03-01T00:00:00Z", "end": "2026-01-01T00:00:00Z"}, 422),
    ({"start": "2020-01-01T00:00:00Z", "end": "2026-03-01T00:00:00Z", "bucket": "1d"}, 422),  # over 400 days
    ({"limit": 100000}, 422),
])
def test_readings_refuse_unbounded_requests(api, params, status):
    response = api.get("/equipment/EX-1/readings", params=params)
    assert response.status_code == status
    assert "detail" in response.json()


def test_ticket_creation_is_idempotent_per_alarm_and_key(api, conn):
    alarm_id = conn.execute("INSERT INTO alarms (equipment_id, fault_code, severity, raised_at, last_fault_id) "
                            "VALUES ('EX-1', 'OIL_OVERHEAT', 'major', now(), 1) RETURNING id").fetchone()[0]
    conn.commit()
    body = {"equipment_id": "EX-1", "title": "OIL_OVERHEAT on EX-1", "priority": "major", "source_alarm_id": alarm_id}
    first = api.post("/tickets", json=body)
    again = api.post("/tickets", json=body)
    assert first.status_code == 201 and again.status_code == 200
    assert first.json()["id"] == again.json()["id"]
    keyed = api.post("/tickets", json={"equipment_id": "CR-2", "title": "call"}, headers={"Idempotency-Key": "k1"})
    keyed_again = api.post("/tickets", json={"equipment_id": "CR-2", "title": "call"},
                           headers={"Idempotency-Key": "k1"})
    assert keyed.status_code == 201 and keyed_again.json()["id"] == keyed.json()["id"]
    assert api.post("/tickets", json={"equipment_id": "EX-1", "title": "x"},
                    headers={"Idempotency-Key": "k1"}).status_code == 409
    listing = api.get("/tickets").json()
    assert listing["count"] == 2
    ticket = api.get(f"/tickets/{first.json()['id']}").json()
    assert ticket["state"] == "created"
    assert [e["event"] for e in ticket["history"]] == ["created"]
    assert api.get("/tickets/999999").status_code == 404
    assert api.get("/tickets", params={"equipment_id": "CR-2"}).json()["count"] == 1


@pytest.mark.parametrize("body", [
    {"equipment_id": "NOPE", "title": "x"},
    {"equipment_id": "EX-1", "title": ""},
    {"equipment_id": "EX-1", "title": "x", "priority": "urgent"},
    {"equipment_id": "EX-1", "title": "x" * 201},
    {"title": "x"},
])
def test_ticket_creation_rejects_bad_bodies(api, body):
    response = api.post("/tickets", json=body)
    assert response.status_code == 422
    assert api.get("/tickets").json()["count"] == 0


def test_alarms_listing(api, conn):
    conn.execute("INSERT INTO alarms (equipment_id, fault_code, severity, raised_at, last_fault_id) "
                 "VALUES ('EX-1', 'OIL_OVERHEAT', 'major', now(), 1), ('CR-2', 'OIL_OVERHEAT', 'major', now(), 2)")
    conn.execute("UPDATE alarms SET state = 'cleared', cleared_at = now() WHERE equipment_id = 'CR-2'")
    conn.commit()
    assert api.get("/alarms").json()["count"] == 2
    active = api.get("/alarms", params={"state": "active"}).json()
    assert [a["equipment_id"] for a in active["data"]] == ["EX-1"]
    assert api.get("/alarms", params={"state": "bogus"}).status_code == 422
