"""The Grafana dashboards: rendered JSON in step with the code, every query proven on a seeded database.

No Grafana server runs here. dashboards.grafana_macros prepares each query exactly as Grafana would
(variables, $__interval, the PostgreSQL macros in plain and TimescaleDB form) and dashboards.verify
runs it on the real database, as the read-only role, and checks what each panel needs.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from dataclasses import fields, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import psycopg
import pytest
import yaml

import dashboards.render as render
from core.shards import SHARD_COUNT
from dashboards import caller, health, limits, sql, work_orders
from dashboards.common import CALLER_UID, HEALTH_UID, MACHINE_UID, WORK_ORDERS_UID
from dashboards.constants import DATASOURCE_TYPE, DATASOURCE_UID, FOLDER_UID, GRID_COLUMNS, MIN_INTERVAL
from dashboards.grafana_macros import (
    BUILT_IN_NAMES,
    MacroError,
    TimeRange,
    VariableValue,
    calculate_interval,
    expand_macros,
    interpolate,
    prepare,
    referenced_variables,
)
from dashboards.push import (
    DatabaseTarget,
    PushError,
    dashboard_changed,
    dashboard_payload,
    datasource_payload,
    push,
)
from dashboards.verify import check_dashboards
from device_sim.machine import SimulatedMachine
from device_sim.simulated_fleet import build_fleet
from diagnostics.worker import DiagnosticsWorker
from ingest.sequences import fold_settled
from ingest.writer import Batch, BatchWriter, DeadLetter
from ironsight.schema import register_fleet
from tests.helpers import drain_outbox

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
READER = "ironsight_grafana"
QUOTED_CUSTOMER = "O'Brien Cranes"  # a customer whose name needs SQL quoting
HISTORY = timedelta(hours=4)
STEP_S = 15.0


# --- a seeded fleet, shared by the query tests of this module ---


class Seeded:
    def __init__(self, url: str, faulty: list[str], offline: str, quoted_faulty: str) -> None:
        self.url = url
        self.faulty = faulty
        self.offline = offline
        self.quoted_faulty = quoted_faulty


@pytest.fixture(scope="module")
def seeded(migrated_database_url: str) -> Iterator[Seeded]:
    """Eight simulated machines over four hours: two develop a clogged oil cooler an hour before the
    end (faults with diagnosis, alarms, a work order each), one went silent an hour ago, and ingest
    refused some input. Everything goes through the real writer, diagnostics and alarm code."""
    url = migrated_database_url
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute("TRUNCATE readings, dead_letters, ingest_stats, accepted_batches, message_sequences, "
                      "consumer_cursors, "
                      "shard_checkpoints, sites, equipment RESTART IDENTITY CASCADE")
    now = datetime.now(UTC).replace(microsecond=0)
    start = now - HISTORY
    specs = build_fleet(8, fault_share=0.25, seed=21, id_prefix="GF", faults=("oil_cooler_clogged",))
    faulty = sorted(s.equipment_id for s in specs if s.fault)
    specs = [replace(s, fault_after_s=HISTORY.total_seconds() - 3600) if s.fault else s for s in specs]
    specs[specs.index(next(s for s in specs if s.equipment_id == faulty[0]))] = replace(
        next(s for s in specs if s.equipment_id == faulty[0]), customer=QUOTED_CUSTOMER)
    offline = next(s.equipment_id for s in specs if not s.fault)
    with psycopg.connect(url) as conn:
        register_fleet(conn, specs)
        writer = BatchWriter(conn, "ingest-test", start)
        for seed, spec in enumerate(specs, start=1):
            machine = SimulatedMachine(spec, start, seed=seed)
            steps = int(HISTORY.total_seconds() / STEP_S) - (240 if spec.equipment_id == offline else 0)
            readings = []
            for i in range(1, steps + 1):
                machine.advance(STEP_S)
                readings.append((spec.equipment_id, machine.reading(start + timedelta(seconds=i * STEP_S))))
            messages = list(range(1, len(readings) // 10 + 1))
            if seed == 1:  # three of its messages never arrived (a broker dropped them)
                messages = [m for m in messages if m not in (5, 6, 7)]
            writer.write(Batch(messages=len(messages), readings=readings, sequences={spec.equipment_id: messages}))
        writer.write(Batch(messages=3, dead_letters=[
            DeadLetter("ironsight/v1/XX-9/telemetry", "XX-9", "unknown_equipment", "not in the register", b"{}"),
            DeadLetter("ironsight/v1/GF-1/telemetry", None, "malformed", "not JSON", b"\x00\x01"),
            DeadLetter("ironsight/v1/GF-1/telemetry", None, "malformed", "not JSON", b"\x02"),
        ]))
        conn.execute("""UPDATE equipment_state SET last_received_at = last_ts WHERE equipment_id = %s""",
                     (offline,))
        conn.commit()
        fold_settled(conn, settle_s=0)
        # Rows reach a consumer only once no older transaction runs anywhere on the server: poll.
        diagnostics = DiagnosticsWorker(url)
        drain_outbox(diagnostics.process_available, conn, "accepted_batches", diagnostics.position, timeout_s=60)
        from alarms.worker import AlarmsWorker

        alarms = AlarmsWorker(url, "http://127.0.0.1:9")
        try:
            drain_outbox(alarms.process_fault_events, conn, "fault_events", alarms.position, timeout_s=60)
        finally:
            alarms.tickets.close()
        _open_work_orders(conn)
        _front_desk(conn, faulty[0])
        _after_the_repair(conn, faulty[0])
    yield Seeded(url, faulty, offline, faulty[0])


def _open_work_orders(conn: psycopg.Connection) -> None:
    """What the alarms worker does through the API: one work order per machine incident."""
    from tickets.service import NewTicket, create_ticket

    pending = conn.execute(
        """SELECT a.id, a.equipment_id, a.fault_code, a.severity, f.title, f.diagnosis
           FROM alarms a JOIN faults f ON f.id = a.last_fault_id
           WHERE a.state = 'active' AND a.severity IN ('critical', 'major') ORDER BY a.id""").fetchall()
    for alarm_id, equipment_id, code, severity, title, diagnosis in pending:
        ticket, _ = create_ticket(conn, NewTicket(
            equipment_id, f"{title or code} on {equipment_id}", severity, fault_code=code, source_alarm_id=alarm_id,
            created_by="alarms", diagnosis=diagnosis, remote_resolvable=(diagnosis or {}).get("remote_resolvable")))
        conn.execute("UPDATE alarms SET ticket_id = %s WHERE id = %s", (ticket["id"], alarm_id))
    conn.commit()
    _work_the_orders(conn)


def _work_the_orders(conn: psycopg.Connection) -> None:
    """The service loop on the seeded orders, through tickets' own code: each machine's first order is
    dispatched to the best available engineer; the last machine's is then repaired and called back."""
    from datetime import UTC, datetime

    from core.positions import Position
    from ironsight.world import seed_service_world
    from tickets import dispatch, service
    from tickets.tracking import track_position

    seed_service_world(conn)
    conn.autocommit = True
    first = conn.execute("SELECT DISTINCT ON (equipment_id) id FROM tickets ORDER BY equipment_id, id").fetchall()
    now = datetime.now(UTC)
    for i, (ticket_id,) in enumerate(first):
        service.apply_action(conn, ticket_id, "accept", actor="dispatcher")
        options = dispatch.ticket_options(conn, ticket_id, now, dispatch.TravelModel())
        assert options, f"no engineer available for ticket {ticket_id}"
        best = options[0]
        ticket = service.apply_action(conn, ticket_id, "dispatch", actor="dispatcher",
                                      fields={"engineer": best.engineer_id})
        service.apply_action(conn, ticket_id, "engineer_accept", actor=best.engineer_id)
        van = conn.execute("SELECT s.lat, s.lon FROM vehicles v JOIN service_stations s ON s.id = v.station_id "
                           "WHERE v.id = %s", (ticket["vehicle_id"],)).fetchone()
        track_position(conn, ticket["vehicle_id"], Position(now, van[0] + 0.001 * (i + 1), van[1]),
                       dispatch.TravelModel(), 300.0)
    last = first[-1][0]
    repair = {"work_done": "oil cooler cleaned", "first_time_fix": True,
              "parts_used": [{"part": "fan belt", "quantity": 1}]}
    for action, body in (("arrive", {}), ("resolve", repair)):
        service.apply_action(conn, last, action, actor="engineer", fields=body)
    # A customer's call, solved on the phone and called back: a closed order with its survey.
    equipment_id = conn.execute("SELECT equipment_id FROM tickets WHERE id = %s", (last,)).fetchone()[0]
    call, _ = service.create_ticket(conn, service.NewTicket(equipment_id, "customer call: warning lamp", "minor"))
    for action, body in (("accept", {}), ("start_remote_diagnosis", {}), ("resolve_remote", {"work_done": "reset"})):
        service.apply_action(conn, call["id"], action, actor="dispatcher", fields=body)
    service.submit_survey(conn, call["id"], dict.fromkeys(service.SURVEY_INDICATORS, 4), actor="callcentre")
    conn.autocommit = False


def _front_desk(conn: psycopg.Connection, equipment_id: str) -> None:
    """The quoted customer on record for the caller dashboard: a contract tier, a contact with the
    dashboard's default number and another, and a call about one of its machines."""
    from core import customers
    from core.settings import Settings
    from tickets import calls, sla

    region = Settings.model_fields["phone_region"].default
    sla.put_tier(conn, "Gold", description="", respond_h=2, arrive_h=4, resolve_h=12, remote_diagnosis_min=15,
                 limits={"consultation": (8, 48)})
    customers.upsert_customer(conn, QUOTED_CUSTOMER, {"tier": "Gold", "contract_number": "GF-2026-17"}, create=False)
    contact = customers.save_contact(conn, QUOTED_CUSTOMER, None, {
        "name": "Siobhán O'Brien", "role": "site manager", "phones": [caller.DEFAULT_PHONE, "+353 1 555 0100"]}, region)
    assert contact is not None
    ticket_id = conn.execute("SELECT id FROM tickets WHERE equipment_id = %s ORDER BY id LIMIT 1",
                             (equipment_id,)).fetchone()[0]
    calls.record_call(conn, phone="07700 900123", phone_e164=customers.normalise_phone(caller.DEFAULT_PHONE, region),
                      customer_id=QUOTED_CUSTOMER, contact_id=contact["id"], equipment_id=equipment_id,
                      agent="callcentre", source="agent", outcome="work_order_opened", ticket_id=ticket_id)
    conn.commit()


def _after_the_repair(conn: psycopg.Connection, quoted_equipment_id: str) -> None:
    """Callbacks and complaints, written as SQL until their service code lands: the quoted customer's
    contact to call back about a second order solved on the phone (overdue) and a complaint of theirs
    sent back and overdue; the repaired order's callback and a complaint its department answered;
    the surveyed order's callback done and its complaint satisfied within the week."""
    from tickets import service

    now = datetime.now(UTC)
    contact_id = conn.execute("SELECT id FROM customer_contacts WHERE customer_id = %s",
                              (QUOTED_CUSTOMER,)).fetchone()[0]
    first_quoted = conn.execute("SELECT min(id) FROM tickets WHERE equipment_id = %s",
                                (quoted_equipment_id,)).fetchone()[0]
    leak, _ = service.create_ticket(conn, service.NewTicket(quoted_equipment_id, "customer call: hydraulic leak",
                                                            "minor", contact_id=contact_id))
    for action, body in (("accept", {}), ("start_remote_diagnosis", {}), ("resolve_remote", {"work_done": "torqued"})):
        service.apply_action(conn, leak["id"], action, actor="dispatcher", fields=body)
    repaired = conn.execute("SELECT id FROM tickets WHERE state = 'resolved' AND id <> %s ORDER BY id LIMIT 1",
                            (leak["id"],)).fetchone()[0]
    surveyed = conn.execute("SELECT id FROM tickets WHERE state = 'closed' ORDER BY id LIMIT 1").fetchone()[0]

    def callback(ticket_id: int, due: datetime, *, state: str = "open", attempts: int = 0,
                 contact: int | None = None, check: tuple[int, int] | None = None) -> None:
        """A callback as given; a survey callback the repair already scheduled is set to it."""
        conn.execute(
            """INSERT INTO callbacks (ticket_id, purpose, complaint_id, complaint_round, contact_id, state, created_at,
                                      due_at, next_attempt_at, attempts, done_at)
               VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
               ON CONFLICT (ticket_id) WHERE purpose = 'survey' DO UPDATE SET
                   contact_id = EXCLUDED.contact_id, state = EXCLUDED.state, due_at = EXCLUDED.due_at,
                   attempts = EXCLUDED.attempts, done_at = EXCLUDED.done_at""",
            (ticket_id, "complaint_check" if check else "survey", *(check or (None, None)), contact, state,
             due - timedelta(days=2), due, due - timedelta(hours=1), attempts,
             due - timedelta(hours=1) if state == "done" else None))

    def complaint(ticket_id: int, opened: datetime, state: str, department: str,
                  rounds: list[tuple[datetime, datetime | None]], closed: datetime | None = None) -> int:
        """``rounds``: each one's answer deadline and answer; each is sent when the previous was answered."""
        complaint_id = conn.execute(
            """INSERT INTO complaints (ticket_id, source, state, department, round, answer_due, opened_by, opened_at,
                                       closed_at) VALUES (%s, 'direct', %s, %s, %s, %s, 'callcentre', %s, %s)
               RETURNING id""",
            (ticket_id, state, department, len(rounds), rounds[-1][0], opened, closed)).fetchone()[0]
        sent = opened
        for number, (due, answered) in enumerate(rounds, start=1):
            conn.execute("INSERT INTO complaint_rounds (complaint_id, round, department, sent_at, answer_due, "
                         "answered_at) VALUES (%s, %s, %s, %s, %s, %s)",
                         (complaint_id, number, department, sent, due, answered))
            sent = answered or sent
        return complaint_id

    day, hour = timedelta(days=1), timedelta(hours=1)
    callback(leak["id"], now - 30 * timedelta(minutes=1), attempts=2, contact=contact_id)
    complaint(first_quoted, now - 10 * day, "with_department", "dispatch",
              [(now - 3 * day, now - 4 * day), (now - hour, None)])
    callback(repaired, now + 2 * hour)
    answered = complaint(repaired, now - 2 * day, "answered", "service management", [(now + 5 * day, now - day)])
    callback(repaired, now + day, check=(answered, 1))
    callback(surveyed, now - 4 * day, state="done", attempts=1)
    complaint(surveyed, now - 5 * day, "satisfied", "parts logistics", [(now + 2 * day, now - 4 * day)],
              closed=now - 3 * day)
    conn.commit()


def test_the_seeded_fleet_has_what_the_dashboards_show(seeded):
    with psycopg.connect(seeded.url) as conn:
        open_faults = conn.execute(
            "SELECT DISTINCT equipment_id FROM faults WHERE ended_at IS NULL AND diagnosis -> 'causes' <> '[]'"
        ).fetchall()
        assert set(seeded.faulty) <= {r[0] for r in open_faults}
        assert conn.execute("SELECT count(*) FROM alarms WHERE state = 'active'").fetchone()[0] >= 2
        ticketed = {r[0] for r in conn.execute("SELECT DISTINCT equipment_id FROM tickets")}
        assert set(seeded.faulty) <= ticketed
        assert conn.execute("SELECT count(*) FROM readings").fetchone()[0] > 7000


def _failures(results) -> str:
    return "\n".join(str(r) + "\n    " + r.sql.replace("\n", "\n    ") for r in results if r.problems)


def _scenarios(seeded: Seeded) -> dict[str, dict]:
    machine = {"equipment": seeded.faulty[-1]}
    quoted = {"customer": [QUOTED_CUSTOMER]}
    return {
        "all customers, last 6 h": dict(span=timedelta(hours=6), choices={MACHINE_UID: machine}),
        "one customer, last 90 days": dict(span=timedelta(days=90), choices={
            "ironsight-fleet": quoted, "ironsight-alarms": quoted, "ironsight-work-orders": quoted,
            MACHINE_UID: {"customer": QUOTED_CUSTOMER, "equipment": seeded.quoted_faulty}}),
    }


@pytest.mark.parametrize("timescaledb", [False, True], ids=["plain macros", "timescaledb macros"])
@pytest.mark.parametrize("scenario", ["all customers, last 6 h", "one customer, last 90 days"])
def test_every_query_runs_as_the_reader_and_returns_what_its_panel_needs(seeded, scenario, timescaledb):
    setup = _scenarios(seeded)[scenario]
    with psycopg.connect(seeded.url) as conn:
        results = check_dashboards(conn, render.dashboards(), TimeRange.last(setup["span"]),
                                   timescaledb=timescaledb, timescaledb_shim=timescaledb,
                                   choices=setup["choices"], role=READER)
    assert not _failures(results), _failures(results)
    # Every panel query and annotation query ran, besides the variables' queries.
    expected = sum(len(p["targets"]) for d in render.dashboards() for p in d["panels"] if p["type"] != "row")
    expected += sum(not a.get("builtIn") for d in render.dashboards() for a in d["annotations"]["list"])
    assert len([r for r in results if r.where.startswith(("panel", "annotation"))]) == expected
    # The TimescaleDB form really used time_bucket, the plain form floor(extract(epoch …)).
    grouped = [r.sql for r in results if "readings r" in r.sql and '"time"' in r.sql]
    assert grouped and all(("time_bucket('" in s) == timescaledb for s in grouped)
    assert all("$" not in r.sql.replace("$$", "") for r in results), "a variable or macro was left unexpanded"


def test_the_fleet_map_colours_each_machine_by_its_state(seeded):
    with psycopg.connect(seeded.url) as conn:
        results = check_dashboards(conn, [d for d in render.dashboards() if d["uid"] == "ironsight-fleet"],
                                   TimeRange.last(timedelta(hours=1)), role=READER)
        facts = conn.execute(
            """SELECT s.equipment_id, s.last_received_at > now() - make_interval(secs => %s), s.engine_rpm,
                      EXISTS (SELECT 1 FROM alarms a WHERE a.equipment_id = s.equipment_id AND a.state = 'active'
                              AND a.fault_code <> 'OFFLINE')
               FROM equipment_state s""", (sql.OFFLINE_AFTER_S,)).fetchall()
    fleet_map = next(r for r in results if r.where == "panel 'Fleet map' A")
    states = dict(zip(fleet_map.column("equipment_id"), fleet_map.column("state"), strict=True))
    expected = {eid: sql.STATE_IN_ALARM if alarm else sql.STATE_OFFLINE if not online
                else sql.STATE_WORKING if rpm > sql.WORKING_RPM else sql.STATE_IDLE
                for eid, online, rpm, alarm in facts}
    assert states == expected and len(states) == 8
    assert {states[e] for e in seeded.faulty} == {sql.STATE_IN_ALARM}
    assert states[seeded.offline] in (sql.STATE_OFFLINE, sql.STATE_IN_ALARM)
    counts = next(r for r in results if r.where == "panel 'Machines by state' A")
    by_state = dict(zip(counts.columns, counts.rows[0], strict=True))
    assert by_state["machines"] == 8
    assert all(by_state[state] == list(states.values()).count(state) for state in sql.STATES)


def test_the_machine_dashboard_shows_the_diagnosis_and_the_model_limit(seeded):
    equipment = seeded.faulty[-1]
    with psycopg.connect(seeded.url) as conn:
        model = conn.execute("SELECT model FROM equipment WHERE id = %s", (equipment,)).fetchone()[0]
        results = check_dashboards(conn, [d for d in render.dashboards() if d["uid"] == MACHINE_UID],
                                   TimeRange.last(timedelta(hours=6)), choices={MACHINE_UID: {"equipment": equipment}},
                                   role=READER)
    assert not _failures(results), _failures(results)
    diagnosis = next(r for r in results if r.where.startswith("panel 'Current diagnosis"))
    oil = [row for row in diagnosis.rows if row[diagnosis.columns.index("fault")] == "OIL_OVERHEAT"]
    assert oil, diagnosis.rows
    ranks = [row[diagnosis.columns.index("rank")] for row in oil]
    assert ranks == list(range(1, len(ranks) + 1))
    assert oil[0][diagnosis.columns.index("remedy")].startswith("1. ")
    probabilities = [row[diagnosis.columns.index("probability")] for row in oil]
    assert probabilities == sorted(probabilities, reverse=True)
    temperature = next(r for r in results if r.where == "panel 'Oil temperature' A")
    assert set(temperature.column("overheat limit")) == {limits.BY_MODEL.get(model, limits.DEFAULT).oil_temp_c}
    assert max(temperature.column("oil (max)")) > limits.BY_MODEL.get(model, limits.DEFAULT).oil_temp_c



def test_the_caller_dashboard_finds_the_caller_from_any_spelling_of_the_number(seeded):
    board = next(d for d in render.dashboards() if d["uid"] == CALLER_UID)
    phone = next(v for v in board["templating"]["list"] if v["name"] == "phone")
    with psycopg.connect(seeded.url) as conn:
        machines = {r[0] for r in conn.execute("SELECT id FROM equipment WHERE customer = %s", (QUOTED_CUSTOMER,))}
        for spelling in (caller.DEFAULT_PHONE, "0044 7700-900123", "(07700) 900 123", "900123"):
            phone["query"] = spelling
            results = check_dashboards(conn, [board], TimeRange.last(timedelta(hours=6)), role=READER)
            assert not _failures(results), (spelling, _failures(results))
            found = {r.where: r for r in results}
            who = found["panel 'Caller' A"]
            assert (who.column("customer"), who.column("numbers")) == (
                [QUOTED_CUSTOMER], ["+35315550100, +447700900123"]), spelling
            assert set(found["panel 'Machines now' A"].column("equipment_id")) == machines
            assert found["panel 'Customer and contract' A"].column("tier") == ["Gold"]
        phone["query"] = "0012345"  # five digits: too few to look up, nobody is shown
        results = check_dashboards(conn, [board], TimeRange.last(timedelta(hours=6)), role=READER,
                                   require_rows=False)
    assert not _failures(results), _failures(results)
    assert not [r.where for r in results if r.rows]


def test_the_work_orders_dashboard_shows_what_happens_after_the_repair(seeded):
    from tickets.kpis import compute_kpis

    board = next(d for d in render.dashboards() if d["uid"] == WORK_ORDERS_UID)
    with psycopg.connect(seeded.url) as conn:
        results = check_dashboards(conn, [board], TimeRange.last(timedelta(hours=6)), role=READER)
        now = datetime.now(UTC)
        kpis = compute_kpis(conn, now - timedelta(days=work_orders.LOOK_BACK_DAYS), now)
        open_callbacks = conn.execute("SELECT count(*) FROM callbacks WHERE state = 'open'").fetchone()[0]
    assert not _failures(results), _failures(results)
    found = {r.where: r for r in results}
    queue = found["panel 'Callback queue' A"]
    assert len(queue.rows) == open_callbacks >= 3
    assert queue.column("due") == sorted(queue.column("due"))
    overdue = dict(zip(queue.columns, queue.rows[0], strict=True))
    assert (overdue["customer"], overdue["contact"], overdue["attempts"]) == (QUOTED_CUSTOMER, "Siobhán O'Brien", 2)
    assert overdue["time left"] < 0 and overdue["phone"] == "+35315550100, +447700900123"
    assert {"survey", "complaint_check"} <= set(queue.column("purpose"))
    complaints = found["panel 'Complaints against their deadlines' A"]
    rows = [dict(zip(complaints.columns, row, strict=True)) for row in complaints.rows]
    assert [(r["customer"], r["state"], r["round"]) for r in rows][0] == (QUOTED_CUSTOMER, "with_department", 2)
    assert rows[0]["time left"] < 0 and rows[-1]["state"] == "answered" and rows[-1]["time left"] is None
    # The stat panels are the API's figures over the last 30 days.
    callbacks = found[f"panel 'Callbacks due in the last {work_orders.LOOK_BACK_DAYS} days' A"]
    assert callbacks.column("done on time") == [pytest.approx(kpis["callbacks"]["on_time_rate"])]
    assert (callbacks.column("due"), callbacks.column("overdue now")) == (
        [kpis["callbacks"]["due"]], [kpis["callbacks"]["overdue"]])
    weekly = found[f"panel 'Complaints opened in the last {work_orders.LOOK_BACK_DAYS} days' A"]
    assert weekly.column("closed within the week") == [pytest.approx(kpis["complaints"]["closed_within_week_rate"])]
    assert (weekly.column("opened"), weekly.column("sent back"), weekly.column("to management")) == (
        [kpis["complaints"]["opened"]], [kpis["complaints"]["sent_back"]], [kpis["complaints"]["escalated"]])
    assert kpis["callbacks"]["on_time_rate"] is not None and kpis["complaints"]["closed_within_week_rate"] == 0.5


def test_the_health_dashboard_shows_the_pipeline_of_the_seeded_fleet(seeded):
    with psycopg.connect(seeded.url) as conn:
        results = check_dashboards(conn, [d for d in render.dashboards() if d["uid"] == HEALTH_UID],
                                   TimeRange.last(timedelta(hours=6)), role=READER)
        stored = conn.execute("SELECT sum(readings) FROM accepted_batches").fetchone()[0]
    assert not _failures(results), _failures(results)
    consumers = next(r for r in results if r.where == "panel 'Sharded consumers' A")
    by_consumer = {row[0]: dict(zip(consumers.columns, row, strict=True)) for row in consumers.rows}
    assert set(by_consumer) == {"diagnostics", "alarms"}
    # The seeding worker diagnosed everything and checkpointed every shard; it has stopped, so no
    # worker holds a shard now.
    diagnostics = by_consumer["diagnostics"]
    assert diagnostics["shards checkpointed"] == SHARD_COUNT
    assert (diagnostics["waiting"], diagnostics["lag"], diagnostics["workers"], diagnostics["shards held"]) == (
        0, 0, 0, 0)
    reasons = next(r for r in results if r.where == "panel 'Refused input by reason' A")
    assert dict(zip(reasons.column("reason"), reasons.column("dead letters"), strict=True)) == {
        "malformed": 2, "unknown_equipment": 1}
    accepted = next(r for r in results if r.where == "panel 'Readings accepted per second' A")
    interval_s = 20  # the 6-hour range's $__interval
    assert round(sum(accepted.column("readings/s")) * interval_s) == stored
    workers = next(r for r in results if r.where == "panel 'Ingest workers' A")
    assert workers.column("worker") == ["ingest-test"]
    missing = next(r for r in results if r.where == "panel 'Machines with messages missing' A")
    assert (missing.column("machine"), missing.column("missing")) == (["GF-00001"], [3])
    totals = next(r for r in results if r.where == "panel 'Messages missing' A")
    assert (totals.column("missing now"), totals.column("found missing")) == ([3], [3])


def test_the_health_dashboard_follows_the_code_it_watches():
    from alarms.worker import CONSUMER as ALARMS
    from alarms.worker import TICKET_SEVERITIES
    from devices.commands import FINAL_STATES, OPEN_STATES
    from devices.registry import DEVICE_STATES
    from diagnostics.worker import CONSUMER as DIAGNOSTICS

    assert health.CONSUMERS == ((DIAGNOSTICS, "accepted_batches"), (ALARMS, "fault_events"))
    assert health.TICKETED_SEVERITIES == TICKET_SEVERITIES
    assert health.COMMAND_STATES == OPEN_STATES + FINAL_STATES
    assert health.DEVICE_STATES == DEVICE_STATES


# --- the read-only role ---


def test_the_reader_role_migration_is_idempotent_and_only_reads(seeded):
    migration = (ROOT / "core" / "migrations" / "0003_grafana_reader.sql").read_text()
    with psycopg.connect(seeded.url) as conn:
        conn.execute(migration)
        conn.execute(migration)
        conn.commit()
        login, superuser = conn.execute(
            "SELECT rolcanlogin, rolsuper FROM pg_roles WHERE rolname = %s", (READER,)).fetchone()
        assert (login, superuser) == (False, False)
        conn.execute(f"SET ROLE {READER}")
        for table in ("equipment", "sites", "readings", "equipment_state", "dead_letters", "ingest_stats", "faults",
                      "fault_events", "alarms", "tickets", "ticket_events", "ticket_alarms", "customer_contacts",
                      "contact_phones", "callbacks", "complaints", "complaint_rounds"):
            conn.execute(f"SELECT count(*) FROM {table}").fetchone()
        conn.rollback()
        for statement in ("INSERT INTO sites (name, lat, lon, radius_m) VALUES ('x', 0, 0, 1)",
                          "UPDATE alarms SET state = 'cleared'", "DELETE FROM readings",
                          "CREATE TABLE public.grafana_was_here (x int)"):
            conn.execute(f"SET ROLE {READER}")
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)
            conn.rollback()


# --- the rendered JSON ---


def test_the_committed_json_is_what_the_code_renders():
    assert render.stale() == [], "run `ironsight dashboards render` (or `python -m dashboards render`) and commit"


def test_rendering_is_deterministic_with_stable_uids():
    assert render.rendered_files() == render.rendered_files()
    assert sorted(render.rendered_files()) == ["ironsight-alarms.json", "ironsight-caller.json", "ironsight-fleet.json",
                                               "ironsight-health.json", "ironsight-machine.json",
                                               "ironsight-work-orders.json"]


def _texts(node) -> Iterator[str]:
    if isinstance(node, dict):
        for value in node.values():
            yield from _texts(value)
    elif isinstance(node, list):
        for value in node:
            yield from _texts(value)
    elif isinstance(node, str):
        yield node


def _sql_texts(dashboard: dict) -> list[str]:
    texts = [v["query"] for v in dashboard["templating"]["list"] if v["type"] == "query"]
    texts += [a["target"]["rawSql"] for a in dashboard["annotations"]["list"] if "rawSql" in a.get("target", {})]
    texts += [t["rawSql"] for p in dashboard["panels"] for t in p.get("targets", [])]
    return texts


@pytest.mark.parametrize("dashboard", render.dashboards(), ids=lambda d: d["uid"])
def test_panels_use_the_data_source_and_only_variables_that_exist(dashboard):
    defined = [v["name"] for v in dashboard["templating"]["list"]]
    # No variable carries an id: Grafana keys each by its name (variables sharing an id would
    # overwrite each other).
    assert not [v for v in dashboard["templating"]["list"] if "id" in v]
    for text in _texts(dashboard):
        unknown = referenced_variables(text) - set(defined) - BUILT_IN_NAMES
        assert not unknown, f"{unknown} used in {text[:200]!r}"
    # A variable's query may only use the variables above it (Grafana resolves them in order).
    for index, variable in enumerate(dashboard["templating"]["list"]):
        if variable["type"] == "query":
            assert variable["datasource"]["uid"] == DATASOURCE_UID
            assert referenced_variables(variable["query"]) - BUILT_IN_NAMES <= set(defined[:index])
    # Grafana's built-in "Annotations & Alerts" comes first, once; every other annotation reads IronSight.
    built_in, *annotations = dashboard["annotations"]["list"]
    assert built_in["builtIn"] == 1 and built_in["datasource"] == {"type": "grafana", "uid": "-- Grafana --"}
    for annotation in annotations:
        assert not annotation.get("builtIn")
        assert annotation["datasource"] == {"type": DATASOURCE_TYPE, "uid": DATASOURCE_UID}
    panels = dashboard["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    assert len({p["title"] for p in panels}) == len(panels), "panel titles name the panels in reports"
    cells: set[tuple[int, int]] = set()
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= GRID_COLUMNS
        covered = {(x, y) for x in range(grid["x"], grid["x"] + grid["w"])
                   for y in range(grid["y"], grid["y"] + grid["h"])}
        assert not covered & cells, f"{panel['title']} overlaps another panel"
        cells |= covered
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": DATASOURCE_TYPE, "uid": DATASOURCE_UID}, panel["title"]
        assert panel["targets"] and all(t["datasource"]["uid"] == DATASOURCE_UID for t in panel["targets"])
    for text in _sql_texts(dashboard):
        # Recent Grafana strips SQL comments, older does not; $$ would meet Grafana's template syntax.
        assert "--" not in text and "/*" not in text and "$$" not in text, text
        for match in re.finditer(r"\$__\w+\(([^)]*)", text):
            assert "(" not in match.group(1), f"a macro argument with parentheses: {match.group(0)}"


def test_links_between_dashboards_name_real_dashboards_and_variables():
    by_uid = {d["uid"]: d for d in render.dashboards()}
    links = [t for d in by_uid.values() for t in _texts(d) if t.startswith("/d/")]
    assert links
    for url in links:
        parts = urlsplit(url)
        uid = parts.path.split("/")[2]
        assert uid in by_uid, url
        target_variables = {v["name"] for v in by_uid[uid]["templating"]["list"]}
        params = parse_qs(parts.query.replace("${__url_time_range}", ""))
        assert {p.removeprefix("var-") for p in params if p.startswith("var-")} <= target_variables, url


def test_links_into_the_api_name_real_endpoints():
    from api.app import create_app
    from core.settings import Settings

    spec = create_app(Settings(), "postgresql://unused/ironsight").openapi()
    operations = {op["operationId"]: (path, method, op.get("tags")) for path, item in spec["paths"].items()
                  for method, op in item.items()}
    assert operations["create_ticket_api_v1_tickets_post"] == ("/api/v1/tickets", "post", ["tickets"])
    api_links = {t for d in render.dashboards() for t in _texts(d) if t.startswith("${api_url}")}
    paths = {urlsplit(t.replace("${api_url}", "http://api")).path for t in api_links}
    templates = [re.sub(r"\{[^}]+\}", "[^/]+", p) for p in spec["paths"]]
    for path in paths - {"/docs"}:
        concrete = re.sub(r"\$\{[^}]+\}", "1", path)
        assert any(re.fullmatch(t, concrete) for t in templates), path
    assert any(t.endswith("#/tickets/create_ticket_api_v1_tickets_post") for t in api_links)


def test_the_drawn_limits_are_the_rulebook_limits():
    from diagnostics.rulebook import DEFAULT, RULEBOOKS
    from diagnostics.rules import Repeated, ServiceDue, Threshold

    def of(book) -> limits.Limits:
        rules = {r.key: r for r in book.rules}
        return limits.Limits(
            oil_temp_c=rules["oil_overheat"].raise_at, coolant_temp_c=rules["coolant_overheat"].raise_at,
            hydraulic_pressure_low_bar=rules["hydraulic_pressure_low"].raise_at,
            hydraulic_pressure_spike_bar=rules["hydraulic_pressure_spikes"].raise_at)

    assert isinstance(DEFAULT.rule("oil_overheat"), Threshold) and isinstance(
        DEFAULT.rule("hydraulic_pressure_spikes"), Repeated)
    assert of(DEFAULT) == limits.DEFAULT
    for model, book in RULEBOOKS.items():
        assert of(book) == limits.BY_MODEL.get(model, limits.DEFAULT), model
    service = DEFAULT.rule("service_due")
    assert isinstance(service, ServiceDue)
    assert (service.interval_h, service.warn_before_h) == (limits.SERVICE_INTERVAL_H, limits.SERVICE_WARN_BEFORE_H)
    assert [f.name for f in fields(limits.Limits)] == list(limits.LIMIT_NAMES)


def test_open_ticket_states_and_offline_limit_follow_the_code_they_mirror():
    from core.settings import Settings
    from tickets.service import OPEN_STATES, SURVEY_INDICATORS

    assert sql.OPEN_TICKET_STATES == OPEN_STATES
    assert sql.SURVEY_INDICATORS == SURVEY_INDICATORS
    assert sql.OFFLINE_AFTER_S == Settings.model_fields["offline_after_s"].default


def test_the_after_the_repair_panels_follow_the_kpis():
    from tickets.kpis import COMPLAINT_MANAGEMENT_STATES, COMPLAINT_WEEK

    assert timedelta(days=work_orders.COMPLAINT_WEEK_DAYS) == COMPLAINT_WEEK
    assert work_orders.COMPLAINT_MANAGEMENT_STATES == COMPLAINT_MANAGEMENT_STATES


# --- Grafana's query preparation, against Grafana's own documented behaviour ---


def test_macros_expand_as_grafana_expands_them():
    span = TimeRange(datetime(2018, 4, 12, 18, 0, tzinfo=UTC), datetime(2018, 4, 12, 18, 5, tzinfo=UTC))
    plain = dict(timescaledb=False)
    assert expand_macros("select $__time(time_column)", span, **plain) == 'select time_column AS "time"'
    assert expand_macros("WHERE $__timeFilter(time_column)", span, **plain) == (
        "WHERE time_column BETWEEN '2018-04-12T18:00:00Z' AND '2018-04-12T18:05:00Z'")
    assert expand_macros("select $__timeFrom(), $__timeTo()", span, **plain) == (
        "select '2018-04-12T18:00:00Z', '2018-04-12T18:05:00Z'")
    assert expand_macros("SELECT $__timeGroup(time_column,'5m')", span, **plain) == (
        "SELECT floor(extract(epoch from time_column)/300)*300")
    assert expand_macros("SELECT $__timeGroupAlias(time_column , '5m')", span, **plain) == (
        'SELECT floor(extract(epoch from time_column)/300)*300 AS "time"')
    assert expand_macros("SELECT $__timeGroup(time_column,'5m'), value", span, **plain) == (
        'SELECT floor(extract(epoch from time_column)/300)*300 AS "time", value')
    assert expand_macros("GROUP BY $__timeGroup(time_column , '12d')", span, timescaledb=True) == (
        "GROUP BY time_bucket('1036800.000s',time_column)")
    assert expand_macros("GROUP BY $__timeGroup(time_column,'20ms')", span, timescaledb=True) == (
        "GROUP BY time_bucket('0.020s',time_column)")
    assert expand_macros("select $__unixEpochFilter(time)", span, **plain) == (
        "select time >= 1523556000 AND time <= 1523556300")
    assert expand_macros("SELECT $__unixEpochGroupAlias(t+adj,'5m')", span, **plain) == (
        'SELECT floor((t+adj)/300)*300 AS "time"')
    with pytest.raises(MacroError):
        expand_macros("SELECT $__notAMacro(x)", span, **plain)
    with pytest.raises(MacroError):
        expand_macros("SELECT $__timeGroup(ts, 'soon')", span, **plain)
    half = TimeRange(datetime(1960, 2, 1, 7, 0, 0, 500000, tzinfo=UTC), datetime(1980, 2, 3, 8, tzinfo=UTC))
    assert expand_macros("$__timeFilter(t)", half, **plain) == (
        "t BETWEEN '1960-02-01T07:00:00.5Z' AND '1980-02-03T08:00:00Z'")


def test_intervals_are_chosen_as_grafana_chooses_them():
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert calculate_interval(TimeRange.last(timedelta(hours=6), now), 1000, MIN_INTERVAL).text == "20s"
    assert calculate_interval(TimeRange.last(timedelta(days=90), now), 1000, MIN_INTERVAL).text == "2h"
    assert calculate_interval(TimeRange.last(timedelta(minutes=5), now), 1000, MIN_INTERVAL).text == "1s"
    assert calculate_interval(TimeRange.last(timedelta(minutes=5), now), 1000, None).text == "200ms"
    assert calculate_interval(TimeRange.last(timedelta(days=365), now), 100, None).text == "1d"
    assert calculate_interval(TimeRange.last(timedelta(days=365), now), 10, None).text == "30d"
    ninety = calculate_interval(TimeRange.last(timedelta(days=90), now), 1000, MIN_INTERVAL)
    assert (ninety.ms, prepare("$__interval $__interval_ms", {}, TimeRange.last(timedelta(days=90), now), ninety,
                               timescaledb=False)) == (7200000, "2h 7200000")


def test_variables_are_substituted_as_grafana_substitutes_them():
    customers = ["acme", "O'Brien"]
    multi = VariableValue(["O'Brien"], multi=True, include_all=True, all_value=sql.ALL_VALUE, options=customers)
    everyone = VariableValue(["$__all"], multi=True, include_all=True, all_value=sql.ALL_VALUE, options=customers)
    all_listed = VariableValue("$__all", include_all=True, options=customers)
    single = VariableValue("EX-1")
    awkward = VariableValue("it's")
    variables = {"customer": multi, "everyone": everyone, "listed": all_listed, "equipment": single, "odd": awkward}
    assert interpolate("c IN ($customer)", variables) == "c IN ('O''Brien')"
    assert interpolate("('__all' IN ($everyone))", variables) == "('__all' IN ('__all'))"
    assert interpolate("c IN (${listed})", variables) == "c IN ('acme','O''Brien')"
    assert interpolate("id = '$equipment' AND x = '[[odd]]'", variables) == "id = 'EX-1' AND x = 'it''s'"
    assert interpolate("${customer:sqlstring} ${equipment:raw}", variables) == "'O''Brien' EX-1"
    assert interpolate("var-customer=${customer:percentencode}", variables, sql=False) == "var-customer=O'Brien"
    assert interpolate("$__timeFilter(ts) $unknown", variables) == "$__timeFilter(ts) $unknown"


# --- provisioning, the stack, and pushing ---


def test_provisioning_files_point_at_the_dashboards_and_the_read_only_data_source():
    datasources = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/ironsight.yaml").read_text())
    assert datasources["apiVersion"] == 1
    (source,) = datasources["datasources"]
    assert (source["uid"], source["type"]) == (DATASOURCE_UID, DATASOURCE_TYPE)
    assert source["jsonData"]["timescaledb"] is True
    assert source["jsonData"]["timeInterval"] == MIN_INTERVAL
    assert "password" in source["secureJsonData"] and "password" not in source
    providers = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/dashboards.yaml").read_text())
    (provider,) = providers["providers"]
    assert provider["type"] == "file" and provider["folderUid"] == FOLDER_UID
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    mounts = {m.split(":")[1]: m.split(":")[0] for m in compose["services"]["grafana"]["volumes"] if ":" in m}
    assert (DEPLOY / mounts[provider["options"]["path"]]).resolve() == render.JSON_DIR
    assert (DEPLOY / mounts["/etc/grafana/provisioning"]).resolve() == DEPLOY / "grafana/provisioning"


def test_the_compose_stack_is_complete_and_consistent():
    from ironsight.cli import build_parser

    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"timescaledb", "mosquitto", "grafana", "migrate", "ingest", "diagnostics", "alarms", "api"} <= set(services)
    for name, service in services.items():
        image = service.get("image")
        assert image or service.get("build") or "<<" in service, name
        if image and not image.startswith("ironsight"):
            assert ":" in image and not image.endswith((":latest", ":main")), f"{name} image is not pinned: {image}"
        for dependency in service.get("depends_on", {}):
            assert dependency in services, f"{name} depends on unknown {dependency}"
    build = services["migrate"]["build"]
    assert (DEPLOY / build["context"] / build["dockerfile"]).is_file()
    # Every IronSight service runs a real `ironsight` subcommand with arguments it accepts.
    for name in ("migrate", "ingest", "diagnostics", "alarms", "api"):
        command = services[name]["command"]
        assert build_parser().parse_args(command).command == command[0], (name, command)
    workers = [services[n] for n in ("ingest", "diagnostics", "alarms", "api")]
    assert all(w["depends_on"]["migrate"]["condition"] == "service_completed_successfully" for w in workers)
    assert services["timescaledb"]["image"].startswith("timescale/timescaledb")
    # Every ${VAR} the stack reads is documented in the example environment file.
    used = set(re.findall(r"\$\{(\w+)", (DEPLOY / "docker-compose.yml").read_text()))
    example = (DEPLOY / ".env.example").read_text()
    assert used and all(re.search(rf"^{v}=", example, re.M) for v in used), used


def test_push_payloads_are_idempotent_and_grafana_unreachable_is_a_clear_error():
    target = DatabaseTarget.from_url("postgresql://grafana:s%40cret@db.example:6432/ironsight?sslmode=require")
    assert (target.host, target.port, target.database, target.user, target.password, target.sslmode) == (
        "db.example", 6432, "ironsight", "grafana", "s@cret", "require")
    source = datasource_payload(target, timescaledb=True)
    assert source["uid"] == DATASOURCE_UID and source["url"] == "db.example:6432"
    assert source["jsonData"]["timescaledb"] is True and source["secureJsonData"] == {"password": "s@cret"}
    provisioned = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/ironsight.yaml").read_text())
    assert set(source["jsonData"]) == set(provisioned["datasources"][0]["jsonData"])
    machine = next(d for d in render.dashboards() if d["uid"] == MACHINE_UID)
    body = dashboard_payload(machine)
    assert body["folderUid"] == FOLDER_UID and body["overwrite"] is True and body["dashboard"]["id"] is None
    assert body["dashboard"]["uid"] == MACHINE_UID
    stored = {**machine, "id": 42, "version": 7}  # what Grafana returns after a push
    assert not dashboard_changed(stored, machine)
    assert dashboard_changed({**stored, "title": "edited in the UI"}, machine)
    assert dashboard_changed(None, machine)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(PushError, match="folder"):
        push(f"http://127.0.0.1:{port}", "token", dashboards=[machine], timeout_s=2)


def test_the_reader_login_script_and_the_stack_use_the_same_role():
    script = (DEPLOY / "timescaledb/initdb/10-grafana-login.sh").read_text()
    assert READER in script
    datasource = (DEPLOY / "grafana/provisioning/datasources/ironsight.yaml").read_text()
    assert "IRONSIGHT_GRAFANA_DB_USER" in datasource and "IRONSIGHT_GRAFANA_DB_PASSWORD" in datasource

