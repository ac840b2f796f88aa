"""The customer portal over HTTP, on a machine whose two hours of readings are known exactly
(tests.helpers.seed_tenant: one reading a minute, working and idling by turns of ten minutes)."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta

import pytest

from tests.helpers import ApiServer, seed_tenant

READINGS = 120


@pytest.fixture
def portal(settings, conn):
    mine = seed_tenant(conn, "alpha-corp", "ALPHA-1")
    seed_tenant(conn, "beta-corp", "BETA-1")
    server = ApiServer(settings, settings.database_url)
    yield server.user("customer", customer="alpha-corp", username="alpha-user"), mine, server
    server.close()


def test_fleet_shows_my_machines_with_position_hours_fuel_alarms_and_next_service(portal):
    client, mine, server = portal
    body = client.get("/portal/fleet").json()
    assert body["count"] == 1
    machine = body["data"][0]
    assert (machine["id"], machine["serial"], machine["model"], machine["online"]) == ("ALPHA-1", "SN-ALPHA-1",
                                                                                       "EX210", True)
    assert machine["engine_hours"] == pytest.approx(1000 + (READINGS - 1) / 60, abs=1e-6)
    assert machine["fuel_level_pct"] == pytest.approx(90 - (READINGS - 1) * 0.1, abs=1e-3)
    assert machine["lat"] == pytest.approx(51.9 + (READINGS - 1) * 1e-4)
    assert machine["active_alarms"] == 1
    # No service recorded: the last one counts as done at 1000 h; every 250 h.
    assert machine["next_service_due_hours"] == 1250.0
    assert machine["hours_to_next_service"] == pytest.approx(1250 - machine["engine_hours"], abs=0.01)
    staff = server.client().get("/portal/fleet").json()
    assert staff["count"] == 2


def test_history_is_raw_for_short_periods_and_bucketed_for_long_ones(portal):
    client, mine, _ = portal
    now = datetime.now(UTC)
    raw = client.get("/portal/equipment/ALPHA-1/history",
                     params={"start": (now - timedelta(hours=3)).isoformat(), "end": now.isoformat()}).json()
    assert raw["bucket_s"] is None and raw["count"] == READINGS
    day = client.get("/portal/equipment/ALPHA-1/history").json()
    assert day["bucket_s"] == 300 and sum(r["samples"] for r in day["data"]) == READINGS
    year = client.get("/portal/equipment/ALPHA-1/history",
                      params={"start": (now - timedelta(days=365)).isoformat(), "end": now.isoformat()}).json()
    assert year["bucket_s"] == 86400 and sum(r["samples"] for r in year["data"]) == READINGS
    hourly = client.get("/portal/equipment/ALPHA-1/history", params={"bucket": "1h"}).json()
    assert hourly["bucket_s"] == 3600 and max(r["engine_hours"] for r in hourly["data"]) == pytest.approx(
        1000 + (READINGS - 1) / 60, abs=1e-6)
    for params in ({"start": (now - timedelta(days=401)).isoformat()}, {"start": now.isoformat(),
                                                                       "end": (now - timedelta(hours=1)).isoformat()},
                   {"bucket": "1s"}, {"bucket": "soon"}, {"max_points": 5}):
        response = client.get("/portal/equipment/ALPHA-1/history", params=params)
        assert response.status_code == 422, params
        assert response.json()["status"] == 422


def test_track_usage_and_service_record(portal):
    client, mine, _ = portal
    track = client.get("/portal/equipment/ALPHA-1/track").json()
    assert track["count"] == READINGS
    assert [p["ts"] for p in track["data"]] == sorted(p["ts"] for p in track["data"])
    assert track["data"][-1]["lat"] == pytest.approx(51.9 + (READINGS - 1) * 1e-4)

    usage = client.get("/portal/equipment/ALPHA-1/usage").json()
    days = usage["data"]
    assert sum(d["samples"] for d in days) == READINGS
    # Each reading counts until the next; the last has no next. Ten minutes working, ten idling.
    assert sum(d["working_hours"] for d in days) == pytest.approx(60 / 60)
    assert sum(d["idle_hours"] for d in days) == pytest.approx(59 / 60)
    assert sum(d["fuel_used_pct"] for d in days) == pytest.approx((READINGS - 1) * 0.1, abs=1e-3)
    assert sum(d["engine_hours"] for d in days) == pytest.approx((READINGS - 1) / 60, abs=1 / 60 + 1e-6)

    record = client.get("/portal/equipment/ALPHA-1/service-record").json()
    assert record["count"] == 2
    resolved = next(t for t in record["data"] if t["id"] == mine.ticket_id)
    assert resolved["engineer"] == "karl" and resolved["parts_used"] == [{"part": "oil filter", "quantity": 1}]
    assert [e["event"] for e in resolved["history"]][:2] == ["created", "accepted"]


def test_a_customer_submits_the_survey_of_its_ticket(portal):
    client, mine, _ = portal
    scores = {"product_quality": 5, "overall_service": 5, "timeliness": 4, "attitude": 5, "engineer_skill": 5,
              "parts_supply": 4}
    done = client.post(f"/tickets/{mine.ticket_id}/survey", json=scores | {"actor": "someone else"})
    assert done.status_code == 200 and done.json()["state"] == "closed"
    assert done.json()["surveys"][0]["actor"] == "alpha-user"
    again = client.post(f"/tickets/{mine.ticket_id}/survey", json=scores | {"actor": "x"})
    assert again.status_code == 409


def test_csv_export_streams_every_reading_of_the_period(portal):
    client, mine, _ = portal
    response = client.get("/portal/equipment/ALPHA-1/export.csv")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/csv")
    assert "content-length" not in response.headers  # chunked: written while it is read
    assert "ALPHA-1" in response.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert len(rows) == READINGS
    assert float(rows[0]["engine_hours"]) == pytest.approx(1000.0)
    assert datetime.fromisoformat(rows[-1]["ts"]) > datetime.fromisoformat(rows[0]["ts"])
    assert client.get("/portal/equipment/BETA-1/export.csv").status_code == 404


def test_long_histories_come_from_the_hourly_rollups_and_equal_the_raw_answer(portal, conn):
    from ingest import queries

    client, mine, server = portal
    now = datetime.now(UTC)
    # Another batch into hours that already have rollups, with a duplicate that must not count twice.
    last = conn.execute("SELECT max(ts) FROM readings WHERE equipment_id = 'ALPHA-1'").fetchone()[0]
    from core.telemetry import Reading
    from ingest.writer import Batch, BatchWriter

    extra = [("ALPHA-1", Reading(ts=last - timedelta(seconds=30) - timedelta(minutes=70 + i), oil_temp_c=150.0,
                                 engine_hours=2000.0, lat=10.0, lon=10.0)) for i in range(5)]
    extra.append(("ALPHA-1", Reading(ts=last, oil_temp_c=999.0)))
    BatchWriter(conn, "late", now).write(Batch(messages=1, readings=extra, sequences={"ALPHA-1": [1]}))
    stored = conn.execute("SELECT count(*) FROM readings WHERE equipment_id = 'ALPHA-1'").fetchone()[0]
    assert stored == READINGS + 5
    for start, bucket in ((now - timedelta(days=365), timedelta(days=1)), (now - timedelta(hours=5, minutes=7),
                                                                          timedelta(hours=1)),
                          (now - timedelta(hours=1, minutes=59), timedelta(hours=2))):
        rolled = queries.readings(conn, "ALPHA-1", start, now, bucket, 1000)
        raw = queries.readings(conn, "ALPHA-1", start, now, bucket, 1000, rollups=False)
        conn.commit()
        assert [r["ts"] for r in rolled] == [r["ts"] for r in raw] and rolled, bucket
        for a, b in zip(rolled, raw, strict=True):
            assert a["samples"] == b["samples"]
            assert (a["lat"], a["lon"], a["engine_hours"]) == (b["lat"], b["lon"], b["engine_hours"])
            for channel in ("oil_temp_c", "engine_rpm", "fuel_level_pct", "speed_kmh"):
                assert a[channel] == pytest.approx(b[channel], rel=1e-6), channel
    year = client.get("/portal/equipment/ALPHA-1/history",
                      params={"start": (now - timedelta(days=365)).isoformat(), "end": now.isoformat()}).json()
    assert sum(r["samples"] for r in year["data"]) == READINGS + 5
