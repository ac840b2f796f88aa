"""The front desk over HTTP on the real database: customers as records with contacts and contract
tiers, the caller on screen from any spelling of a number, calls recorded, and requests of every
kind and channel with deadlines from the contract."""

from __future__ import annotations

from datetime import datetime

import pytest

from core.customers import InvalidPhone, normalise_phone
from core.register import EquipmentRecord, register_equipment
from tests.helpers import ApiServer, seed_tenant

ALPHA, BETA = "alpha-bau", "beta-crane"


@pytest.fixture
def desk(settings, conn):
    alpha = seed_tenant(conn, ALPHA, "ALPHA-1")
    seed_tenant(conn, BETA, "BETA-1")
    server = ApiServer(settings, settings.database_url)
    yield server, alpha
    server.close()


def test_numbers_are_stored_in_e164_from_any_common_spelling():
    for spelling in ("+31 20 123 4567", "0031-20-1234567", "020 123 4567", "(020) 1234567", "+31201234567"):
        assert normalise_phone(spelling, "NL") == "+31201234567", spelling
    assert normalise_phone("138 0013 8000", "CN") == "+8613800138000"
    with pytest.raises(InvalidPhone):
        normalise_phone("call me", "NL")
    with pytest.raises(InvalidPhone):
        normalise_phone("12", "NL")


def test_labels_became_records_and_a_new_machine_brings_its_customer(desk, conn):
    server, _ = desk
    admin = server.client()
    listed = admin.get("/customers").json()
    assert {c["id"] for c in listed["data"]} >= {ALPHA, BETA}
    register_equipment(conn, [EquipmentRecord("GAMMA-1", "SN-G1", "EX210", "excavator", "gamma-lift")])
    gamma = admin.get("/customers/gamma-lift").json()
    assert gamma["name"] == "gamma-lift" and gamma["tier"] is None
    changed = admin.patch("/customers/gamma-lift", json={"name": "Gamma Lift GmbH", "contract_number": "C-7"})
    assert changed.status_code == 200 and changed.json()["name"] == "Gamma Lift GmbH"
    assert admin.delete("/customers/gamma-lift").status_code == 409  # it still has a machine
    assert admin.post("/customers", json={"id": ALPHA}).status_code == 409
    assert admin.post("/customers", json={"id": "delta", "tier": "no-such-tier"}).status_code == 422


def test_a_customer_reads_its_own_record_and_contacts_only(desk):
    server, _ = desk
    admin = server.client()
    assert admin.post(f"/customers/{ALPHA}/contacts", json={"name": "Ada", "phones": ["020 123 4567"]}
                      ).status_code == 201
    alpha = server.user("customer", customer=ALPHA)
    assert alpha.get(f"/customers/{ALPHA}").status_code == 200
    assert [c["phones"] for c in alpha.get(f"/customers/{ALPHA}/contacts").json()] == [["+31201234567"]]
    assert alpha.get(f"/customers/{BETA}").status_code == 404
    assert alpha.get(f"/customers/{BETA}/contacts").status_code == 404
    assert alpha.post(f"/customers/{ALPHA}/contacts", json={"name": "Eve"}).status_code == 403


def test_the_caller_is_on_screen_with_the_machines_live_state_alarms_orders_and_contract(desk):
    server, alpha = desk
    admin = server.client()
    tier = admin.put("/contract-tiers/gold", json={
        "respond_h": 1, "arrive_h": 2, "resolve_h": 8, "remote_diagnosis_min": 20,
        "limits": {"complaint": {"respond_h": 24, "resolve_h": 168}}})
    assert tier.status_code == 200 and tier.json()["limits"]["complaint"]["resolve_h"] == 168
    assert admin.patch(f"/customers/{ALPHA}", json={"name": "Alpha Bau AG", "tier": "gold"}).status_code == 200
    ada = admin.post(f"/customers/{ALPHA}/contacts", json={
        "name": "Ada Lovelace", "role": "site manager", "phones": ["+31 6 1234 5678", "020-555 0101"],
        "preferred_channel": "sms", "language": "zh"}).json()
    admin.post(f"/customers/{BETA}/contacts", json={"name": "Bob", "phones": ["+49 30 5550101"]})
    assert admin.post(f"/customers/{ALPHA}/contacts", json={"name": "X", "phones": ["not a number"]}
                      ).status_code == 422

    screen = admin.get("/calls/lookup", params={"phone": "0031 6 12345678"}).json()
    assert screen["phone_e164"] == "+31612345678"
    assert screen["matches"][0] == {"contact_id": ada["id"], "customer_id": ALPHA, "phone": "+31612345678",
                                    "exact": True, "matched_digits": 11}
    assert screen["customer"]["name"] == "Alpha Bau AG" and screen["contact"]["name"] == "Ada Lovelace"
    assert screen["contract"] == {"tier": "gold", "respond_h": 1, "arrive_h": 2, "resolve_h": 8,
                                  "remote_diagnosis_min": 20}
    machine = screen["machines"][0]
    assert machine["id"] == alpha.equipment_id and screen["machines_count"] == 1
    assert machine["engine_hours"] is not None and machine["lat"] is not None and machine["oil_temp_c"] is not None
    assert [a["fault_code"] for a in machine["alarms"]] == ["OIL_OVERHEAT"]
    assert alpha.open_ticket_id in {o["id"] for o in machine["open_orders"]}
    assert all(o["resolve_by"] for o in machine["open_orders"])

    # A national number without its trunk prefix is still her whole number; its last digits find her too.
    national = admin.get("/calls/lookup", params={"phone": "612345678"}).json()
    assert national["matches"][0]["contact_id"] == ada["id"] and national["matches"][0]["exact"] is True
    partial = admin.get("/calls/lookup", params={"phone": "12345678"}).json()
    assert partial["matches"][0]["contact_id"] == ada["id"] and partial["matches"][0]["exact"] is False
    assert admin.get("/calls/lookup", params={"phone": "5550101"}).json()["matches"][0]["customer_id"] in (ALPHA, BETA)
    unknown = admin.get("/calls/lookup", params={"phone": "+44 20 7946 0000"}).json()
    assert unknown["matches"] == [] and unknown["customer"] is None
    assert server.user("customer", customer=ALPHA).get("/calls/lookup", params={"phone": "x"}).status_code == 403


def test_calls_are_recorded_by_agents_and_by_the_telephony_system(desk):
    server, alpha = desk
    admin = server.client()
    ada = admin.post(f"/customers/{ALPHA}/contacts", json={"name": "Ada", "phones": ["+31612345678"]}).json()
    dispatcher = server.user("dispatcher")
    rang = dispatcher.post("/calls/incoming", json={"phone": "06 1234 5678", "line": "service-hotline"})
    assert rang.status_code == 201
    call = rang.json()["call"]
    assert (call["source"], call["customer_id"], call["contact_id"]) == ("cti", ALPHA, ada["id"])
    assert rang.json()["caller"]["machines"][0]["id"] == alpha.equipment_id
    done = dispatcher.patch(f"/calls/{call['id']}", json={
        "equipment_id": alpha.equipment_id, "outcome": "solved_on_phone", "notes": "reset the cooler fan",
        "ended": True})
    assert done.status_code == 200 and done.json()["ended_at"] is not None
    assert done.json()["outcome"] == "solved_on_phone"
    taken = dispatcher.post("/calls", json={"phone": "+31612345678", "outcome": "question_answered"}).json()
    assert taken["customer_id"] == ALPHA and taken["agent"].startswith("dispatcher-")
    listed = dispatcher.get("/calls", params={"customer": ALPHA}).json()
    assert listed["count"] == 2 and listed["data"][0]["id"] == taken["id"]
    assert dispatcher.patch("/calls/999999", json={"notes": "x"}).status_code == 404
    assert dispatcher.post("/calls", json={"phone": "1", "equipment_id": "NOPE"}).status_code == 422
    screen = dispatcher.get("/calls/lookup", params={"phone": "+31612345678"}).json()
    assert [c["id"] for c in screen["recent_calls"]] == [taken["id"], call["id"]]


def test_requests_of_every_kind_and_channel_follow_the_contract_per_kind(desk, conn):
    server, alpha = desk
    admin = server.client()
    admin.put("/contract-tiers/silver", json={"respond_h": 4, "arrive_h": 4, "resolve_h": 24,
                                              "limits": {"complaint": {"respond_h": 24, "resolve_h": 168}}})
    admin.patch(f"/customers/{ALPHA}", json={"tier": "silver"})
    ada = admin.post(f"/customers/{ALPHA}/contacts", json={"name": "Ada"}).json()
    customer = server.user("customer", customer=ALPHA)

    complaint = customer.post("/tickets/requests", json={
        "equipment_id": alpha.equipment_id, "kind": "complaint", "title": "the engineer came late",
        "contact_id": ada["id"]})
    assert complaint.status_code == 201
    body = complaint.json()
    assert (body["kind"], body["channel"], body["contact_id"]) == ("complaint", "portal", ada["id"])
    hours = (datetime.fromisoformat(body["resolve_by"]) - datetime.fromisoformat(body["created_at"])).total_seconds()
    assert hours == 168 * 3600, (body["created_at"], body["resolve_by"], body["respond_by"])
    fault = customer.post("/tickets/requests", json={"equipment_id": alpha.equipment_id, "title": "it smokes"}).json()
    assert (datetime.fromisoformat(fault["resolve_by"]) - datetime.fromisoformat(fault["created_at"])
            ).total_seconds() == 24 * 3600
    assert customer.post("/tickets/requests", json={"equipment_id": "BETA-1", "title": "x"}).status_code == 404
    bob = admin.post(f"/customers/{BETA}/contacts", json={"name": "Bob"}).json()
    assert customer.post("/tickets/requests", json={"equipment_id": alpha.equipment_id, "title": "x",
                                                     "contact_id": bob["id"]}).status_code == 422

    by_phone = admin.post("/tickets", json={"equipment_id": alpha.equipment_id, "title": "how to grease the boom",
                                            "kind": "consultation", "channel": "phone", "priority": "minor"})
    assert by_phone.status_code == 201 and by_phone.json()["kind"] == "consultation"
    alarm_ticket = conn.execute("SELECT channel FROM tickets WHERE source_alarm_id IS NOT NULL").fetchall()
    assert all(row[0] == "alarm" for row in alarm_ticket)
    # Only requests that need someone on site wait for a van.
    for ticket_id in (complaint.json()["id"], fault["id"]):
        accepted = admin.post(f"/tickets/{ticket_id}/actions/accept", json={"actor": "anna"})
        assert accepted.status_code == 200, accepted.text
    waiting = {p["ticket_id"] for p in admin.get("/dispatch/proposals").json()["proposals"]} | set(
        admin.get("/dispatch/proposals").json()["unassigned"])
    assert fault["id"] in waiting and complaint.json()["id"] not in waiting
