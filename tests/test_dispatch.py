"""Dispatch on hand-made geometries: the nearest engineer is not always the best one, the part
decides the route, qualification and shifts filter, joint assignment beats the greedy rule; then
the same against the real database: proposals, a confirmed dispatch, its stock and ETA."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

import pytest

from core.geo import distance_km
from core.register import EquipmentRecord, SiteRecord, register_equipment, register_sites
from tickets import dispatch, service, stock
from tickets.dispatch import Crew, Job, Place, TravelModel
from tickets.resources import (
    Engineer,
    Station,
    Vehicle,
    Warehouse,
    upsert_engineer,
    upsert_station,
    upsert_vehicle,
    upsert_warehouse,
)

TRAVEL = TravelModel(road_factor=1.0, speed_kmh=60.0, pickup_min=0.0)
# Along a parallel near Munich, one degree of longitude is about 74 km.
LAT = 48.0
KM = 1 / (distance_km(LAT, 11.0, LAT, 12.0))


def east(km: float) -> float:
    """The longitude ``km`` east of 11°E on the parallel."""
    return 11.0 + km * KM


def crew(engineer: str, km: float, *, carries: tuple[str, ...] = (), skills: tuple[str, ...] = ("EX210",)) -> Crew:
    return Crew(engineer, f"V-{engineer}", LAT, east(km), frozenset(skills), frozenset(carries))


def job(ticket_id: int, km: float, *, part: str | None = None, model: str = "EX210", priority: str = "major") -> Job:
    return Job(ticket_id, f"EQ-{ticket_id}", model, LAT, east(km), part, priority)


def test_nearest_is_not_best_when_the_part_is_elsewhere():
    # Anna is 5 km away without the pump; the only warehouse with one is 40 km the other way.
    # Ben is 20 km away with a pump on board: he arrives first.
    site = job(1, 0.0, part="main hydraulic pump")
    stock_ = {"main hydraulic pump": [Place("W-west", LAT, east(-40.0))]}
    options = dispatch.options_for(site, [crew("anna", 5.0), crew("ben", 20.0, carries=("main hydraulic pump",))],
                                   stock_, TRAVEL)
    assert [o.engineer_id for o in options] == ["ben", "anna"]
    assert options[0].warehouse_id is None and options[0].travel_h == pytest.approx(20 / 60, rel=1e-3)
    assert options[1].warehouse_id == "W-west" and options[1].distance_km == pytest.approx(85.0, rel=1e-3)
    # Without the part anywhere, the nearest goes, marked as arriving without it.
    bare = dispatch.options_for(job(1, 0.0, part="unobtainium"), [crew("anna", 5.0)], stock_, TRAVEL)
    assert bare[0].engineer_id == "anna" and not bare[0].part_on_board


def test_the_warehouse_on_the_way_beats_the_one_nearest_the_engineer():
    stock_ = {"fan belt": [Place("W-behind", LAT, east(-12.0)), Place("W-between", LAT, east(15.0))]}
    plan = dispatch.plan_trip(job(1, 30.0, part="fan belt"), crew("anna", -10.0), stock_, TRAVEL)
    assert plan is not None and plan.warehouse_id == "W-between"
    assert plan.distance_km == pytest.approx(40.0, rel=1e-3)
    assert plan.legs[0] == (LAT, east(15.0)) and plan.legs[-1] == (LAT, east(30.0))


def test_only_qualified_engineers_are_proposed():
    crane = job(1, 0.0, model="TC500")
    options = dispatch.options_for(crane, [crew("anna", 1.0), crew("carl", 50.0, skills=("TC500",))], {}, TRAVEL)
    assert [o.engineer_id for o in options] == ["carl"]
    assert dispatch.plan_trip(crane, crew("anna", 1.0), {}, TRAVEL) is None


def test_joint_assignment_beats_greedy_on_a_known_case():
    # Jobs at 0 and 20 km; Anna at 10 km is near both, Ben at -15 km only near the first.
    jobs = [job(1, 0.0), job(2, 20.0)]
    crews = [crew("anna", 10.0), crew("ben", -15.0)]
    greedy = dispatch.assign_greedily(jobs, crews, {}, TRAVEL)
    joint = dispatch.assign_jointly(jobs, crews, {}, TRAVEL)
    assert {(p.ticket_id, p.engineer_id) for p in greedy} == {(1, "anna"), (2, "ben")}
    assert {(p.ticket_id, p.engineer_id) for p in joint} == {(1, "ben"), (2, "anna")}
    # Both jobs are major (weight 2): 2 × 45 min against 2 × 25 min.
    assert dispatch.total_weighted_hours(greedy, jobs) == pytest.approx(2 * 45 / 60, rel=1e-3)
    assert dispatch.total_weighted_hours(joint, jobs) == pytest.approx(2 * 25 / 60, rel=1e-3)


def test_joint_assignment_serves_the_critical_job_when_crews_are_short():
    jobs = [job(1, 0.0, priority="minor"), job(2, 30.0, priority="critical")]
    joint = dispatch.assign_jointly(jobs, [crew("anna", 2.0)], {}, TRAVEL)
    assert [(p.ticket_id, p.engineer_id) for p in joint] == [(2, "anna")]
    # A job nobody is qualified for stays out; the others are still assigned.
    jobs = [job(1, 0.0, model="CP42"), job(2, 30.0)]
    assert [p.ticket_id for p in dispatch.assign_jointly(jobs, [crew("anna", 2.0)], {}, TRAVEL)] == [2]


def test_proposals_leave_out_trips_beyond_reach_but_options_list_them():
    # 300 km at 60 km/h is 5 h: past the 4 h reach, the job waits for a nearer crew.
    far = [job(1, 0.0)]
    crews = [crew("anna", 300.0)]
    assert dispatch.assign_jointly(far, crews, {}, TRAVEL) == []
    assert dispatch.assign_greedily(far, crews, {}, TRAVEL) == []
    assert [o.engineer_id for o in dispatch.options_for(far[0], crews, {}, TRAVEL)] == ["anna"]
    wide = TravelModel(road_factor=1.0, speed_kmh=60.0, pickup_min=0.0, max_travel_h=6.0)
    assert [p.engineer_id for p in dispatch.assign_jointly(far, crews, {}, wide)] == ["anna"]


@pytest.mark.parametrize(("start", "end", "local", "expected"), [
    (time(7), time(17), time(8), True), (time(7), time(17), time(17), False),
    (time(22), time(6), time(23), True), (time(22), time(6), time(5), True), (time(22), time(6), time(12), False),
    (time(0), time(0), time(3), True),
])
def test_shifts_in_local_time(start, end, local, expected):
    # 08:00 in Berlin in winter is 07:00 UTC.
    at = datetime(2026, 1, 15, local.hour, 0, tzinfo=UTC) - timedelta(hours=1)
    assert dispatch.on_shift(start, end, "Europe/Berlin", at) is expected


T0 = datetime(2026, 1, 15, 9, 0, tzinfo=UTC)


@pytest.fixture
def world(conn):
    """A site 0 km, Anna 5 km east (no pump), Ben 20 km west (a pump on board), a warehouse 40 km east."""
    register_sites(conn, [SiteRecord("site", LAT, east(0.0), 1000.0, "Europe/Berlin")])
    register_equipment(conn, [EquipmentRecord("EX-1", "S-1", "EX210", "excavator", "acme", "site"),
                              EquipmentRecord("EX-2", "S-2", "EX210", "excavator", "acme", "site")])
    upsert_station(conn, Station("ST-E", "east", LAT, east(5.0)))
    upsert_station(conn, Station("ST-W", "west", LAT, east(-20.0)))
    upsert_engineer(conn, Engineer("anna", "Anna", "ST-E", ("EX210",)))
    upsert_engineer(conn, Engineer("ben", "Ben", "ST-W", ("EX210",)))
    upsert_engineer(conn, Engineer("nightowl", "Nora", "ST-E", ("EX210",), time(22), time(5), "Europe/Berlin"))
    upsert_vehicle(conn, Vehicle("V-anna", "ST-E", "anna"), at=T0)
    upsert_vehicle(conn, Vehicle("V-ben", "ST-W", "ben", parts=(("main hydraulic pump", 1),)), at=T0)
    upsert_vehicle(conn, Vehicle("V-nora", "ST-E", "nightowl"), at=T0)
    upsert_warehouse(conn, Warehouse("W-east", "east", LAT, east(40.0), parts=(("main hydraulic pump", 3),)),
                     at=T0)
    conn.commit()
    return conn


def pump_ticket(conn, equipment_id: str = "EX-1") -> int:
    ticket, _ = service.create_ticket(conn, service.NewTicket(
        equipment_id=equipment_id, title="hydraulic pressure low", priority="major", created_at=T0,
        diagnosis={"spare_part": "main hydraulic pump", "remote_resolvable": False}))
    service.apply_action(conn, ticket["id"], "accept", actor="dispatcher", at=T0)
    return ticket["id"]


def test_proposal_from_the_database_skips_off_shift_and_busy_engineers(world):
    first = pump_ticket(world)
    proposal = dispatch.propose(world, T0, TRAVEL)
    assert proposal["crews_available"] == 2  # Nora works nights
    assert [(p["ticket_id"], p["engineer_id"], p["warehouse_id"]) for p in proposal["proposals"]] == [
        (first, "ben", None)]
    assert abs(proposal["proposals"][0]["eta"] - (T0 + timedelta(minutes=20))) < timedelta(seconds=1)
    service.apply_action(world, first, "dispatch", actor="dispatcher", fields={"engineer": "ben"}, at=T0,
                         travel=TRAVEL)
    second = pump_ticket(world, "EX-2")
    # Ben is busy now: Anna goes, collecting a pump 35 km east first.
    [plan] = dispatch.propose(world, T0, TRAVEL)["proposals"]
    assert (plan["ticket_id"], plan["engineer_id"], plan["warehouse_id"]) == (second, "anna", "W-east")
    assert plan["distance_km"] == pytest.approx(75.0, rel=1e-3)


def test_confirmed_dispatch_sets_eta_promise_and_moves_the_part(world):
    ticket_id = pump_ticket(world)
    ticket = service.apply_action(world, ticket_id, "dispatch", actor="dispatcher",
                                  fields={"engineer": "anna"}, at=T0, travel=TRAVEL)
    assert ticket["vehicle_id"] == "V-anna" and ticket["pickup_warehouse_id"] == "W-east"
    assert ticket["required_part"] == "main hydraulic pump"
    assert abs(ticket["eta"] - (T0 + timedelta(minutes=75))) < timedelta(seconds=1)
    assert ticket["arrive_by"] == ticket["eta"] + timedelta(minutes=TRAVEL.margin_min)
    assert stock.stock_at(world, "warehouse", "W-east") == {"main hydraulic pump": 2}
    assert stock.stock_at(world, "vehicle", "V-anna") == {"main hydraulic pump": 1}
    # Returned before collecting it: the pump goes back on the shelf.
    service.apply_action(world, ticket_id, "return", actor="anna", fields={"reason": "van broke down"}, at=T0)
    assert stock.stock_at(world, "warehouse", "W-east") == {"main hydraulic pump": 3}
    assert stock.stock_at(world, "vehicle", "V-anna") == {"main hydraulic pump": 0}


def test_parts_used_leave_the_vehicle_stock(world):
    ticket_id = pump_ticket(world)
    for action, fields in (("dispatch", {"engineer": "ben"}), ("engineer_accept", {}), ("arrive", {}),
                           ("resolve", {"work_done": "pump replaced", "first_time_fix": True,
                                        "parts_used": [{"part": "main hydraulic pump", "quantity": 1},
                                                       {"part": "seal kit", "quantity": 2}]})):
        ticket = service.apply_action(world, ticket_id, action, actor="ben", fields=fields, at=T0, travel=TRAVEL)
    assert stock.stock_at(world, "vehicle", "V-ben") == {"main hydraulic pump": 0}
    resolved = [e for e in ticket["history"] if e["event"] == "resolved"][0]
    assert resolved["detail"]["stock"] == [
        {"part": "main hydraulic pump", "used": 1, "from_stock": 1, "shortfall": 0},
        {"part": "seal kit", "used": 2, "from_stock": 0, "shortfall": 2}]


def test_dispatch_refuses_unknown_or_unqualified_engineers(world):
    register_equipment(world, [EquipmentRecord("CR-1", "S-3", "TC500", "crane", "acme", "site")])
    world.commit()
    crane = pump_ticket(world, "CR-1")
    with pytest.raises(dispatch.DispatchRefused, match="not qualified"):
        service.apply_action(world, crane, "dispatch", actor="d", fields={"engineer": "anna"}, at=T0)
    with pytest.raises(dispatch.DispatchRefused, match="no active engineer"):
        service.apply_action(world, crane, "dispatch", actor="d", fields={"engineer": "zed"}, at=T0)
    assert service.get_ticket(world, crane)["state"] == "accepted"


def test_dispatch_over_http(settings, conn):
    from tests.helpers import ApiServer

    register_sites(conn, [SiteRecord("site", LAT, east(0.0), 1000.0, "Europe/Berlin")])
    register_equipment(conn, [EquipmentRecord("EX-1", "S-1", "EX210", "excavator", "acme", "site")])
    conn.commit()
    server = ApiServer(settings, settings.database_url)
    try:
        engineer = server.user("engineer")
        assert engineer.get("/dispatch/proposals").status_code == 200
        assert engineer.put("/service-stations/ST-X", json={"name": "x", "lat": 1, "lon": 1}).status_code == 403
        with server.client() as api:
            assert api.put("/service-stations/ST-E", json={"name": "east", "lat": LAT, "lon": east(5.0)}).is_success
            bad_zone = api.put("/engineers/anna", json={"name": "Anna", "station_id": "ST-E", "timezone": "Mars/Base"})
            assert bad_zone.status_code == 422
            no_station = api.put("/engineers/anna", json={"name": "Anna", "station_id": "nowhere"})
            assert no_station.status_code == 422 and "nowhere" in no_station.json()["detail"]
            anna = api.put("/engineers/anna", json={"name": "Anna", "station_id": "ST-E", "skills": ["EX210"]})
            assert anna.json()["on_shift"] and not anna.json()["available"]  # all day; no vehicle yet
            assert (anna.json()["shift_start"], anna.json()["shift_end"]) == ("00:00", "00:00")
            assert api.put("/engineers/anna", json={"name": "Anna", "station_id": "ST-E",
                                                    "shift_start": "25:00"}).status_code == 422
            van = api.put("/vehicles/V-anna", json={"station_id": "ST-E", "engineer_id": "anna"}).json()
            assert van["lat"] == LAT and van["parts"] == {}
            for wid, km in (("W-far", 60.0), ("W-near", 30.0)):
                api.put(f"/warehouses/{wid}", json={"name": wid, "lat": LAT, "lon": east(km),
                                                    "parts": [{"part": "fan belt", "quantity": 2}]})
            assert api.put("/warehouses/W-x/stock/fan%20belt", json={"quantity": 1}).status_code == 404
            assert api.get("/parts").json() == [{"part": "fan belt", "in_warehouses": 4, "in_vehicles": None}]
            ticket = api.post("/tickets", json={"equipment_id": "EX-1", "title": "belt squeal", "priority": "minor",
                                                "diagnosis": {"spare_part": "fan belt"}}).json()
            api.post(f"/tickets/{ticket['id']}/actions/accept", json={"actor": "dispatcher"})
            proposal = api.get("/dispatch/proposals").json()
            assert proposal["waiting"] == 1 and proposal["unassigned"] == []
            [plan] = proposal["proposals"]
            assert (plan["engineer_id"], plan["warehouse_id"]) == ("anna", "W-near")
            options = api.get(f"/tickets/{ticket['id']}/dispatch-options").json()
            assert [o["engineer_id"] for o in options] == ["anna"]
            assert api.get("/tickets/999999/dispatch-options").status_code == 404
            unknown = api.post(f"/tickets/{ticket['id']}/actions/dispatch", json={"actor": "d", "engineer": "zed"})
            assert unknown.status_code == 422
            # The dispatcher overrides the warehouse.
            sent = api.post(f"/tickets/{ticket['id']}/actions/dispatch",
                            json={"actor": "d", "engineer": "anna", "warehouse": "W-far"}).json()
            assert sent["state"] == "dispatched" and sent["pickup_warehouse_id"] == "W-far"
            assert sent["eta"] is not None and sent["vehicle_id"] == "V-anna"
            assert api.get("/warehouses/W-far").json()["parts"] == {"fan belt": 1}
            assert api.get("/vehicles/V-anna").json()["current_ticket_id"] == ticket["id"]
            assert api.get("/engineers/anna").json()["current_ticket_id"] == ticket["id"]
            assert api.get("/dispatch/proposals").json()["waiting"] == 0
            assert api.get("/engineers/nobody").status_code == 404
    finally:
        server.close()
