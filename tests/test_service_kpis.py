"""KPIs of what happens after the repair, on a hand-made history with explicit times: callbacks done
on time or not, complaints closed within the week or not, remote diagnosis against the contract
tier's limit, satisfaction per engineer and station. Tickets go through tickets.service; callbacks,
complaints and their rounds are written with SQL, each row's times chosen so that every figure is
known exactly. Against the real database, and over HTTP for the routes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from core.register import EquipmentRecord, register_equipment
from tests.helpers import ApiServer
from tickets import service, sla
from tickets.kpis import (
    COMPLAINT_STATES,
    LEAVING_REMOTE_DIAGNOSIS,
    compute_kpis,
    satisfaction,
)
from tickets.resources import Engineer, Station, Vehicle, upsert_engineer, upsert_station, upsert_vehicle

T0 = datetime(2025, 3, 3, 8, 0, tzinfo=UTC)
MIN = timedelta(minutes=1)
H = timedelta(hours=1)
D = timedelta(days=1)
DAY = (T0, T0 + D)
ACME, NORDBAU = "acme", "nordbau"
# nordbau's tier promises remote diagnosis within 15 minutes; acme has no tier (30 minutes).
NORDBAU_REMOTE_DIAGNOSIS_MIN = 15
DEPARTMENTS = ("service management", "dispatch", "management")
ENGINEERS = (("Eva", "ST-R"), ("Carl", "ST-R"), ("Bob", "ST-M"))


@pytest.fixture
def fleet(conn):
    register_equipment(conn, [EquipmentRecord("EX-1", "S-1", "EX210", "excavator", ACME, "rotterdam"),
                              EquipmentRecord("CR-2", "S-2", "TC500", "crane", NORDBAU, "munich")])
    for station in ("ST-R", "ST-M"):
        upsert_station(conn, Station(station, f"station {station}", 51.92, 4.48))
    for name, station in ENGINEERS:
        upsert_engineer(conn, Engineer(name, name, station, ("EX210", "TC500")))
        upsert_vehicle(conn, Vehicle(f"VAN-{name}", station, name), at=T0 - D)
    sla.put_tier(conn, "Gold", description="", respond_h=2, arrive_h=4, resolve_h=12,
                 remote_diagnosis_min=NORDBAU_REMOTE_DIAGNOSIS_MIN, limits={})
    conn.execute("UPDATE customers SET tier = 'Gold' WHERE id = %s", (NORDBAU,))
    for department in DEPARTMENTS:  # the migration's groups, whatever a test run did to them
        conn.execute("INSERT INTO service_groups (name, kind) VALUES (%s, %s) ON CONFLICT DO NOTHING",
                     (department, "management" if department == "management" else "department"))
    conn.commit()
    return conn


def new_ticket(conn, equipment_id: str = "EX-1", created_at: datetime = T0) -> int:
    ticket, created = service.create_ticket(conn, service.NewTicket(
        equipment_id=equipment_id, title="hydraulic pressure low", priority="major", created_at=created_at))
    assert created
    return ticket["id"]


def act(conn, ticket_id: int, *steps: tuple[str, datetime, dict]) -> None:
    for action, at, fields in steps:
        service.apply_action(conn, ticket_id, action, actor="dispatcher", fields=fields, at=at)


def insert_callback(conn, ticket_id: int, *, due: datetime, state: str = "open", done: datetime | None = None,
                    attempts: int = 0, complaint: tuple[int, int] | None = None) -> None:
    """A callback created a day before it is due; ``complaint``: (complaint id, round) it checks."""
    complaint_id, complaint_round = complaint or (None, None)
    conn.execute(
        """INSERT INTO callbacks (ticket_id, purpose, complaint_id, complaint_round, state, created_at, due_at,
                                  next_attempt_at, attempts, done_at, done_by)
           VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)""",
        (ticket_id, "complaint_check" if complaint else "survey", complaint_id, complaint_round, state, due - D, due,
         due - D, attempts, done, "agent" if done else None))


def insert_complaint(conn, ticket_id: int, *, opened: datetime, state: str, rounds: list[tuple],
                     closed: datetime | None = None) -> int:
    """A complaint and its rounds, each (department, sent, answer due, answered or None); the complaint
    is in its last round, with that round's department and deadline."""
    department, _, answer_due, _ = rounds[-1]
    complaint_id = conn.execute(
        """INSERT INTO complaints (ticket_id, source, state, department, round, answer_due, opened_by, opened_at,
                                   closed_at)
           VALUES (%s, 'survey', %s, %s, %s, %s, 'callcentre', %s, %s) RETURNING id""",
        (ticket_id, state, department, len(rounds), answer_due, opened, closed)).fetchone()[0]
    for number, (department, sent, due, answered) in enumerate(rounds, start=1):
        conn.execute("""INSERT INTO complaint_rounds (complaint_id, round, department, sent_at, answer_due,
                                                      answered_at, answered_by)
                        VALUES (%s, %s, %s, %s, %s, %s, %s)""",
                     (complaint_id, number, department, sent, due, answered, department if answered else None))
    return complaint_id


# --- callbacks ------------------------------------------------------------------------------------------------


def test_callbacks_due_in_the_window(fleet):
    conn = fleet
    now = T0 + 18 * H
    tickets = [new_ticket(conn) for _ in range(8)]
    insert_callback(conn, tickets[0], due=T0 + 10 * H, state="done", done=T0 + 9 * H, attempts=1)   # on time
    insert_callback(conn, tickets[1], due=T0 + 11 * H, state="done", done=T0 + 12 * H, attempts=3)  # late
    insert_callback(conn, tickets[2], due=T0 + 12 * H, state="unreachable", attempts=5)
    insert_callback(conn, tickets[3], due=T0 + 15 * H)                                  # open, overdue now
    insert_callback(conn, tickets[4], due=T0 + 22 * H)                                  # open, not due yet
    insert_callback(conn, tickets[5], due=T0 + 5 * H, state="cancelled")
    insert_callback(conn, tickets[6], due=T0 + 30 * H)                                  # due after the window
    insert_callback(conn, tickets[7], due=T0 - H, state="done", done=T0 - 2 * H)       # due before it
    # nordbau's complaint, checked on time.
    crane = new_ticket(conn, "CR-2")
    complaint = insert_complaint(conn, crane, opened=T0 - 3 * D, state="answered",
                                 rounds=[("dispatch", T0 - 3 * D, T0 + D, T0 + H)])
    insert_callback(conn, crane, due=T0 + 8 * H, state="done", done=T0 + 7 * H, attempts=2, complaint=(complaint, 1))
    conn.commit()

    callbacks = compute_kpis(conn, *DAY, now=now)["callbacks"]
    # Decided: three done, one unreachable, one open past its due time; two of them on time.
    assert callbacks == {"due": 7, "done": 3, "done_on_time": 2, "unreachable": 1, "cancelled": 1, "open": 2,
                         "overdue": 1, "decided": 5, "on_time_rate": pytest.approx(2 / 5),
                         "attempts_per_done": pytest.approx((1 + 3 + 2) / 3)}
    nordbau = compute_kpis(conn, *DAY, customer=NORDBAU, now=now)["callbacks"]
    assert (nordbau["due"], nordbau["done_on_time"], nordbau["decided"], nordbau["on_time_rate"]) == (1, 1, 1, 1.0)
    # Later the open one still waiting is overdue too, and counts against the rate.
    later = compute_kpis(conn, *DAY, now=T0 + 2 * D)["callbacks"]
    assert (later["overdue"], later["decided"], later["on_time_rate"]) == (2, 6, pytest.approx(2 / 6))
    empty = compute_kpis(conn, T0 - 10 * D, T0 - 9 * D, now=now)["callbacks"]
    assert (empty["due"], empty["on_time_rate"], empty["attempts_per_done"]) == (0, None, None)


# --- complaints -----------------------------------------------------------------------------------------------


def test_complaints_opened_in_the_window(fleet):
    conn = fleet
    now = T0 + 12 * D
    window = (T0, T0 + 10 * D)
    sm, mgmt = "service management", "management"
    t = [new_ticket(conn) for _ in range(9)]
    # Satisfied after 3 days; answered on time.
    insert_complaint(conn, t[0], opened=T0 + H, state="satisfied", closed=T0 + 3 * D,
                     rounds=[(sm, T0 + H, T0 + 7 * D + H, T0 + 2 * D)])
    # Sent back once (the first answer late, the second on time), satisfied after almost 9 days.
    insert_complaint(conn, t[1], opened=T0 + 2 * H, state="satisfied", closed=T0 + 9 * D,
                     rounds=[(sm, T0 + 2 * H, T0 + 2 * D, T0 + 3 * D), (sm, T0 + 4 * D, T0 + 6 * D, T0 + 5 * D)])
    # Sent back twice, then closed by management within the week: answered exactly at the deadline,
    # late, and management's round never answered.
    insert_complaint(conn, t[2], opened=T0 + 3 * H, state="closed", closed=T0 + 6 * D,
                     rounds=[(sm, T0 + 3 * H, T0 + D, T0 + D), (sm, T0 + 1.5 * D, T0 + 2 * D, T0 + 2.5 * D),
                             (mgmt, T0 + 3 * D, T0 + 5 * D, None)])
    # With management now, its week over; management's deadline still ahead.
    insert_complaint(conn, t[3], opened=T0 + 4 * H, state="escalated",
                     rounds=[(sm, T0 + 4 * H, T0 + D, T0 + 0.5 * D), (sm, T0 + D, T0 + 3 * D, T0 + 2 * D),
                             (mgmt, T0 + 4 * D, T0 + 13 * D, None)])
    # Opened late in the window, their week not over: the department is late, and on time.
    insert_complaint(conn, t[4], opened=T0 + 9 * D, state="with_department",
                     rounds=[("dispatch", T0 + 9 * D, T0 + 11 * D, None)])
    insert_complaint(conn, t[5], opened=T0 + 9.5 * D, state="answered",
                     rounds=[("dispatch", T0 + 9.5 * D, T0 + 16 * D, T0 + 10 * D)])
    # Outside the window.
    insert_complaint(conn, t[6], opened=T0 + 11 * D, state="with_department",
                     rounds=[(sm, T0 + 11 * D, T0 + 12 * D - H, None)])
    insert_complaint(conn, t[7], opened=T0 - D, state="satisfied", closed=T0 + D,
                     rounds=[(sm, T0 - D, T0, T0 + 12 * D)])
    # nordbau's: satisfied the next day.
    crane = new_ticket(conn, "CR-2")
    insert_complaint(conn, crane, opened=T0 + 5 * D, state="satisfied", closed=T0 + 6 * D,
                     rounds=[("dispatch", T0 + 5 * D, T0 + 8 * D, T0 + 5.5 * D)])
    conn.commit()

    complaints = compute_kpis(conn, *window, now=now)["complaints"]
    assert complaints == {
        "opened": 7,
        "by_state": {"with_department": 1, "answered": 1, "escalated": 1, "satisfied": 3, "closed": 1},
        # Within the week: 3 days, 6 days (management), nordbau's 1 day; decided besides: the one
        # satisfied after almost 9 days and the escalated one, open for 12 days.
        "closed_within_week": 3, "week_decided": 5, "closed_within_week_rate": pytest.approx(3 / 5),
        "sent_back": 3, "escalated": 2,
        # Rounds decided: all but the escalated one's management round (due after now); late are the
        # sent-back one's first, the closed one's second and third, and the one past its deadline.
        "answers": {"decided": 11, "on_time": 7, "on_time_rate": pytest.approx(7 / 11)},
    }
    nordbau = compute_kpis(conn, *window, customer=NORDBAU, now=now)["complaints"]
    assert (nordbau["opened"], nordbau["closed_within_week_rate"], nordbau["answers"]["on_time_rate"]) == (1, 1.0, 1.0)


def test_complaint_states_are_the_schemas(conn):
    check = conn.execute("""SELECT pg_get_constraintdef(oid) FROM pg_constraint
                            WHERE conrelid = 'complaints'::regclass AND contype = 'c'
                              AND pg_get_constraintdef(oid) LIKE '%%state%%'""").fetchone()[0]
    assert set(COMPLAINT_STATES) == set(check.split("ARRAY[")[1].split("]")[0].replace("::text", "")
                                        .replace("'", "").replace(" ", "").split(","))


# --- remote diagnosis -----------------------------------------------------------------------------------------


def remote_diagnosis(conn, equipment_id: str, started: datetime, *then: tuple[str, datetime, dict]) -> int:
    ticket_id = new_ticket(conn, equipment_id, created_at=started - 10 * MIN)
    act(conn, ticket_id, ("accept", started - 5 * MIN, {}), ("start_remote_diagnosis", started, {}), *then)
    return ticket_id


def test_remote_diagnosis_minutes_against_the_tiers_limit(fleet):
    conn = fleet
    now = T0 + D
    fixed = {"work_done": "reset the controller"}
    reason = {"reason": "customer asked"}
    remote_diagnosis(conn, "EX-1", T0 + 10 * MIN, ("resolve_remote", T0 + 30 * MIN, fixed))                # 20 ✓
    remote_diagnosis(conn, "EX-1", T0 + H, ("dispatch", T0 + H + 45 * MIN, {"engineer": "Eva"}))          # 45 ✗
    remote_diagnosis(conn, "CR-2", T0 + 2 * H, ("escalate", T0 + 2 * H + 20 * MIN, {"expert_group": "R&D"}))  # 20 ✗
    remote_diagnosis(conn, "CR-2", T0 + 3 * H, ("reject", T0 + 3 * H + 10 * MIN, reason))                 # 10 ✓
    remote_diagnosis(conn, "EX-1", T0 + 4 * H, ("cancel", T0 + 4 * H + 30 * MIN, reason))                 # 30 ✓
    # A note is no way out: still in remote diagnosis, past the limit now.
    remote_diagnosis(conn, "EX-1", T0 + 5 * H, ("follow_up", T0 + 5 * H + 5 * MIN, reason))
    # Sent out and back, diagnosed remotely again: the first time in the window counts (10 minutes).
    remote_diagnosis(conn, "EX-1", T0 + 6 * H, ("dispatch", T0 + 6 * H + 10 * MIN, {"engineer": "Bob"}),
                     ("return", T0 + 6 * H + 20 * MIN, reason), ("start_remote_diagnosis", T0 + 6 * H + 30 * MIN, {}),
                     ("resolve_remote", T0 + 7 * H + 30 * MIN, fixed))
    # Still within its 30 minutes at the end of the window: not decided yet.
    remote_diagnosis(conn, "EX-1", T0 + D - 15 * MIN)
    # Entered before the window.
    remote_diagnosis(conn, "EX-1", T0 - H, ("resolve_remote", T0 + 5 * MIN, fixed))
    conn.commit()

    rd = compute_kpis(conn, *DAY, now=now)["remote_diagnosis"]
    # Minutes out: 10, 10, 20, 20, 30, 45 (p90 interpolated like percentile_cont: 30 + 0.5 × 15).
    assert rd == {"entered": 8, "duration_min": {"count": 6, "mean": pytest.approx(22.5), "p90": pytest.approx(37.5)},
                  "decided": 7, "within_limit": 4, "within_limit_rate": pytest.approx(4 / 7)}
    # nordbau's 15 minutes: the escalation after 20 misses it, the rejection after 10 meets it.
    nordbau = compute_kpis(conn, *DAY, customer=NORDBAU, now=now)["remote_diagnosis"]
    assert nordbau == {"entered": 2, "duration_min": {"count": 2, "mean": pytest.approx(15.0),
                                                      "p90": pytest.approx(19.0)},
                       "decided": 2, "within_limit": 1, "within_limit_rate": 0.5}
    assert compute_kpis(conn, *DAY, now=T0 + D + H)["remote_diagnosis"]["decided"] == 8


def test_every_way_out_of_remote_diagnosis_ends_it():
    assert set(LEAVING_REMOTE_DIAGNOSIS) == {"resolved", "dispatched", "escalated", "cancelled", "rejected"}


# --- satisfaction per engineer and station ----------------------------------------------------------------------


def repaired(conn, engineer: str, scores: dict[str, int], created_at: datetime = T0 + H) -> int:
    """A ticket repaired on site by ``engineer`` and called back with ``scores``."""
    ticket_id = new_ticket(conn, created_at=created_at)
    at = created_at + 10 * MIN
    act(conn, ticket_id, ("accept", at, {}), ("dispatch", at, {"engineer": engineer}),
        ("engineer_accept", at, {}), ("arrive", at + H, {}),
        ("resolve", at + 2 * H, {"work_done": "replaced the hose", "first_time_fix": True}))
    service.submit_survey(conn, ticket_id, scores, actor="callcentre", at=at + D)
    return ticket_id


def scored(value: int, **others: int) -> dict[str, int]:
    return dict.fromkeys(service.SURVEY_INDICATORS, value) | others


@pytest.fixture
def surveyed(fleet):
    conn = fleet
    repaired(conn, "Eva", scored(5))
    repaired(conn, "Eva", scored(4))
    repaired(conn, "Carl", scored(3))
    bob = repaired(conn, "Bob", scored(3, parts_supply=4))
    repaired(conn, "Eva", scored(3), created_at=T0 - 2 * D)  # created before the window
    # Solved on the phone: nobody was sent, so no engineer's or station's.
    phone = new_ticket(conn)
    act(conn, phone, ("accept", T0, {}), ("start_remote_diagnosis", T0, {}),
        ("resolve_remote", T0 + H, {"work_done": "reset"}))
    service.submit_survey(conn, phone, scored(5), actor="callcentre", at=T0 + 2 * H)
    # A complaint raised about Bob's work after all.
    insert_complaint(conn, bob, opened=T0 + 3 * D, state="with_department",
                     rounds=[("service management", T0 + 3 * D, T0 + 10 * D, None)])
    conn.commit()
    return conn


def test_satisfaction_per_engineer_and_station_worst_first(surveyed):
    conn = surveyed
    by_engineer = satisfaction(conn, *DAY, by="engineer")
    assert [(r["id"], r["station"], r["surveys"], r["complaints"]) for r in by_engineer] == [
        ("Carl", "ST-R", 1, 0), ("Bob", "ST-M", 1, 1), ("Eva", "ST-R", 2, 0)]
    carl, bob, eva = by_engineer
    assert carl["overall"] == 3.0 and bob["overall"] == pytest.approx(19 / 6) and eva["overall"] == 4.5
    assert bob["means"] == scored(3, parts_supply=4) and eva["means"] == dict.fromkeys(service.SURVEY_INDICATORS, 4.5)
    assert all(r["low_surveys"] == 0 for r in by_engineer) and eva["name"] == "Eva"

    by_station = satisfaction(conn, *DAY, by="station")
    assert [(r["id"], r["name"], r["surveys"], r["complaints"]) for r in by_station] == [
        ("ST-M", "station ST-M", 1, 1), ("ST-R", "station ST-R", 3, 0)]
    assert by_station[1]["overall"] == pytest.approx(4.0)
    # The same surveys as the KPIs of one engineer or station.
    for row, filters in ((eva, {"engineer": "Eva"}), (by_station[1], {"station": "ST-R"})):
        assert compute_kpis(conn, *DAY, **filters)["survey"]["means"] == row["means"]
    assert satisfaction(conn, T0 - 10 * D, T0 - 9 * D) == []
    with pytest.raises(ValueError):
        satisfaction(conn, *DAY, by="customer")


def test_satisfaction_and_the_new_kpis_over_http(settings, surveyed):
    server = ApiServer(settings, settings.database_url)
    try:
        admin = server.client()
        params = {"start": DAY[0].isoformat(), "end": DAY[1].isoformat()}
        body = admin.get("/kpis/satisfaction", params=params | {"by": "station"}).json()
        assert (body["by"], body["count"], [r["id"] for r in body["data"]]) == ("station", 2, ["ST-M", "ST-R"])
        engineers = admin.get("/kpis/satisfaction", params=params).json()
        assert [r["id"] for r in engineers["data"]] == ["Carl", "Bob", "Eva"]
        assert engineers["data"][1]["means"]["parts_supply"] == 4.0
        assert admin.get("/kpis/satisfaction", params=params | {"by": "customer"}).status_code == 422
        dispatcher = server.user("dispatcher")
        assert dispatcher.get("/kpis/satisfaction", params=params).status_code == 200
        customer = server.user("customer", customer=ACME)
        assert customer.get("/kpis/satisfaction", params=params).status_code == 403
        kpis = admin.get("/kpis", params=params).json()
        assert kpis["remote_diagnosis"]["entered"] == 1 and kpis["complaints"]["opened"] == 0
        assert set(kpis["callbacks"]) >= {"due", "done_on_time", "overdue", "on_time_rate", "attempts_per_done"}
        assert kpis["complaints"]["by_state"] == dict.fromkeys(COMPLAINT_STATES, 0)
    finally:
        server.close()
