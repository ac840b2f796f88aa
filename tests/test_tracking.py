"""Vehicle tracking over the real broker: positions move the vehicle, update the visit's ETA, warn
once when the promised arrival slips, note the part collected, and record the arrival on site."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from core.positions import Position, encode_position, position_topic
from core.register import EquipmentRecord, SiteRecord, register_equipment, register_sites
from tests.helpers import Publisher, wait_for
from tickets import service
from tickets.dispatch import TravelModel
from tickets.kpis import compute_kpis
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
from tickets.tracking import TrackingWorker

TRAVEL = TravelModel(road_factor=1.0, speed_kmh=60.0, pickup_min=0.0, margin_min=10.0)
SITE = (48.0, 11.0)
STATION = (48.0, 11.4)       # ~30 km east
WAREHOUSE = (48.0, 11.2)     # on the way


def ticket_events(conn, ticket_id: int) -> list[str]:
    return [r[0] for r in conn.execute("SELECT event FROM ticket_events WHERE ticket_id = %s ORDER BY id",
                                       (ticket_id,))]


def test_positions_drive_eta_late_warning_pickup_and_arrival(settings, conn, background):
    conn.autocommit = True  # the worker must see each step as the test takes it
    register_sites(conn, [SiteRecord("site", *SITE, 1000.0, "Europe/Berlin")])
    register_equipment(conn, [EquipmentRecord("EX-1", "S-1", "EX210", "excavator", "acme", "site")])
    upsert_station(conn, Station("ST", "station", *STATION))
    upsert_engineer(conn, Engineer("anna", "Anna", "ST", ("EX210",)))
    upsert_vehicle(conn, Vehicle("V-1", "ST", "anna"), at=datetime.now(UTC))
    upsert_warehouse(conn, Warehouse("W-1", "depot", *WAREHOUSE, parts=(("fan belt", 1),)), at=datetime.now(UTC))
    ticket, _ = service.create_ticket(conn, service.NewTicket(
        equipment_id="EX-1", title="belt", priority="major", diagnosis={"spare_part": "fan belt"}))
    tid = ticket["id"]
    service.apply_action(conn, tid, "accept", actor="d")
    # The drive is replayed from an hour ago (positions cannot come from the future), with a promise
    # 40 minutes into it: 30 minutes of travel and a margin.
    clock = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    promised = clock + timedelta(minutes=40)
    dispatched = service.apply_action(conn, tid, "dispatch", actor="d", fields={"engineer": "anna",
                                                                                "arrive_by": promised}, travel=TRAVEL)
    assert dispatched["pickup_warehouse_id"] == "W-1" and dispatched["arrive_by"] == promised

    worker = TrackingWorker(settings.database_url, settings.mqtt_url, topic_root=settings.topic_root,
                            travel=TRAVEL, arrival_radius_m=300.0, client_id=f"tracking-{uuid.uuid4().hex[:8]}")
    background.start(worker.run, "tracking")
    assert worker.subscribed.wait(10)
    van = Publisher(settings.mqtt_url, f"van-{uuid.uuid4().hex[:8]}")

    def drive(lat: float, lon: float, minutes: float) -> None:
        van.publish(position_topic(settings.topic_root, "V-1"),
                    encode_position(Position(clock + timedelta(minutes=minutes), lat, lon, 50.0)))

    def state() -> dict:
        return service.get_ticket(conn, tid)

    try:
        # Still at the station: on time.
        drive(*STATION, 0)
        wait_for(lambda: conn.execute("SELECT reported_at FROM vehicles WHERE id = 'V-1'").fetchone()[0],
                 timeout_s=10, what="vehicle position")
        assert state()["late_warned_at"] is None
        # Driving the wrong way, 40 km further east: the ETA passes the promise — one warning.
        drive(48.0, 11.94, 1)
        wait_for(lambda: state()["late_warned_at"], timeout_s=10, what="late warning")
        assert state()["eta"] > promised
        drive(48.0, 11.95, 2)
        wait_for(lambda: worker.stats.positions >= 3, timeout_s=10, what="third position")
        assert ticket_events(conn, tid).count("late_arrival_warning") == 1
        # Not accepted yet: passing the site does not count as arriving.
        service.apply_action(conn, tid, "engineer_accept", actor="anna")
        # At the warehouse: part collected; then at the machine: arrived.
        drive(*WAREHOUSE, 30)
        wait_for(lambda: state()["part_picked_up_at"], timeout_s=10, what="part collected")
        eta_at_warehouse = state()["eta"]
        assert abs(eta_at_warehouse - (clock + timedelta(minutes=30 + 14.9))) < timedelta(minutes=1)
        drive(SITE[0], SITE[1] + 0.001, 45)  # ~75 m from the machine
        arrived = wait_for(lambda: state()["state"] == "on_site" and state(), timeout_s=10, what="arrival")
        assert arrived["arrived_at"] == clock + timedelta(minutes=45)
        assert ticket_events(conn, tid)[-3:] == ["engineer_accepted", "part_collected", "arrived"]
        # A late position (older than the last) goes to the history only.
        drive(*STATION, 44)
        # Bad input is counted, never fatal: malformed, out of range, unknown vehicle, bad topic.
        for topic_vehicle, payload in (("V-1", b"{not json"), ("V-1", b'{"v":1,"ts":"2026-01-01T00:00:00Z",'
                                                                       b'"lat":95,"lon":0}'),
                                       ("V-ghost", encode_position(Position(clock, 1.0, 1.0)))):
            van.publish(position_topic(settings.topic_root, topic_vehicle), payload)
        wait_for(lambda: worker.stats.rejected >= 2 and worker.stats.unknown_vehicle >= 1, timeout_s=10,
                 what="bad positions counted")
        history = conn.execute("SELECT count(*) FROM vehicle_positions WHERE vehicle_id = 'V-1'").fetchone()[0]
        assert history == 6
        vehicle = conn.execute("SELECT lat, lon, reported_at FROM vehicles WHERE id = 'V-1'").fetchone()
        assert vehicle[2] == clock + timedelta(minutes=45) and abs(vehicle[1] - (SITE[1] + 0.001)) < 1e-9
        assert worker.stats.arrivals == 1 and worker.stats.late_warnings == 1
        kpis = compute_kpis(conn, clock - timedelta(days=1), clock + timedelta(days=1))
        assert kpis["late_arrival_warnings"] == 1 and kpis["sla"]["arrive"]["decided"] == 1
    finally:
        van.close()


def test_positions_dropped_by_a_full_inbox_are_counted_and_logged(caplog):
    import tickets.tracking as tracking
    from core.inbound import InboundMessage

    worker = TrackingWorker("postgresql://unused", "mqtt://127.0.0.1:1", topic_root="t")
    message = InboundMessage("t/v1/vehicles/V-1/position", b"{}", 1, 1)
    with caplog.at_level("WARNING", logger="core.mqtt"):
        for _ in range(tracking.INBOX_MAX_POSITIONS + 2):
            worker.session.offer(message)
    assert worker.dropped == 2 and worker.session.inbox.qsize() == tracking.INBOX_MAX_POSITIONS
    assert [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()] == [
        "tracking: dropped: inbox_full #1: 10000 waiting already (topic t/v1/vehicles/V-1/position)"]
