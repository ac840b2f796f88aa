"""The work-order loop: the state machine (every legal and illegal transition, generated from its
table), SLA warnings and breaches on a controllable clock, the callback survey with its complaint
path, and KPIs on a hand-made history. Against the real database, and over HTTP where it matters."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from core.register import EquipmentRecord, register_equipment
from tests.helpers import ApiServer
from tickets import service, sla, workflow
from tickets.kpis import compute_kpis
from tickets.resources import Engineer, Station, Vehicle, upsert_engineer, upsert_station, upsert_vehicle

T0 = datetime(2025, 3, 3, 8, 0, tzinfo=UTC)
H = timedelta(hours=1)

# What each action needs, for the tests that take it.
FIELDS = {
    "reason": "customer asked", "engineer": "Eva", "expert_group": "R&D", "work_done": "replaced the filter",
    "first_time_fix": True, "parts_used": [{"part": "HF-35 filter", "quantity": 1}],
}
GOOD = dict.fromkeys(service.SURVEY_INDICATORS, 5)
LOW = GOOD | {"parts_supply": 2}

# The shortest way to each state, as actions (``survey:good`` / ``survey:low`` through the survey).
PATHS: dict[str, list[str]] = {
    "created": [],
    "accepted": ["accept"],
    "remote_diagnosis": ["accept", "start_remote_diagnosis"],
    "escalated": ["accept", "escalate"],
    "dispatched": ["accept", "dispatch"],
    "en_route": ["accept", "dispatch", "engineer_accept"],
    "on_site": ["accept", "dispatch", "engineer_accept", "arrive"],
    "resolved": ["accept", "dispatch", "engineer_accept", "arrive", "resolve"],
    "complaint": ["accept", "dispatch", "engineer_accept", "arrive", "resolve", "survey:low"],
    "closed": ["accept", "dispatch", "engineer_accept", "arrive", "resolve", "survey:good"],
    "rejected": ["reject"],
    "cancelled": ["cancel"],
}


@pytest.fixture
def fleet(conn):
    register_equipment(conn, [EquipmentRecord("EX-1", "S-1", "EX210", "excavator", "acme", "rotterdam"),
                              EquipmentRecord("CR-2", "S-2", "TC500", "crane", "nordbau", "munich")])
    for name, station in (("Eva", "ST-R"), ("Bob", "ST-M")):
        upsert_station(conn, Station(station, station, 51.92, 4.48))
        upsert_engineer(conn, Engineer(name, name, station, ("EX210", "TC500")))
        upsert_vehicle(conn, Vehicle(f"VAN-{name}", station, name), at=T0)
    conn.commit()
    return conn


def new_ticket(conn, equipment_id: str = "EX-1", created_at: datetime | None = None, **kw) -> int:
    ticket, created = service.create_ticket(conn, service.NewTicket(
        equipment_id=equipment_id, title="hydraulic pressure low", priority="major", created_at=created_at, **kw))
    assert created
    return ticket["id"]


def walk(conn, ticket_id: int, steps: list[str], at: datetime | None = None) -> dict:
    ticket = service.get_ticket(conn, ticket_id)
    for step in steps:
        if step.startswith("survey:"):
            ticket = service.submit_survey(conn, ticket_id, GOOD if step == "survey:good" else LOW, actor="callcentre",
                                           at=at)
        else:
            ticket = service.apply_action(conn, ticket_id, step, actor="dispatcher", fields=FIELDS, at=at)
    return ticket


def test_the_table_reaches_every_state_and_every_open_state_can_end():
    targets = {t.target for t in workflow.TRANSITIONS}
    assert set(workflow.STATES) - {"created"} <= targets | {None, workflow.PREVIOUS}
    assert set(PATHS) == set(workflow.STATES)
    for state in workflow.OPEN_STATES:
        assert any(state in t.sources and t.target not in (None, workflow.PREVIOUS) for t in workflow.TRANSITIONS)
    for state in workflow.TERMINAL_STATES:
        assert not any(state in t.sources for t in workflow.TRANSITIONS)


@pytest.mark.parametrize("state, action", [p for p in workflow.legal_pairs()
                                           if not workflow.BY_ACTION[p[1]].own_endpoint])
def test_every_legal_transition(fleet, state, action):
    ticket_id = new_ticket(fleet)
    before = walk(fleet, ticket_id, PATHS[state])
    assert before["state"] == state
    after = service.apply_action(fleet, ticket_id, action, actor="someone", fields=FIELDS,
                                 at=datetime.now(UTC) + timedelta(minutes=1))
    transition = workflow.BY_ACTION[action]
    expected = {None: state, workflow.PREVIOUS: "accepted"}.get(transition.target, transition.target)
    assert after["state"] == expected
    last = after["history"][-1]
    assert (last["actor"], last["event"]) == ("someone", transition.event_name)
    assert last["detail"]["action"] == action and last["detail"]["from"] == state and last["detail"]["to"] == expected
    assert len(after["history"]) == len(before["history"]) + 1
    if expected in workflow.TERMINAL_STATES:
        assert after["ended_at"] is not None


@pytest.mark.parametrize("state", workflow.STATES)
def test_every_illegal_transition_is_refused_and_changes_nothing(fleet, state):
    ticket_id = new_ticket(fleet)
    before = walk(fleet, ticket_id, PATHS[state])
    legal = {action for s, action in workflow.legal_pairs() if s == state}
    illegal = [a for a in workflow.ACTIONS if a not in legal]
    assert illegal
    for action in illegal:
        with pytest.raises(workflow.TransitionError, match=f"cannot {action} a ticket in state '{state}'"):
            service.apply_action(fleet, ticket_id, action, actor="someone", fields=FIELDS)
    if state != "resolved":
        with pytest.raises(workflow.TransitionError, match="needs a resolved ticket"):
            service.submit_survey(fleet, ticket_id, GOOD, actor="callcentre")
    after = service.get_ticket(fleet, ticket_id)
    assert after["state"] == state and after["history"] == before["history"]


def test_own_endpoint_actions_and_missing_fields_are_refused(fleet):
    ticket_id = new_ticket(fleet)
    walk(fleet, ticket_id, PATHS["resolved"])
    with pytest.raises(workflow.UnknownAction):
        service.apply_action(fleet, ticket_id, "callback", actor="x")
    with pytest.raises(workflow.UnknownAction):
        service.apply_action(fleet, ticket_id, "teleport", actor="x")
    other = new_ticket(fleet, "CR-2")
    walk(fleet, other, ["accept"])
    with pytest.raises(workflow.MissingFields, match="dispatch needs engineer"):
        service.apply_action(fleet, other, "dispatch", actor="x", fields={"reason": "r"})


def test_reassign_returns_to_the_state_it_was_escalated_from(fleet):
    ticket_id = new_ticket(fleet)
    walk(fleet, ticket_id, PATHS["on_site"])
    escalated = service.apply_action(fleet, ticket_id, "escalate", actor="Eva", fields={"expert_group": "supplier"})
    assert (escalated["state"], escalated["expert_group"], escalated["escalated_from"]) == ("escalated", "supplier",
                                                                                            "on_site")
    back = service.apply_action(fleet, ticket_id, "reassign", actor="supplier", fields={"note": "replace valve"})
    assert (back["state"], back["expert_group"], back["escalated_from"]) == ("on_site", None, None)
    assert back["history"][-1]["detail"]["note"] == "replace valve"


def test_alarms_join_an_active_ticket_but_not_a_resolved_one(fleet):
    first, _ = service.create_ticket(fleet, service.NewTicket("EX-1", "overheat", "major", source_alarm_id=1))
    walk(fleet, first["id"], PATHS["en_route"])
    joined, created = service.create_ticket(fleet, service.NewTicket("EX-1", "pressure", "major", source_alarm_id=2))
    assert not created and joined["id"] == first["id"]
    walk(fleet, first["id"], ["arrive", "resolve"])
    again, created = service.create_ticket(fleet, service.NewTicket("EX-1", "overheat", "major", source_alarm_id=3))
    assert created and again["id"] != first["id"]
    assert service.count_open(fleet) == 2  # resolved (awaiting its callback) and the new one


# --- over HTTP --------------------------------------------------------------------------------------------------


@pytest.fixture
def api(settings, fleet):
    server = ApiServer(settings, settings.database_url)
    yield server.client()
    server.close()


def test_the_whole_loop_over_http_with_history(api):
    ticket = api.post("/tickets", json={"equipment_id": "EX-1", "title": "no hydraulic pressure"}).json()
    tid = ticket["id"]
    assert ticket["respond_by"] and ticket["resolve_by"] and ticket["arrive_by"] is None
    assert ticket["sla"]["respond"]["status"] == "running" and ticket["sla"]["arrive"]["status"] == "none"

    def act(action, **body):
        return api.post(f"/tickets/{tid}/actions/{action}", json={"actor": "anna", **body})

    conflict = act("arrive")
    assert conflict.status_code == 409
    assert conflict.json()["detail"] == ("cannot arrive a ticket in state 'created'; "
                                         "arrive is allowed from: en_route")
    assert act("teleport").status_code == 404
    assert api.post("/tickets/999999/actions/accept", json={"actor": "anna"}).status_code == 404
    assert api.post(f"/tickets/{tid}/actions/accept", json={}).status_code == 422  # no actor
    assert act("accept").json()["state"] == "accepted"
    assert act("start_remote_diagnosis").json()["state"] == "remote_diagnosis"
    missing = act("dispatch")
    assert missing.status_code == 422 and "engineer" in missing.json()["detail"]
    dispatched = act("dispatch", engineer="Eva").json()
    assert dispatched["engineer"] == "Eva" and dispatched["arrive_by"] is not None
    returned = api.post(f"/tickets/{tid}/actions/return", json={"actor": "Eva", "reason": "no crane licence"}).json()
    assert returned["state"] == "accepted" and returned["engineer"] is None
    promised = (datetime.now(UTC) + 5 * H).isoformat()
    assert act("dispatch", engineer="Bob", arrive_by=promised).json()["state"] == "dispatched"
    assert api.get("/tickets", params={"engineer": "Bob"}).json()["count"] == 1
    for action, actor in (("engineer_accept", "Bob"), ("arrive", "Bob")):
        assert api.post(f"/tickets/{tid}/actions/{action}", json={"actor": actor}).status_code == 200
    assert act("urge", reason="customer called twice").json()["state"] == "on_site"
    assert act("escalate", expert_group="supplier").json()["state"] == "escalated"
    assert act("reassign", note="valve batch 7 faulty").json()["state"] == "on_site"
    resolved = act("resolve", work_done="replaced relief valve", first_time_fix=False,
                   parts_used=[{"part": "relief valve", "quantity": 1}]).json()
    assert resolved["state"] == "resolved" and resolved["resolution"] == "on_site"
    assert resolved["first_time_fix"] is False and resolved["parts_used"] == [{"part": "relief valve", "quantity": 1}]
    closed = api.post(f"/tickets/{tid}/survey", json={"actor": "callcentre", **GOOD}).json()
    assert closed["state"] == "closed" and closed["ended_at"] is not None
    assert act("follow_up", reason="late note").status_code == 409

    history = api.get(f"/tickets/{tid}").json()["history"]
    assert [e["event"] for e in history] == [
        "created", "accepted", "remote_diagnosis_started", "dispatched", "returned", "dispatched",
        "engineer_accepted", "arrived", "urged", "escalated", "reassigned", "resolved", "callback_attempt", "closed"]
    assert history[4]["actor"] == "admin" and history[4]["detail"]["on_behalf_of"] == "Eva"
    assert history[4]["detail"]["reason"] == "no crane licence"
    assert history[5]["detail"]["arrive_by"] == datetime.fromisoformat(promised).isoformat()
    assert all(e["at"] for e in history)
    assert [e["at"] for e in history] == sorted(e["at"] for e in history)
    sla_now = api.get(f"/tickets/{tid}").json()["sla"]
    assert {timer: s["status"] for timer, s in sla_now.items()} == {"respond": "met", "arrive": "met",
                                                                   "resolve": "met"}


def test_survey_complaint_and_second_callback_over_http(api):
    tid = api.post("/tickets", json={"equipment_id": "CR-2", "title": "slewing brake"}).json()["id"]
    assert api.post(f"/tickets/{tid}/survey", json={"actor": "cc", **GOOD}).status_code == 409  # not resolved
    for action, body in (("accept", {}), ("start_remote_diagnosis", {}),
                         ("resolve_remote", {"work_done": "reset brake controller parameters"})):
        assert api.post(f"/tickets/{tid}/actions/{action}", json={"actor": "anna", **body}).status_code == 200
    assert api.post(f"/tickets/{tid}/survey", json={"actor": "cc", **GOOD, "timeliness": 6}).status_code == 422
    survey = api.post(f"/tickets/{tid}/survey", json={"actor": "cc", **LOW, "attitude": 1,
                                                      "comment": "waited for parts"})
    assert survey.status_code == 200
    ticket = survey.json()
    assert ticket["state"] == "complaint"
    complaint = ticket["history"][-1]
    assert complaint["event"] == "complaint_opened"
    assert complaint["detail"]["low"] == ["attitude", "parts_supply"]
    assert complaint["detail"]["responsible"] == ["parts logistics", "service management"]
    assert api.post(f"/tickets/{tid}/survey", json={"actor": "cc", **GOOD}).status_code == 409  # once
    assert complaint["detail"]["department"] == "service management"  # the lowest score: attitude
    assert api.post(f"/tickets/{tid}/actions/second_callback", json={"actor": "cc"}).status_code == 404
    complaint_id = complaint["detail"]["complaint_id"]
    answered = api.post(f"/complaints/{complaint_id}/answer",
                        json={"actor": "service manager", "answer": "spoke to the engineer; parts rule changed"})
    assert answered.status_code == 200 and answered.json()["state"] == "answered"
    check = api.get("/callbacks", params={"purpose": "complaint_check"}).json()["data"]
    assert [(c["ticket_id"], c["complaint_round"]) for c in check] == [(tid, 1)]
    done = api.post(f"/callbacks/{check[0]['id']}/attempts",
                    json={"agent": "cc", "outcome": "answered", "scores": GOOD | {"parts_supply": 4},
                          "note": "happy now"})
    assert done.status_code == 200 and done.json()["state"] == "done"
    closed = api.get(f"/tickets/{tid}").json()
    assert closed["state"] == "closed"
    assert [s["round"] for s in closed["surveys"]] == [1, 2]
    assert closed["surveys"][0]["parts_supply"] == 2 and closed["surveys"][1]["parts_supply"] == 4
    events = [e["event"] for e in closed["history"]]
    assert events[events.index("complaint_opened"):] == ["complaint_opened", "complaint_answered", "callback_attempt",
                                                         "complaint_satisfied", "second_callback"]


# --- SLA timers -------------------------------------------------------------------------------------------------


def events(conn, ticket_id: int) -> list[tuple[str, str]]:
    return [(e["event"], e["detail"]["timer"]) for e in service.get_ticket(conn, ticket_id)["history"]
            if e["event"].startswith("sla_")]


def test_sla_warning_then_breach_exactly_once_each_on_a_controlled_clock(fleet):
    tid = new_ticket(fleet, created_at=T0)
    ticket = service.get_ticket(fleet, tid)
    assert (ticket["respond_by"], ticket["resolve_by"]) == (T0 + 4 * H, T0 + 24 * H)
    assert sla.run_sla_round(fleet, T0 + 2 * H) == 0
    assert sla.run_sla_round(fleet, T0 + 3 * H) == 1  # 75% of the 4 h response time
    assert events(fleet, tid) == [("sla_warning", "respond")]
    assert sla.run_sla_round(fleet, T0 + 3.5 * H) == 0
    assert sla.run_sla_round(fleet, T0 + 4 * H) == 1
    assert sla.run_sla_round(fleet, T0 + 4.5 * H) == 0
    assert events(fleet, tid) == [("sla_warning", "respond"), ("sla_breach", "respond")]
    breach = service.get_ticket(fleet, tid)["history"][-1]
    assert (breach["actor"], breach["at"], breach["detail"]["due"]) == ("sla", T0 + 4 * H, (T0 + 4 * H).isoformat())
    status = service.get_ticket(fleet, tid)["sla"]["respond"]
    assert (status["status"], status["warned_at"], status["breached_at"]) == ("breached", T0 + 3 * H, T0 + 4 * H)

    service.apply_action(fleet, tid, "accept", actor="anna", at=T0 + 5 * H)
    ticket = service.apply_action(fleet, tid, "dispatch", actor="anna", fields={"engineer": "Eva"}, at=T0 + 6 * H)
    assert ticket["arrive_by"] == T0 + 8 * H  # no distance-based promise: respond_by + 4 h
    assert sla.run_sla_round(fleet, T0 + 7.4 * H) == 0
    assert sla.run_sla_round(fleet, T0 + 7.5 * H) == 1  # 75% of the 2 h between dispatch and arrive_by
    service.apply_action(fleet, tid, "engineer_accept", actor="Eva", at=T0 + 7.6 * H)
    service.apply_action(fleet, tid, "arrive", actor="Eva", at=T0 + 7.9 * H)
    assert sla.run_sla_round(fleet, T0 + 8 * H) == 0  # arrived in time: no arrival breach
    assert sla.run_sla_round(fleet, T0 + 18 * H) == 1  # resolve warning at 75% of 24 h
    service.apply_action(fleet, tid, "resolve", actor="Eva", fields={"work_done": "new pump", "first_time_fix": True},
                         at=T0 + 20 * H)
    # A restarted scheduler (a new worker, later) finds nothing left to say.
    assert sla.run_sla_round(fleet, T0 + 30 * H) == 0
    assert events(fleet, tid) == [("sla_warning", "respond"), ("sla_breach", "respond"), ("sla_warning", "arrive"),
                                  ("sla_warning", "resolve")]
    timers = service.get_ticket(fleet, tid)["sla"]
    assert {t: s["status"] for t, s in timers.items()} == {"respond": "breached", "arrive": "met", "resolve": "met"}
    assert timers["resolve"]["warned_at"] == T0 + 18 * H and timers["resolve"]["breached_at"] is None


def test_sla_contract_late_stop_and_terminal_tickets(fleet):
    sla.set_contract(fleet, "nordbau", respond_h=1, arrive_h=2, resolve_h=8)
    tid = new_ticket(fleet, "CR-2", created_at=T0)
    ticket = service.get_ticket(fleet, tid)
    assert (ticket["respond_by"], ticket["resolve_by"]) == (T0 + H, T0 + 8 * H)
    # The scheduler was down while the response was late: it still records the breach, once, no warning.
    service.apply_action(fleet, tid, "accept", actor="anna", at=T0 + 2 * H)
    assert sla.run_sla_round(fleet, T0 + 2.5 * H) == 1
    assert events(fleet, tid) == [("sla_breach", "respond")]
    ticket = service.apply_action(fleet, tid, "dispatch", actor="anna", at=T0 + 3 * H,
                                  fields={"engineer": "Eva", "arrive_by": T0 + 5 * H})
    assert ticket["arrive_by"] == T0 + 5 * H  # dispatch's own promise wins
    # A cancelled ticket's timers stop: nothing more, however late it gets.
    service.apply_action(fleet, tid, "cancel", actor="anna", fields={"reason": "sold the crane"}, at=T0 + 3.1 * H)
    assert sla.run_sla_round(fleet, T0 + 20 * H) == 0
    assert events(fleet, tid) == [("sla_breach", "respond")]
    other = new_ticket(fleet, "EX-1", created_at=T0)  # acme: no contract, the defaults
    assert service.get_ticket(fleet, other)["resolve_by"] == T0 + 24 * H


def test_sla_worker_round_uses_the_database_clock_and_survives_a_restart(fleet, database_url):
    tid = new_ticket(fleet, created_at=datetime.now(UTC) - 19 * H)
    fleet.commit()
    worker = sla.SlaWorker(database_url, check_every_s=3600)
    assert worker.process_round(fleet) == 2  # response breached, resolution past 75% of its 24 h
    fleet.commit()
    assert worker.process_round(fleet) == 0  # not due again for an hour
    assert sla.SlaWorker(database_url).process_round(fleet) == 0  # a new worker: the state is in the database
    assert events(fleet, tid) == [("sla_breach", "respond"), ("sla_warning", "resolve")]


# --- KPIs -------------------------------------------------------------------------------------------------------


def insert_ticket(conn, equipment_id: str, created: float, state: str, *, respond_h: float = 4,
                  resolve_h: float = 24, **hours: float | str | bool | None) -> int:
    """A ticket with a fixed history: ``hours`` are offsets from T0 for the *_at / arrive_by columns."""
    columns = {"equipment_id": equipment_id, "title": "t", "priority": "major", "state": state, "created_by": "test",
               "created_at": T0 + created * H, "respond_by": T0 + (created + respond_h) * H,
               "resolve_by": T0 + (created + resolve_h) * H}
    for name, value in hours.items():
        columns[name] = T0 + value * H if isinstance(value, int | float) and not isinstance(value, bool) else value
    names = ", ".join(columns)
    return conn.execute(f"INSERT INTO tickets ({names}) VALUES ({', '.join(['%s'] * len(columns))}) RETURNING id",
                        list(columns.values())).fetchone()[0]


def survey(conn, ticket_id: int, scores: dict[str, int]) -> None:
    conn.execute("INSERT INTO ticket_surveys (ticket_id, round, product_quality, overall_service, timeliness, "
                 "attitude, engineer_skill, parts_supply, actor, at) VALUES (%s, 1, %s, %s, %s, %s, %s, %s, 'cc', %s)",
                 (ticket_id, *(scores[i] for i in service.SURVEY_INDICATORS), T0 + 30 * H))


@pytest.fixture
def history(fleet):
    """Six tickets created on the first day, one older; the expected figures are worked out by hand."""
    conn = fleet
    a = insert_ticket(conn, "EX-1", 0, "closed", responded_at=1, resolved_at=3, ended_at=30, resolution="remote")
    b = insert_ticket(conn, "EX-1", 1, "closed", responded_at=3, dispatched_at=3, arrive_by=9, arrived_at=8,
                      resolved_at=11, ended_at=30, resolution="on_site", first_time_fix=True, engineer="Eva")
    c = insert_ticket(conn, "CR-2", 2, "complaint", responded_at=7, dispatched_at=7, arrive_by=10, arrived_at=12,
                      resolved_at=28, resolution="on_site", first_time_fix=False, engineer="Bob")
    insert_ticket(conn, "EX-1", 4, "created")                                    # never answered
    insert_ticket(conn, "EX-1", 5, "rejected", responded_at=5.5, ended_at=5.5)
    insert_ticket(conn, "EX-1", 6, "remote_diagnosis", responded_at=6.5)         # resolve_by T0+30h
    insert_ticket(conn, "EX-1", -48, "accepted", responded_at=-47)               # before the window
    survey(conn, a, dict.fromkeys(service.SURVEY_INDICATORS, 5))
    survey(conn, b, dict.fromkeys(service.SURVEY_INDICATORS, 4))
    survey(conn, c, dict.fromkeys(service.SURVEY_INDICATORS, 3) | {"timeliness": 2})
    for timer, kind, due in (("respond", "breach", 6), ("resolve", "breach", 26), ("resolve", "warning", 20)):
        conn.execute("INSERT INTO ticket_sla_alerts (ticket_id, timer, kind, due, at) VALUES (%s, %s, %s, %s, %s)",
                     (c, timer, kind, T0 + due * H, T0 + due * H))
    conn.commit()
    return conn


def test_kpis_on_a_known_history(history):
    k = compute_kpis(history, T0, T0 + 24 * H, now=T0 + 29 * H)
    assert (k["tickets"], k["resolved"], k["resolved_remotely"], k["resolved_on_site"], k["closed"]) == (6, 3, 1, 2, 2)
    assert k["remote_resolution_rate"] == pytest.approx(1 / 3)
    assert k["first_time_fix_rate"] == pytest.approx(0.5)
    # respond: a, b, e, f in time; c (5 h) and the unanswered one late.
    assert k["sla"]["respond"] | {} == {"decided": 6, "met": 4, "compliance": pytest.approx(4 / 6),
                                        "warnings": 0, "breaches": 1}
    assert k["sla"]["arrive"] == {"decided": 2, "met": 1, "compliance": 0.5, "warnings": 0, "breaches": 0}
    # resolve: a and b in time, c late, the unanswered one past its deadline; f not yet due, e rejected.
    assert k["sla"]["resolve"] == {"decided": 4, "met": 2, "compliance": 0.5, "warnings": 1, "breaches": 1}
    # time to respond [0.5, 0.5, 1, 2, 5] h; to resolve [3, 10, 26] h (p90 interpolated like percentile_cont).
    assert k["time_to_respond_h"] == {"count": 5, "mean": pytest.approx(1.8), "p90": pytest.approx(3.8)}
    assert k["time_to_resolve_h"] == {"count": 3, "mean": pytest.approx(13.0), "p90": pytest.approx(22.8)}
    assert {s: n for s, n in k["backlog"].items() if n} == {"created": 1, "accepted": 1, "remote_diagnosis": 1,
                                                           "complaint": 1}
    assert k["backlog_total"] == 4
    assert k["survey"]["count"] == 3 and k["survey"]["complaints"] == 1
    assert k["survey"]["means"]["product_quality"] == pytest.approx(4.0)
    assert k["survey"]["means"]["timeliness"] == pytest.approx(11 / 3)

    nordbau = compute_kpis(history, T0, T0 + 24 * H, customer="nordbau", now=T0 + 29 * H)
    assert (nordbau["tickets"], nordbau["first_time_fix_rate"], nordbau["backlog_total"]) == (1, 0.0, 1)
    assert nordbau["sla"]["respond"]["compliance"] == 0.0 and nordbau["survey"]["means"]["timeliness"] == 2.0
    eva = compute_kpis(history, T0, T0 + 24 * H, engineer="Eva", now=T0 + 29 * H)
    assert (eva["tickets"], eva["first_time_fix_rate"], eva["sla"]["arrive"]["compliance"]) == (1, 1.0, 1.0)
    eva_station = compute_kpis(history, T0, T0 + 24 * H, station="ST-R", now=T0 + 29 * H)
    assert {k: v for k, v in eva_station.items() if k != "station"} == {k: v for k, v in eva.items()
                                                                         if k not in ("engineer", "station")} | {
        "engineer": None}
    empty = compute_kpis(history, T0 - 10 * 24 * H, T0 - 9 * 24 * H, now=T0)
    assert empty["tickets"] == 0 and empty["remote_resolution_rate"] is None
    assert empty["time_to_resolve_h"]["mean"] is None


def test_kpis_over_http(api, history):
    k = api.get("/kpis", params={"start": T0.isoformat(), "end": (T0 + 24 * H).isoformat()})
    assert k.status_code == 200
    body = k.json()
    assert (body["tickets"], body["first_time_fix_rate"], body["backlog_total"]) == (6, 0.5, 4)
    assert body["survey"]["means"]["product_quality"] == 4.0
    assert api.get("/kpis", params={"start": T0.isoformat(), "end": T0.isoformat()}).status_code == 422
    assert api.get("/kpis", params={"start": T0.isoformat(), "end": (T0 + H).isoformat(),
                                    "customer": "nordbau"}).json()["tickets"] == 0
