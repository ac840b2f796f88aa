"""After the repair, on the real database: the callback scheduled with the resolution and worked
through the queue (attempts, rescheduling, unreachable, the contact who answered), its SLA warning
and breach on a controlled clock, complaints sent to a department with a week's deadline, answered,
checked, sent back with their history and escalated to management, and expert groups consulted."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from core import customers
from core.register import EquipmentRecord, register_equipment
from tests.helpers import ApiServer
from tickets import aftercare, callbacks, complaints, service, sla

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
H = timedelta(hours=1)
GOOD = dict.fromkeys(service.SURVEY_INDICATORS, 5)
LOW_TIMELINESS = GOOD | {"timeliness": 1, "parts_supply": 2}


@pytest.fixture
def fleet(conn):
    register_equipment(conn, [EquipmentRecord("EX-1", "S-1", "EX210", "excavator", "acme", "rotterdam")])
    sla.put_tier(conn, "gold", description="", respond_h=2, arrive_h=4, resolve_h=12, remote_diagnosis_min=30,
                 limits={}, callback_h=24)
    conn.execute("UPDATE customers SET tier = 'gold' WHERE id = 'acme'")
    conn.commit()
    return conn


def contact(conn, name: str = "Ada", phone: str = "+31201234567") -> int:
    return customers.save_contact(conn, "acme", None, {"name": name, "phones": [phone]}, region="NL")["id"]


def resolved_ticket(conn, at: datetime = T0, contact_id: int | None = None) -> int:
    ticket, _ = service.create_ticket(conn, service.NewTicket("EX-1", "no pressure", "major", created_at=at,
                                                              contact_id=contact_id))
    for action, fields in (("accept", {}), ("start_remote_diagnosis", {}),
                           ("resolve_remote", {"work_done": "reset the pump controller"})):
        service.apply_action(conn, ticket["id"], action, actor="anna", fields=fields, at=at + H)
    return ticket["id"]


def the_callback(conn, ticket_id: int, purpose: str = "survey") -> dict:
    row = conn.execute("SELECT id FROM callbacks WHERE ticket_id = %s AND purpose = %s ORDER BY id DESC LIMIT 1",
                       (ticket_id, purpose)).fetchone()
    return callbacks.get_callback(conn, row[0])


def test_a_resolution_puts_a_callback_in_the_queue_due_within_the_contract(fleet):
    ada = contact(fleet)
    tid = resolved_ticket(fleet, contact_id=ada)
    callback = the_callback(fleet, tid)
    assert (callback["state"], callback["assigned_to"], callback["contact_id"]) == ("open", "call centre", ada)
    assert callback["due_at"] == T0 + H + 24 * H  # gold: called back within 24 h of the resolution
    assert callback["contact_name"] == "Ada" and callback["contact_phone"] == "+31201234567"
    resolved = [e for e in service.get_ticket(fleet, tid)["history"] if e["event"] == "resolved"][0]
    assert resolved["detail"]["callback_id"] == callback["id"]

    rows, count = callbacks.list_callbacks(fleet, now=T0 + 30 * H, due="overdue")
    assert count == 1 and rows[0]["overdue"]
    assert callbacks.list_callbacks(fleet, now=T0 + 2 * H, due="overdue")[1] == 0
    plan = callbacks.month_plan(fleet, T0.date(), now=T0 + 2 * H)
    assert plan["totals"]["planned"] == 1 and plan["days"][0]["day"] == (T0 + 25 * H).date()
    assert callbacks.month_plan(fleet, (T0 + 40 * 24 * H).date(), now=T0)["totals"]["planned"] == 0


def test_nobody_answers_it_is_rescheduled_then_the_customer_is_unreachable(fleet):
    tid = resolved_ticket(fleet)
    callback_id = the_callback(fleet, tid)["id"]
    for attempt in range(1, callbacks.MAX_ATTEMPTS):
        at = T0 + (2 + attempt) * H
        after = aftercare.record_callback(fleet, callback_id, agent="li", outcome="no_answer", at=at)
        assert (after["state"], after["attempts"], after["next_attempt_at"]) == ("open", attempt,
                                                                                 at + callbacks.RETRY_AFTER)
        assert after["assigned_to"] == "li"
    last = aftercare.record_callback(fleet, callback_id, agent="li", outcome="busy", at=T0 + 20 * H)
    assert last["state"] == "unreachable" and [a["outcome"] for a in last["attempt_log"]][-1] == "busy"
    ticket = service.get_ticket(fleet, tid)
    assert ticket["state"] == "closed" and ticket["history"][-1]["event"] == "closed_unreachable"
    with pytest.raises(callbacks.CallbackClosed):
        aftercare.record_callback(fleet, callback_id, agent="li", outcome="answered", scores=GOOD)


def test_the_survey_records_who_answered_and_refuses_a_stranger(fleet):
    ada, bob = contact(fleet), contact(fleet, "Bob", "+31201234568")
    register_equipment(fleet, [EquipmentRecord("OT-1", "S-9", "EX210", "excavator", "other", "rotterdam")])
    stranger = customers.save_contact(fleet, "other", None, {"name": "Eve"}, region="NL")["id"]
    tid = resolved_ticket(fleet, contact_id=ada)
    callback_id = the_callback(fleet, tid)["id"]
    with pytest.raises(service.UnknownContact):
        aftercare.record_callback(fleet, callback_id, agent="li", outcome="answered", contact_id=stranger,
                                  scores=GOOD)
    with pytest.raises(service.workflow.MissingFields):
        aftercare.record_callback(fleet, callback_id, agent="li", outcome="answered", contact_id=bob)
    done = aftercare.record_callback(fleet, callback_id, agent="li", outcome="answered", contact_id=bob,
                                     scores=GOOD, note="all good", at=T0 + 3 * H)
    assert (done["state"], done["answered_by_contact"], done["done_by"]) == ("done", bob, "li")
    assert service.get_ticket(fleet, tid)["state"] == "closed"


def test_callback_warning_and_breach_once_each(fleet):
    tid = resolved_ticket(fleet)
    due = the_callback(fleet, tid)["due_at"]
    assert sla.run_sla_round(fleet, T0 + 10 * H) == 0
    assert sla.run_sla_round(fleet, T0 + H + 18 * H) == 1  # 75 % of the 24 h
    assert sla.run_sla_round(fleet, T0 + H + 19 * H) == 0
    assert sla.run_sla_round(fleet, due) == 1
    assert sla.run_sla_round(fleet, due + H) == 0
    callback = the_callback(fleet, tid)
    assert (callback["warned_at"], callback["breached_at"]) == (T0 + 19 * H, due)
    timers = [(e["event"], e["detail"]["timer"]) for e in service.get_ticket(fleet, tid)["history"]
              if e["event"].startswith("sla_")]
    assert ("sla_warning", "callback") in timers and ("sla_breach", "callback") in timers


def test_a_complaint_goes_round_until_management_closes_it(fleet):
    tid = resolved_ticket(fleet)
    survey_callback = the_callback(fleet, tid)["id"]
    aftercare.record_callback(fleet, survey_callback, agent="li", outcome="answered", scores=LOW_TIMELINESS,
                              note="the engineer came a day late", at=T0 + 2 * H)
    ticket = service.get_ticket(fleet, tid)
    assert ticket["state"] == "complaint"
    opened = ticket["history"][-1]
    assert opened["event"] == "complaint_opened" and opened["detail"]["department"] == "dispatch"
    complaint_id = opened["detail"]["complaint_id"]
    complaint = complaints.get_complaint(fleet, complaint_id)
    assert complaint["indicators"] == ["timeliness", "parts_supply"]
    assert (complaint["state"], complaint["round"], complaint["answer_due"]) == ("with_department", 1,
                                                                                T0 + 2 * H + 7 * 24 * H)

    # The department is warned at 75 % of its week and breached after it, once for the round.
    assert sla.run_sla_round(fleet, T0 + 2 * H + 127 * H) == 1
    assert sla.run_sla_round(fleet, T0 + 2 * H + 7 * 24 * H) == 1
    assert sla.run_sla_round(fleet, T0 + 2 * H + 8 * 24 * H) == 0
    late = T0 + 9 * 24 * H
    aftercare.answer_complaint(fleet, complaint_id, answer="route planning changed", actor="dispatch lead", at=late)
    with pytest.raises(complaints.ComplaintStateError):
        aftercare.answer_complaint(fleet, complaint_id, answer="again", actor="dispatch lead", at=late)
    check = the_callback(fleet, tid, "complaint_check")
    assert (check["complaint_round"], check["due_at"]) == (1, late + 24 * H)

    # Still unhappy: back to a department, with a new week, the first round kept.
    after = aftercare.record_callback(fleet, check["id"], agent="li", outcome="answered", satisfied=False,
                                      department="service management", note="still late twice since",
                                      at=late + H)
    assert after["state"] == "done"
    complaint = complaints.get_complaint(fleet, complaint_id)
    assert (complaint["state"], complaint["round"], complaint["department"]) == ("with_department", 2,
                                                                                 "service management")
    first = complaint["rounds"][0]
    assert (first["department"], first["answer"], first["satisfied"], first["breached_at"] is not None) == (
        "dispatch", "route planning changed", False, True)
    assert complaint["answer_due"] == late + H + 7 * 24 * H
    for round_ in (2, 3):
        at = late + round_ * 24 * H
        aftercare.answer_complaint(fleet, complaint_id, answer=f"answer {round_}", actor="manager", at=at)
        check = the_callback(fleet, tid, "complaint_check")
        assert check["complaint_round"] == round_
        aftercare.record_callback(fleet, check["id"], agent="li", outcome="answered",
                                  scores=GOOD | {"attitude": 2}, at=at + H)
    complaint = complaints.get_complaint(fleet, complaint_id)
    assert complaint["state"] == "escalated" and len(complaint["rounds"]) == complaints.MAX_ROUNDS
    assert service.get_ticket(fleet, tid)["state"] == "complaint"
    with pytest.raises(complaints.ComplaintStateError):
        aftercare.answer_complaint(fleet, complaint_id, answer="x", actor="manager")
    closed = aftercare.close_complaint(fleet, complaint_id, note="goodwill discount on the next service",
                                      actor="director")
    assert closed["state"] == "closed" and closed["closing_note"].startswith("goodwill")
    ticket = service.get_ticket(fleet, tid)
    assert ticket["state"] == "closed"
    assert [s["round"] for s in ticket["surveys"]] == [1, 2, 3]  # the survey, then two scored checks
    events = [e["event"] for e in ticket["history"]]
    assert events.count("complaint_sent_back") == 2 and events.count("complaint_answered") == 3
    assert events[-3:] == ["complaint_escalated", "complaint_closed", "closed_by_management"]


def test_an_unreachable_check_goes_to_management(fleet):
    tid = resolved_ticket(fleet)
    aftercare.record_callback(fleet, the_callback(fleet, tid)["id"], agent="li", outcome="answered",
                              scores=LOW_TIMELINESS, at=T0 + 2 * H)
    complaint_id = service.get_ticket(fleet, tid)["complaints"][0]["id"]
    aftercare.answer_complaint(fleet, complaint_id, answer="sorry", actor="dispatch lead", at=T0 + 3 * H)
    check_id = the_callback(fleet, tid, "complaint_check")["id"]
    for i in range(callbacks.MAX_ATTEMPTS):
        aftercare.record_callback(fleet, check_id, agent="li", outcome="no_answer", at=T0 + (4 + i) * H)
    assert complaints.get_complaint(fleet, complaint_id)["state"] == "escalated"


@pytest.fixture
def api(settings, fleet):
    server = ApiServer(settings, settings.database_url)
    yield server
    server.close()


def test_complaints_raised_directly_and_expert_groups_over_http(api, fleet):
    staff = api.client()
    new = staff.post("/tickets", json={"equipment_id": "EX-1", "title": "the engineer was rude", "kind": "complaint"})
    tid = new.json()["id"]
    assert staff.post("/complaints", json={"ticket_id": tid, "department": "nowhere", "actor": "anna"}
                      ).status_code == 422
    raised = staff.post("/complaints", json={"ticket_id": tid, "department": "service management", "actor": "anna",
                                             "description": "rude on the phone"})
    assert raised.status_code == 201 and raised.json()["state"] == "with_department"
    assert staff.get(f"/tickets/{tid}").json()["state"] == "complaint"
    assert staff.post("/complaints", json={"ticket_id": tid, "department": "dispatch", "actor": "anna"}
                      ).status_code == 409  # one open complaint per ticket
    listed = staff.get("/complaints", params={"open": True}).json()
    assert listed["count"] == 1 and listed["data"][0]["id"] == raised.json()["id"]
    assert staff.post(f"/complaints/{raised.json()['id']}/close", json={"note": "x", "actor": "y"}).status_code == 409

    # A complaint beside work in progress leaves the order where it is.
    busy = staff.post("/tickets", json={"equipment_id": "EX-1", "title": "leak"}).json()["id"]
    for action in ("accept", "start_remote_diagnosis"):
        staff.post(f"/tickets/{busy}/actions/{action}", json={"actor": "anna"})
    beside = staff.post("/complaints", json={"ticket_id": busy, "department": "dispatch", "actor": "anna"})
    assert beside.status_code == 201 and staff.get(f"/tickets/{busy}").json()["state"] == "remote_diagnosis"

    # Expert groups: named, with members; escalation names one and records the consultation.
    put = staff.put("/service-groups/hydraulics lab", json={
        "kind": "expert", "skills": ["hydraulics"], "members": [
            {"member": "wang", "name": "Wang Fang", "email": "wang@example.com", "language": "zh"}]})
    assert put.status_code == 200 and put.json()["members"][0]["language"] == "zh"
    assert staff.get("/service-groups", params={"kind": "expert"}).status_code == 200
    assert staff.post(f"/tickets/{busy}/actions/escalate", json={"actor": "anna", "expert_group": "no such"}
                      ).status_code == 422
    assert staff.post(f"/tickets/{busy}/actions/escalate", json={"actor": "anna", "expert_group": "dispatch"}
                      ).status_code == 422  # a department, not an expert group
    escalated = staff.post(f"/tickets/{busy}/actions/escalate",
                           json={"actor": "anna", "expert_group": "hydraulics lab", "reason": "pressure drops cold"})
    assert escalated.status_code == 200
    back = staff.post(f"/tickets/{busy}/actions/reassign",
                      json={"actor": "wang", "outcome": "valve batch 7: replace the relief valve"}).json()
    consultation = back["consultations"][0]
    assert (consultation["group_name"], consultation["question"], consultation["outcome"]) == (
        "hydraulics lab", "pressure drops cold", "valve batch 7: replace the relief valve")
    assert staff.delete("/service-groups/hydraulics lab").status_code == 409  # the consultation names it
    customer = api.user("customer", customer="acme")
    assert customer.get("/complaints").json()["count"] == 2
    assert customer.get("/callbacks").status_code == 403


def test_everyone_involved_is_told_in_the_transaction_of_the_event(fleet):
    """The outbox rows come with the step that causes them, to the people the step concerns, and a
    step that fails writes none."""
    ada = customers.save_contact(fleet, "acme", None, {"name": "Ada", "email": "ada@acme.example",
                                                       "preferred_channel": "email", "language": "zh"},
                                 region="NL")["id"]
    groups = [("call centre", "li", "li@ironsight.example"), ("dispatch", "dora", "dora@ironsight.example"),
              ("management", "max", "max@ironsight.example"), ("R&D", "rui", "rui@ironsight.example")]
    for group, member, email in groups:
        fleet.execute("INSERT INTO service_group_members (group_name, member, name, email) VALUES (%s, %s, %s, %s) "
                      "ON CONFLICT DO NOTHING", (group, member, member.title(), email))
    fleet.commit()
    try:
        ticket, _ = service.create_ticket(fleet, service.NewTicket("EX-1", "no pressure", "major", created_at=T0,
                                                                   contact_id=ada))
        tid = ticket["id"]
        with pytest.raises(service.workflow.TransitionError):
            service.apply_action(fleet, tid, "arrive", actor="anna", at=T0 + H)
        service.apply_action(fleet, tid, "accept", actor="anna", at=T0 + H)
        service.apply_action(fleet, tid, "escalate", actor="anna", at=T0 + H,
                             fields={"expert_group": "R&D", "reason": "pressure drops when cold"})
        service.apply_action(fleet, tid, "reassign", actor="rui", at=T0 + H, fields={"outcome": "reset the valve"})
        service.apply_action(fleet, tid, "start_remote_diagnosis", actor="anna", at=T0 + H)
        service.apply_action(fleet, tid, "resolve_remote", actor="anna", at=T0 + H, fields={"work_done": "reset"})
        sla.run_sla_round(fleet, T0 + 20 * H)
        aftercare.record_callback(fleet, the_callback(fleet, tid)["id"], agent="li", outcome="answered",
                                  contact_id=ada, scores=LOW_TIMELINESS, at=T0 + 21 * H)
        complaint_id = service.get_ticket(fleet, tid)["complaints"][0]["id"]
        sla.run_sla_round(fleet, T0 + 21 * H + 130 * H)
        rows = fleet.execute("SELECT event, recipient, channel, address, language, subject FROM notifications "
                             "WHERE ticket_id = %s ORDER BY id", (tid,)).fetchall()
    finally:
        fleet.execute("DELETE FROM service_group_members WHERE member = ANY(%s)", ([m for _, m, _ in groups],))
        fleet.commit()
    told = [(event, recipient) for event, recipient, *_ in rows]
    assert told == [
        ("work_order_opened", f"contact:{ada}"),
        ("expert_consultation", "member:R&D/rui"),
        ("work_order_resolved", f"contact:{ada}"),
        ("callback_due", "member:call centre/li"),
        ("complaint_assigned", "member:dispatch/dora"),
        ("complaint_deadline_near", "member:dispatch/dora"),
    ], told
    opened = rows[0]
    assert (opened[2], opened[3], opened[4]) == ("email", "ada@acme.example", "zh")
    assert opened[5] == f"工单 #{tid} 已创建：no pressure"
    assert complaints.get_complaint(fleet, complaint_id)["rounds"][0]["warned_at"] is not None
