"""Service records over HTTP on a real database: who may record and read them, what a record may say,
the machine's last service hours, the portal's service record and next service, and the service-due
reminder clearing through the diagnostics worker once a service is recorded."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from core.register import EquipmentRecord, register_equipment
from core.telemetry import Reading
from diagnostics.rulebook import rulebook_for
from diagnostics.rules import ServiceDue
from diagnostics.worker import DiagnosticsWorker
from ingest.writer import Batch, BatchWriter
from tests.helpers import ApiServer, drain_outbox, seed_tenant
from tickets.service_records import HOUR_METER_SLACK_H

MODEL = "EX210"
SCHEDULE = rulebook_for(MODEL).rule("service_due")
assert isinstance(SCHEDULE, ServiceDue)
STEP = timedelta(seconds=10)
STEP_H = STEP / timedelta(hours=1)


@pytest.fixture
def world(settings, conn):
    alpha = seed_tenant(conn, "alpha-corp", "ALPHA-1", model=MODEL)
    beta = seed_tenant(conn, "beta-corp", "BETA-1", model=MODEL)
    server = ApiServer(settings, settings.database_url)
    customer = server.user("customer", customer="alpha-corp", username="alpha-user")
    engineer = server.user("engineer", username="erik")
    yield server, alpha, beta, customer, engineer
    server.close()


def meter(conn, equipment_id: str) -> float:
    hours = conn.execute("SELECT engine_hours FROM equipment_state WHERE equipment_id = %s",
                         (equipment_id,)).fetchone()[0]
    conn.commit()
    return hours


def last_service_hours(conn, equipment_id: str) -> float | None:
    hours = conn.execute("SELECT last_service_hours FROM equipment WHERE id = %s", (equipment_id,)).fetchone()[0]
    conn.commit()
    return hours


def service(engine_hours: float, **fields) -> dict:
    return {"engine_hours": engine_hours, "interval_h": SCHEDULE.interval_h, "work_done": "oil and filters changed",
            **fields}


def test_an_engineer_records_a_service_under_the_machines_ticket(world, conn):
    server, alpha, _, _, engineer = world
    hours = round(meter(conn, "ALPHA-1"), 1)
    response = engineer.post("/equipment/ALPHA-1/service-records", json=service(
        hours, interval_h=SCHEDULE.major_every_h[0], ticket_id=alpha.ticket_id,
        parts_used=[{"part": "oil filter", "quantity": 2}, {"part": "fan belt"}]))
    assert response.status_code == 201, response.text
    record = response.json()
    assert (record["equipment_id"], record["engine_hours"], record["interval_h"], record["recorded_by"],
            record["ticket_id"]) == ("ALPHA-1", hours, SCHEDULE.major_every_h[0], "erik", alpha.ticket_id)
    assert record["parts_used"] == [{"part": "oil filter", "quantity": 2}, {"part": "fan belt", "quantity": 1}]
    assert last_service_hours(conn, "ALPHA-1") == hours
    listed = engineer.get("/equipment/ALPHA-1/service-records").json()
    assert listed["count"] == 1 and listed["data"] == [record]
    assert listed["scheduled_services_h"] == [SCHEDULE.interval_h, *SCHEDULE.major_every_h]
    history = server.client().get(f"/tickets/{alpha.ticket_id}").json()["history"]
    assert history[-1]["event"] == "service_recorded" and history[-1]["actor"] == "erik"
    assert history[-1]["detail"]["service_record_id"] == record["id"]


def test_the_last_service_hours_are_the_highest_recorded_and_never_lowered(world, conn):
    server, *_ = world
    staff = server.user("dispatcher")
    hours = meter(conn, "ALPHA-1")
    now = datetime.now(UTC)
    assert staff.post("/equipment/ALPHA-1/service-records", json=service(hours)).status_code == 201
    # A service done earlier, recorded afterwards: listed in its place, the last service hours stay.
    earlier = service(hours - 1, performed_at=(now - timedelta(days=30)).isoformat())
    assert staff.post("/equipment/ALPHA-1/service-records", json=earlier).status_code == 201
    assert last_service_hours(conn, "ALPHA-1") == hours
    listed = staff.get("/equipment/ALPHA-1/service-records").json()
    assert [r["engine_hours"] for r in listed["data"]] == [hours, hours - 1]
    page = staff.get("/equipment/ALPHA-1/service-records", params={"limit": 1, "offset": 1}).json()
    assert page["count"] == 2 and [r["engine_hours"] for r in page["data"]] == [hours - 1]


def test_customers_may_not_record_and_nonsense_is_refused(world, conn):
    server, alpha, beta, customer, engineer = world
    hours = meter(conn, "ALPHA-1")
    assert customer.post("/equipment/ALPHA-1/service-records", json=service(hours)).status_code == 403
    now = datetime.now(UTC)
    refused = {
        "negative hours": service(-1.0),
        "hours far beyond the meter": service(hours + 100),
        "hours beyond the meter of an earlier time": service(hours + 2 * HOUR_METER_SLACK_H,
                                                             performed_at=(now - timedelta(days=1)).isoformat()),
        "a service the schedule lacks": service(hours, interval_h=SCHEDULE.interval_h + 1),
        "no work done": service(hours, work_done=""),
        "a time in the future": service(hours, performed_at=(now + timedelta(days=1)).isoformat()),
        "another machine's ticket": service(hours, ticket_id=beta.ticket_id),
        "a ticket that does not exist": service(hours, ticket_id=999_999),
        "a part used no times": service(hours, parts_used=[{"part": "oil filter", "quantity": 0}]),
        "a part without a name": service(hours, parts_used=[{"part": "", "quantity": 1}]),
        "no hours": {"interval_h": SCHEDULE.interval_h, "work_done": "x"},
    }
    for what, body in refused.items():
        response = engineer.post("/equipment/ALPHA-1/service-records", json=body)
        assert response.status_code == 422, (what, response.text)
        assert response.json()["status"] == 422
    assert engineer.post("/equipment/NOPE/service-records", json=service(0.0)).status_code == 404
    assert last_service_hours(conn, "ALPHA-1") is None
    assert engineer.get("/equipment/ALPHA-1/service-records").json()["count"] == 0
    # A person rounds what the meter shows; a machine last heard of hours ago may have run on since.
    rounded = hours + HOUR_METER_SLACK_H / 2
    assert engineer.post("/equipment/ALPHA-1/service-records", json=service(rounded)).status_code == 201
    silent = timedelta(hours=3)
    conn.execute("UPDATE equipment_state SET engine_hours_at = engine_hours_at - %s WHERE equipment_id = 'ALPHA-1'",
                 (silent,))
    conn.commit()
    ran_on = hours + silent / timedelta(hours=1)
    for engine_hours, answer in ((ran_on + HOUR_METER_SLACK_H / 2, 201), (ran_on + 2 * HOUR_METER_SLACK_H, 422)):
        response = engineer.post("/equipment/ALPHA-1/service-records", json=service(engine_hours))
        assert response.status_code == answer, response.text


def test_a_customer_reads_its_own_machines_services_and_not_anothers(world, conn):
    server, _, _, customer, engineer = world
    for equipment_id in ("ALPHA-1", "BETA-1"):
        assert engineer.post(f"/equipment/{equipment_id}/service-records",
                             json=service(meter(conn, equipment_id))).status_code == 201
    mine = customer.get("/equipment/ALPHA-1/service-records")
    assert mine.status_code == 200 and [r["equipment_id"] for r in mine.json()["data"]] == ["ALPHA-1"]
    theirs = customer.get("/equipment/BETA-1/service-records")
    unknown = customer.get("/equipment/NOPE/service-records")
    assert (theirs.status_code, unknown.status_code) == (404, 404)
    assert theirs.json() == {"detail": "no equipment 'BETA-1'", "status": 404}


# --- a machine coming up to its service, through the diagnostics worker ---

class Machine:
    """Alpha's second machine, reporting every STEP with its hour meter counting in real time."""

    def __init__(self, conn, hours: float, at: datetime) -> None:
        register_equipment(conn, [EquipmentRecord("ALPHA-2", "SN-ALPHA-2", MODEL, "excavator", "alpha-corp")])
        self.conn, self.hours, self.at, self.sequence = conn, hours, at, 0
        self.writer = BatchWriter(conn, "test", datetime.now(UTC))

    def report(self, readings: int) -> None:
        batch = Batch(messages=1)
        for _ in range(readings):
            self.at += STEP
            self.hours += STEP_H
            batch.readings.append(("ALPHA-2", Reading(ts=self.at, engine_hours=self.hours, engine_rpm=1800.0,
                                                      oil_temp_c=80.0, lat=51.9, lon=4.1)))
        self.sequence += 1
        batch.add_sequence("ALPHA-2", self.sequence)
        self.writer.write(batch)


def service_due_faults(conn) -> list[tuple]:
    rows = conn.execute("SELECT started_at, ended_at, clear_evidence FROM faults "
                        "WHERE equipment_id = 'ALPHA-2' AND fault_code = 'SERVICE_DUE' ORDER BY id").fetchall()
    conn.commit()
    return rows


def test_a_recorded_service_clears_service_due_and_moves_the_next_service(world, conn):
    server, _, _, customer, engineer = world
    due = float(SCHEDULE.due_at(SCHEDULE.last_boundary(1000.0)))
    readings_before_reminder = 20
    start = datetime.now(UTC).replace(microsecond=0) - STEP * 200
    machine = Machine(conn, due - SCHEDULE.warn_before_h - readings_before_reminder * STEP_H, start)
    # Contexts read again on every round: the production worker does so once CONTEXT_TTL_S has passed.
    worker = DiagnosticsWorker(conn.info.dsn, context_ttl_s=0.0)

    def diagnose() -> None:
        drain_outbox(worker.process_available, conn, "accepted_batches", worker.position)

    machine.report(2 * readings_before_reminder)
    diagnose()
    [(_, ended_at, _)] = service_due_faults(conn)
    assert ended_at is None
    record = customer.get("/portal/equipment/ALPHA-2/service-record").json()
    assert (record["services"], record["last_service"], record["last_service_hours"]) == ([], None, None)
    assert record["next_service_due_hours"] == due

    serviced_at = round(machine.hours, 3)
    response = engineer.post("/equipment/ALPHA-2/service-records", json=service(serviced_at))
    assert response.status_code == 201, response.text
    machine.report(3)
    diagnose()
    [(_, ended_at, evidence)] = service_due_faults(conn)
    assert ended_at == machine.at - 2 * STEP and evidence == {"serviced_at_hours": serviced_at}

    next_due = float(SCHEDULE.due_at(serviced_at))
    assert next_due > due
    record = customer.get("/portal/equipment/ALPHA-2/service-record").json()
    assert record["last_service"] == response.json() and record["services"] == [response.json()]
    assert (record["services_count"], record["last_service_hours"]) == (1, serviced_at)
    assert record["next_service_due_hours"] == next_due
    assert record["hours_to_next_service"] == pytest.approx(next_due - machine.hours, abs=0.01)
    fleet = {m["id"]: m for m in customer.get("/portal/fleet").json()["data"]}
    assert fleet["ALPHA-2"]["next_service_due_hours"] == next_due
    # The machine runs on to its next service: reminded again, for that one.
    machine.hours = next_due - SCHEDULE.warn_before_h - STEP_H / 2
    machine.report(1)
    diagnose()
    assert [ended is None for _, ended, _ in service_due_faults(conn)] == [False, True]
