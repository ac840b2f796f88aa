"""The whole service loop, end to end on the real broker and database: a simulated machine's
fault becomes an alarm and a ticket; a simulated service crew works it through the API (remote
diagnosis or a dispatched van driving to the site, tracked over MQTT) to resolution, callback
survey and closure; the KPIs report it."""

from __future__ import annotations

import uuid

from alarms.worker import AlarmsWorker
from device_sim.crew import ServiceCrew
from device_sim.simulated_fleet import FleetRunner, build_fleet
from diagnostics.worker import DiagnosticsWorker
from ingest.worker import IngestWorker
from ironsight.schema import register_fleet
from ironsight.world import catalogue_parts, seed_service_world, service_world
from tests.helpers import ApiServer, wait_for
from tickets.dispatch import TravelModel
from tickets.tracking import TrackingWorker

# People act and vans drive 600 times faster than in life: a 10 km drive takes about 1.3 s.
SPEED = 600.0


def test_the_seeded_world_stocks_every_part_the_catalogue_can_ask_for():
    stations, engineers, vehicles, warehouses = service_world()
    stocked = {part for w in warehouses for part, n in w.parts if n} | {part for v in vehicles for part, n in v.parts}
    assert set(catalogue_parts()) <= stocked
    assert {e.station_id for e in engineers} == {s.id for s in stations}


def test_a_simulated_fault_ends_in_a_closed_ticket_with_a_survey(settings, conn, background):
    specs = build_fleet(3, fault_share=0.34, seed=5, id_prefix="LOOP", fault_after_s=(20.0, 20.0),
                        faults=("hydraulic_pump_wear",))
    [faulty] = [s.equipment_id for s in specs if s.fault is not None]
    register_fleet(conn, specs)
    seed_service_world(conn)
    settings.dispatch_speed_kmh = 60.0 * SPEED
    api = ApiServer(settings, settings.database_url)
    http = api.client()
    try:
        background.start(IngestWorker(settings, settings.database_url, settings.mqtt_url, "loop-ingest").run,
                         "ingest")
        background.start(DiagnosticsWorker(settings.database_url).run, "diagnostics")
        background.start(AlarmsWorker(settings.database_url, api.url, api_key=api.service_key).run, "alarms")
        tracking = TrackingWorker(settings.database_url, settings.mqtt_url, topic_root=settings.topic_root,
                                  travel=TravelModel.from_settings(settings),
                                  client_id=f"tracking-{uuid.uuid4().hex[:8]}")
        background.start(tracking.run, "tracking")
        assert tracking.subscribed.wait(10)
        crew = ServiceCrew(api.url, settings.mqtt_url, topic_root=settings.topic_root, speed=SPEED, seed=3,
                           round_every_s=0.5, report_every_s=0.2, username=api.settings.admin_username,
                           password=api.settings.admin_password.get_secret_value(),
                           no_answer_share=0.0)  # a callback retried hours later would outlast the test
        background.start(crew.run, "crew")
        fleet = FleetRunner(specs, settings.mqtt_url, topic_root=settings.topic_root, interval_s=1.0,
                            backfill_s=600.0, seed=5)
        background.start(fleet.run, "fleet")

        def closed_ticket():
            body = http.get("/tickets", params={"state": "closed"}).json()
            return body["data"][0] if body["count"] else None

        ticket = wait_for(closed_ticket, timeout_s=120, interval_s=0.5, what="a closed ticket")
        assert ticket["equipment_id"] == faulty and ticket["fault_code"] == "HYDRAULIC_PRESSURE_LOW"
        ticket = http.get(f"/tickets/{ticket['id']}").json()
        events = [e["event"] for e in ticket["history"]]
        # Every person acted under an account of their own (the history names the signed-in account).
        actors = {e["event"]: e["actor"] for e in ticket["history"]}
        assert actors["accepted"] == "dispatcher.sim" and actors["engineer_accepted"] == ticket["engineer"]
        assert events[:2] == ["created", "accepted"] and "resolved" in events and events[-1] in ("closed",
                                                                                              "second_callback")
        # The call centre worked the callback the resolution put in its queue.
        assert [(c["purpose"], c["state"]) for c in ticket["callbacks"]][0] == ("survey", "done")
        assert ticket["surveys"] and ticket["surveys"][0]["round"] == 1
        # A worn pump is not fixed over the phone: the van went, with a pump, and tracking saw it arrive.
        assert ticket["resolution"] == "on_site" and ticket["required_part"] == "main hydraulic pump"
        arrival = next(e for e in ticket["history"] if e["event"] == "arrived")
        assert arrival["actor"] == f"tracking:{ticket['vehicle_id']}"
        positions = conn.execute("SELECT count(*) FROM vehicle_positions WHERE vehicle_id = %s",
                                 (ticket["vehicle_id"],)).fetchone()[0]
        assert positions >= 3
        used = conn.execute("SELECT count(*) FROM stock_movements WHERE ticket_id = %s AND reason = 'used in repair'",
                            (ticket["id"],)).fetchone()[0]
        assert used == 1
        # The repair reached the simulated machine: its pressure recovers and the alarm clears by itself.
        def cleared():
            alarms = http.get("/alarms", params={"equipment_id": faulty}).json()["data"]
            return alarms and all(a["state"] == "cleared" for a in alarms)

        wait_for(cleared, timeout_s=90, interval_s=0.5, what="the repaired machine's alarms to clear")
        kpis = http.get("/kpis").json()
        assert kpis["tickets"] >= 1 and kpis["closed"] >= 1 and kpis["resolved_on_site"] >= 1
        assert kpis["survey"]["count"] >= 1 and kpis["sla"]["arrive"]["decided"] >= 1
    finally:
        api.close()
