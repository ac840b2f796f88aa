"""Diagnostics and alarms over a real database; the whole path end to end through the real broker."""

from datetime import UTC, datetime, timedelta

from alarms.lifecycle import raise_alarm
from alarms.worker import AlarmsWorker
from core.register import EquipmentRecord, register_equipment
from core.telemetry import Reading
from device_sim.simulated_fleet import FleetRunner, build_fleet
from diagnostics.worker import DiagnosticsWorker
from ingest.worker import IngestWorker
from ingest.writer import Batch, BatchWriter
from ironsight.processes import free_tcp_port
from ironsight.schema import register_fleet
from tests.helpers import ApiServer, at_once_in_transactions, drain_outbox, wait_for

T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)


def write_readings(conn, equipment_id: str, temps: list[float], start: datetime = T0, step_s: int = 10) -> None:
    """Store readings through the ingest writer, as the ingest worker would."""
    batch = Batch(messages=1, sequences={equipment_id: [1]})
    batch.readings = [(equipment_id, Reading(ts=start + timedelta(seconds=i * step_s), oil_temp_c=t, lat=51.9,
                                             lon=4.1)) for i, t in enumerate(temps)]
    BatchWriter(conn, "test", datetime.now(UTC)).write(batch)


def test_diagnostics_raise_and_clear_a_fault_and_resume_after_restart(conn):
    register_equipment(conn, [EquipmentRecord("EX-1", "S-1", "EX210", "excavator", "acme")])
    diagnostics = DiagnosticsWorker(conn.info.dsn)
    # 90 s above 105 °C (sustain 60 s) raises …
    write_readings(conn, "EX-1", [90.0] * 3 + [112.0] * 10)
    drain_outbox(diagnostics.process_available, conn, "accepted_batches", diagnostics.position)
    fault = conn.execute("SELECT fault_code, severity, started_at, ended_at, evidence FROM faults").fetchone()
    assert fault[:2] == ("OIL_OVERHEAT", "major")
    assert fault[2] == T0 + timedelta(seconds=30) and fault[3] is None
    assert fault[4]["limit"] == 105.0

    # … a new worker (a restart) continues from the persisted state and cursor: the fault clears
    # after 60 s below 98 °C, and nothing is evaluated twice.
    write_readings(conn, "EX-1", [95.0] * 10, start=T0 + timedelta(seconds=200))
    restarted = DiagnosticsWorker(conn.info.dsn)
    drain_outbox(restarted.process_available, conn, "accepted_batches", restarted.position)
    events = conn.execute("SELECT kind, at FROM fault_events ORDER BY id").fetchall()
    assert events == [("raised", T0 + timedelta(seconds=30)), ("cleared", T0 + timedelta(seconds=200))]
    assert restarted.late_readings == 0


def test_healthy_readings_and_a_short_spike_raise_nothing(conn):
    register_equipment(conn, [EquipmentRecord("EX-1", "S-1", "EX210", "excavator", "acme")])
    write_readings(conn, "EX-1", [85.0] * 20 + [110.0] * 3 + [85.0] * 20)
    diagnostics = DiagnosticsWorker(conn.info.dsn)
    drain_outbox(diagnostics.process_available, conn, "accepted_batches", diagnostics.position)
    assert conn.execute("SELECT count(*) FROM faults").fetchone()[0] == 0


def test_concurrent_raises_of_one_fault_make_one_active_alarm(database_url, conn):
    register_equipment(conn, [EquipmentRecord("EX-1", "S-1", "EX210", "excavator", "acme")])
    workers = 8
    results = at_once_in_transactions(
        database_url, workers, lambda own: raise_alarm(own, "EX-1", "OIL_OVERHEAT", "major", T0, 1))
    assert len({alarm_id for alarm_id, _ in results}) == 1
    assert sum(new for _, new in results) == 1
    assert conn.execute("SELECT count(*), max(occurrences) FROM alarms").fetchone() == (1, workers)


def test_alarm_retries_ticket_opening_until_the_api_answers_and_opens_one_ticket(settings, conn, background):
    register_equipment(conn, [EquipmentRecord("EX-1", "S-1", "EX210", "excavator", "acme")])
    write_readings(conn, "EX-1", [112.0] * 10)
    diagnostics = DiagnosticsWorker(settings.database_url)
    drain_outbox(diagnostics.process_available, conn, "accepted_batches", diagnostics.position)
    # The API is not up yet: the alarm is raised, the ticket attempt fails and is retried later.
    alarms = AlarmsWorker(settings.database_url, f"http://127.0.0.1:{free_tcp_port()}")
    drain_outbox(alarms.process_fault_events, conn, "fault_events", alarms.position)
    assert alarms.open_pending_tickets(conn) == 0
    attempts, error = conn.execute("SELECT ticket_attempts, ticket_error FROM alarms").fetchone()
    conn.commit()
    assert attempts == 1 and error

    api = ApiServer(settings, settings.database_url)
    try:
        conn.execute("UPDATE alarms SET next_ticket_try_at = now()")
        conn.commit()
        alarms = AlarmsWorker(settings.database_url, api.url, api_key=api.service_key)
        assert alarms.open_pending_tickets(conn) == 1
        # A lost response and a retry: the same alarm does not open a second ticket.
        conn.execute("UPDATE alarms SET ticket_id = NULL")
        conn.commit()
        assert alarms.open_pending_tickets(conn) == 1
        tickets = api.client().get("/tickets").json()
        assert tickets["count"] == 1 and tickets["data"][0]["source_alarm_id"] == 1
    finally:
        api.close()


def test_end_to_end_a_faulty_controller_gets_one_ticket_and_healthy_ones_none(settings, conn, background):
    """Simulated controllers → real broker → ingest → diagnostics → alarms → tickets API."""
    specs = build_fleet(4, fault_share=0.25, seed=11, id_prefix="E2E", fault_after_s=(20.0, 20.0))
    faulty = [s.equipment_id for s in specs if s.fault is not None]
    assert len(faulty) == 1
    register_fleet(conn, specs)
    api = ApiServer(settings, settings.database_url)
    try:
        background.start(IngestWorker(settings, settings.database_url, settings.mqtt_url, "e2e-ingest").run,
                         "ingest")
        background.start(DiagnosticsWorker(settings.database_url).run, "diagnostics")
        background.start(AlarmsWorker(settings.database_url, api.url, api_key=api.service_key).run, "alarms")
        # The controllers come back from a 15-minute GPRS outage with their history, the faulty
        # one's cooling failing 20 s into it, and then report live.
        fleet = FleetRunner(specs, settings.mqtt_url, topic_root=settings.topic_root, interval_s=1.0,
                            backfill_s=900.0, seed=11)
        background.start(fleet.run, "fleet")

        def tickets():
            body = api.client().get("/tickets").json()
            return body if body["count"] else None

        body = wait_for(tickets, timeout_s=90, what="a ticket for the faulty controller")
        assert [t["equipment_id"] for t in body["data"]] == faulty
        # Live readings keep arriving; the alarm stays one alarm and the ticket one ticket.
        wait_for(lambda: fleet.stats.published >= 4 * 9 + 4 * 3, timeout_s=30, what="live readings")
        alarms = api.client().get("/alarms").json()["data"]
        # Overheating shows as several symptoms (oil, coolant, the controller's own DTC): each an alarm,
        # all on the faulty machine, all in the one work order.
        assert {a["equipment_id"] for a in alarms} == set(faulty)
        assert "OIL_OVERHEAT" in {a["fault_code"] for a in alarms}
        assert all(a["state"] == "active" and a["ticket_id"] == body["data"][0]["id"] for a in alarms
                   if a["ticket_id"] is not None)
        ticket = api.client().get(f"/tickets/{body['data'][0]['id']}").json()
        assert ticket["diagnosis"]["causes"] and ticket["description"].startswith("Most probable cause")
        assert api.client().get("/tickets").json()["count"] == 1
        equipment = api.client().get(f"/equipment/{faulty[0]}").json()
        assert equipment["online"] and equipment["oil_temp_c"] > 105
        stored = conn.execute("SELECT count(*) FROM readings").fetchone()[0]
        assert stored >= 4 * 900
    finally:
        api.close()
