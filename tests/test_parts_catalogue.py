"""The spare-parts catalogue over HTTP: staff maintain it; a customer looks up the parts that fit its
own machine, each with the nearest warehouse holding it (vans' loads never count), and nothing of
another customer's. Warehouses lie on a parallel at known distances from the machine."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from core.geo import distance_km
from core.register import EquipmentRecord, SiteRecord, register_equipment, register_sites
from core.telemetry import Reading
from ingest.writer import Batch, BatchWriter
from ironsight.world import catalogue_entries, catalogue_parts, seed_service_world
from tests.helpers import ApiServer
from tickets.resources import Station, Vehicle, Warehouse, upsert_station, upsert_vehicle, upsert_warehouse

LAT = 48.0
KM = 1 / distance_km(LAT, 11.0, LAT, 12.0)
PUMP = {"name": "main hydraulic pump", "description": "Variable displacement, 210 cc", "models": ["EX210", "EX350"],
        "list_price": "8450.00", "currency": "EUR"}
BELT = {"name": "fan belt", "models": ["EX210", "TC500"]}
HOSE = {"name": "hydraulic hose kit", "models": ["EX210"]}
JIB = {"name": "jib pin", "models": ["TC500"]}


def east(km: float) -> float:
    """The longitude ``km`` east of 11°E on the parallel."""
    return 11.0 + km * KM


def report_position(conn, equipment_id: str, lat: float, lon: float) -> None:
    """One reading with a GPS fix, written as ingest writes it (equipment_state follows)."""
    now = datetime.now(UTC).replace(microsecond=0)
    reading = Reading(ts=now - timedelta(seconds=5), engine_hours=100.0, lat=lat, lon=lon)
    BatchWriter(conn, "seed", now).write(Batch(messages=1, readings=[(equipment_id, reading)],
                                               sequences={equipment_id: [1]}))
    conn.commit()


@pytest.fixture
def api(settings, conn):
    # The machine reported its position at 0 km; its site's centre is 200 km away (a position wins).
    register_sites(conn, [SiteRecord("far-site", LAT, east(200.0), 500.0),
                          SiteRecord("home-site", LAT, east(-20.0), 500.0)])
    register_equipment(conn, [EquipmentRecord("ALPHA-EX", "SN-A1", "EX210", "excavator", "alpha-corp", "far-site"),
                              EquipmentRecord("ALPHA-PARKED", "SN-A2", "EX350", "excavator", "alpha-corp",
                                              "home-site"),
                              EquipmentRecord("ALPHA-NOWHERE", "SN-A3", "EX210", "excavator", "alpha-corp"),
                              EquipmentRecord("BETA-EX", "SN-B1", "EX210", "excavator", "beta-corp")])
    report_position(conn, "ALPHA-EX", LAT, east(0.0))
    t0 = datetime.now(UTC)
    for wid, km, parts in (("W-near", 10.0, (("fan belt", 2),)),
                           ("W-mid", -30.0, (("main hydraulic pump", 1), ("fan belt", 0))),
                           ("W-far", 60.0, (("main hydraulic pump", 3), ("fan belt", 5), ("jib pin", 4)))):
        upsert_warehouse(conn, Warehouse(wid, f"{wid} depot", LAT, east(km), parts), at=t0)
    # A van right at the machine carrying the hose kit: promised to a visit, not for sale.
    upsert_station(conn, Station("ST-1", "station", LAT, east(1.0)))
    upsert_vehicle(conn, Vehicle("VAN-1", "ST-1", None, (("hydraulic hose kit", 3), ("main hydraulic pump", 2))),
                   at=t0)
    conn.commit()
    server = ApiServer(settings, settings.database_url)
    yield server
    server.close()


def catalogue(server: ApiServer) -> None:
    staff = server.user("dispatcher")
    for number, body in (("EX-HP-210", PUMP), ("FB-100", BELT), ("HK-7", HOSE), ("JP-500", JIB)):
        assert staff.put(f"/parts-catalogue/{number}", json=body).status_code == 200, number


def test_staff_maintain_the_catalogue_and_search_it(api):
    dispatcher = api.user("dispatcher")
    created = dispatcher.put("/parts-catalogue/EX-HP-210", json=PUMP)
    assert created.status_code == 200, created.text
    stored = created.json()
    assert (stored["part_number"], stored["name"], stored["list_price"], stored["currency"]) == (
        "EX-HP-210", "main hydraulic pump", "8450.00", "EUR")
    assert stored["models"] == ["EX210", "EX350"]
    admin = api.client()
    assert admin.put("/parts-catalogue/FB-100", json=BELT).json()["list_price"] is None
    # PUT replaces the whole entry: the price goes, a model is added.
    replaced = admin.put("/parts-catalogue/EX-HP-210", json={"name": "main hydraulic pump",
                                                            "models": ["EX350", "EX210", "CP42"]}).json()
    assert (replaced["list_price"], replaced["description"], replaced["models"]) == (None, "", ["CP42", "EX210",
                                                                                               "EX350"])
    assert datetime.fromisoformat(replaced["updated_at"]) > datetime.fromisoformat(stored["updated_at"])

    engineer = api.user("engineer")
    everything = engineer.get("/parts-catalogue").json()
    assert everything["count"] == 2 and [p["part_number"] for p in everything["data"]] == ["FB-100", "EX-HP-210"]
    assert [p["part_number"] for p in engineer.get("/parts-catalogue", params={"q": "PUMP"}).json()["data"]] == [
        "EX-HP-210"]
    assert [p["part_number"] for p in engineer.get("/parts-catalogue", params={"q": "fb-1"}).json()["data"]] == [
        "FB-100"]
    assert [p["part_number"] for p in engineer.get("/parts-catalogue", params={"model": "TC500"}).json()["data"]] == [
        "FB-100"]
    assert engineer.get("/parts-catalogue", params={"model": "TC500", "q": "pump"}).json() == {"data": [], "count": 0}
    # A wildcard in the query is a character to look for, not a pattern.
    assert engineer.get("/parts-catalogue", params={"q": "%"}).json()["count"] == 0
    paged = engineer.get("/parts-catalogue", params={"limit": 1, "offset": 1}).json()
    assert paged["count"] == 2 and [p["part_number"] for p in paged["data"]] == ["EX-HP-210"]

    # Two numbers for one name would make its stock ambiguous.
    clash = admin.put("/parts-catalogue/FB-200", json=BELT)
    assert clash.status_code == 409 and "fan belt" in clash.json()["detail"]
    assert admin.put("/parts-catalogue/X-1", json={"name": "x", "list_price": "10.00"}).status_code == 422
    assert admin.put("/parts-catalogue/X-1", json={"name": "x", "list_price": "1.005", "currency": "EUR"}
                     ).status_code == 422
    assert admin.put("/parts-catalogue/bad%20number", json={"name": "x"}).status_code == 422
    assert engineer.put("/parts-catalogue/X-1", json={"name": "x"}).status_code == 403


def test_a_customer_finds_parts_for_its_own_machine_with_the_nearest_warehouse_that_has_them(api):
    catalogue(api)
    alpha = api.user("customer", customer="alpha-corp")
    body = alpha.get("/portal/equipment/ALPHA-EX/parts").json()
    assert (body["equipment_id"], body["model"], body["position_known"], body["count"]) == (
        "ALPHA-EX", "EX210", True, 3)
    parts = {p["name"]: p for p in body["data"]}
    assert sorted(parts) == ["fan belt", "hydraulic hose kit", "main hydraulic pump"]  # the jib pin fits cranes

    pump = parts["main hydraulic pump"]
    # W-mid, 30 km away, holds one; W-far holds three but is 60 km away. The van's two do not count.
    assert (pump["part_number"], pump["available"], pump["in_stock"]) == ("EX-HP-210", True, 4)
    assert pump["nearest"]["warehouse_id"] == "W-mid" and pump["nearest"]["quantity"] == 1
    assert pump["nearest"]["warehouse_name"] == "W-mid depot"
    assert pump["nearest"]["distance_km"] == pytest.approx(30.0, abs=0.01)
    assert (pump["list_price"], pump["currency"]) == ("8450.00", "EUR")
    belt = parts["fan belt"]
    assert (belt["nearest"]["warehouse_id"], belt["nearest"]["quantity"], belt["in_stock"]) == ("W-near", 2, 7)
    assert belt["nearest"]["distance_km"] == pytest.approx(10.0, abs=0.01)

    # Only a van carries hose kits: out of stock for the customer.
    hose = parts["hydraulic hose kit"]
    assert (hose["available"], hose["in_stock"], hose["nearest"]) == (False, 0, None)
    assert "VAN-1" not in str(body)

    assert [p["name"] for p in alpha.get("/portal/equipment/ALPHA-EX/parts", params={"q": "PUMP"}).json()["data"]] \
        == ["main hydraulic pump"]
    assert [p["name"] for p in alpha.get("/portal/equipment/ALPHA-EX/parts", params={"q": "fb-"}).json()["data"]] \
        == ["fan belt"]
    first = alpha.get("/portal/equipment/ALPHA-EX/parts", params={"limit": 1}).json()
    assert first["count"] == 3 and len(first["data"]) == 1
    assert alpha.get("/portal/equipment/ALPHA-EX/parts", params={"limit": 101}).status_code == 422


def test_without_a_reported_position_the_sites_centre_counts(api):
    catalogue(api)
    alpha = api.user("customer", customer="alpha-corp")
    # ALPHA-PARKED has not reported; its site is 20 km west: W-mid (10 km from there) is nearest.
    [pump] = alpha.get("/portal/equipment/ALPHA-PARKED/parts", params={"q": "pump"}).json()["data"]
    assert pump["nearest"]["warehouse_id"] == "W-mid"
    assert pump["nearest"]["distance_km"] == pytest.approx(10.0, abs=0.01)
    # Neither a position nor a site: stock is known, distances are not.
    nowhere = alpha.get("/portal/equipment/ALPHA-NOWHERE/parts", params={"q": "pump"}).json()
    assert nowhere["position_known"] is False
    assert [(p["available"], p["in_stock"], p["nearest"]) for p in nowhere["data"]] == [(True, 4, None)]


def test_a_customer_cannot_look_into_another_customers_machine_nor_change_the_catalogue(api):
    catalogue(api)
    alpha = api.user("customer", customer="alpha-corp")
    foreign = alpha.get("/portal/equipment/BETA-EX/parts")
    unknown = alpha.get("/portal/equipment/NO-SUCH/parts")
    assert (foreign.status_code, unknown.status_code) == (404, 404)
    assert foreign.json() == {"detail": "no equipment 'BETA-EX'", "status": 404}
    assert alpha.put("/parts-catalogue/EX-HP-210", json={"name": "main hydraulic pump"}).status_code == 403
    assert alpha.get("/parts-catalogue").status_code == 403
    # Staff may look at any customer's machine.
    assert api.user("engineer").get("/portal/equipment/BETA-EX/parts").json()["count"] == 3


def test_ironsight_run_seeds_the_parts_the_diagnosis_names_and_keeps_what_staff_changed(api, conn):
    seed_service_world(conn)
    admin = api.client()
    seeded = admin.get("/parts-catalogue", params={"model": "EX210", "limit": 500}).json()
    assert sorted(p["name"] for p in seeded["data"]) == catalogue_parts()
    pump = next(p for p in seeded["data"] if p["name"] == "main hydraulic pump")
    assert pump["part_number"] == "IS-MAIN-HYDRAULIC-PUMP" and "pump worn" in pump["description"]
    admin.put("/parts-catalogue/IS-MAIN-HYDRAULIC-PUMP", json=PUMP)
    seed_service_world(conn)
    assert admin.get("/parts-catalogue", params={"q": "IS-MAIN-HYDRAULIC"}).json()["data"][0]["list_price"] == "8450.00"
    assert admin.get("/parts-catalogue", params={"limit": 500}).json()["count"] == len(catalogue_entries())
