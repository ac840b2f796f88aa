"""The alarm lifecycle over a real database and the real API: acknowledgement, comments, assignee and
history; flapping folded into one alarm (also under concurrency); shelving; escalation to a real
webhook (a local HTTP server that fails first) with a controllable clock."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import psycopg
import pytest

from alarms.lifecycle import clear_alarm, raise_or_reopen, unshelve_expired
from alarms.policy import AlarmPolicy
from alarms.worker import AlarmsWorker
from core.register import EquipmentRecord, register_equipment
from ironsight.processes import free_tcp_port
from tests.helpers import ApiServer, at_once_in_transactions, wait_for

T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)
MIN = timedelta(minutes=1)


def kinds(conn: psycopg.Connection, alarm_id: int) -> list[str]:
    return [k for (k,) in conn.execute("SELECT kind FROM alarm_events WHERE alarm_id = %s ORDER BY id", (alarm_id,))]


def new_alarm(conn: psycopg.Connection, equipment_id: str = "EX-1", fault_code: str = "OIL_OVERHEAT",
              severity: str = "critical", *, created_ago: timedelta = timedelta(0)) -> int:
    """An active alarm as the worker raises it, created ``created_ago`` before the database's now()."""
    with conn.transaction():
        alarm_id = raise_or_reopen(conn, equipment_id, fault_code, severity, T0, 1).alarm_id
        conn.execute("UPDATE alarms SET created_at = now() - %s WHERE id = %s", (created_ago, alarm_id))
    return alarm_id


@pytest.fixture
def fleet(conn: psycopg.Connection) -> None:
    register_equipment(conn, [EquipmentRecord("EX-1", "S-1", "EX210", "excavator", "acme"),
                              EquipmentRecord("CR-2", "S-2", "TC500", "crane", "nordbau")])
    conn.commit()


@pytest.fixture
def api(settings, fleet) -> Iterator[httpx.Client]:
    server = ApiServer(settings, settings.database_url)
    yield server.client()
    server.close()


# ---- 1. acknowledgement, comments, assignee, history ---------------------------------------------

def test_acknowledge_comment_assign_and_history(api, conn):
    alarm_id = new_alarm(conn)
    listed = api.get("/alarms").json()["data"][0]
    assert listed["acknowledged_at"] is None and listed["state"] == "active" and listed["assignee"] is None

    # The signed-in account (the admin) acts; the name in the body is whom it acted for.
    acked = api.post(f"/alarms/{alarm_id}/ack", json={"actor": "  Dispatcher Anna ", "note": "calling the site"})
    assert acked.status_code == 200
    body = acked.json()
    assert body["acknowledged_by"] == "admin" and body["acknowledged_at"] is not None
    assert body["state"] == "active"  # acknowledged and active are independent
    # Acknowledging again is idempotent: 200, and the first acknowledgement stands.
    again = api.post(f"/alarms/{alarm_id}/ack", json={"actor": "bob"})
    assert again.status_code == 200
    assert again.json()["acknowledged_by"] == "admin"
    assert again.json()["acknowledged_at"] == body["acknowledged_at"]

    comment = api.post(f"/alarms/{alarm_id}/comments", json={"on_behalf_of": "anna", "text": "customer reports smoke"})
    assert comment.status_code == 201
    assert comment.json()["kind"] == "commented" and comment.json()["actor"] == "admin"
    assert comment.json()["detail"] == {"text": "customer reports smoke", "on_behalf_of": "anna"}

    assigned = api.put(f"/alarms/{alarm_id}/assignee", json={"actor": "anna", "assignee": "engineer.karl"})
    assert assigned.status_code == 200 and assigned.json()["assignee"] == "engineer.karl"
    same = api.put(f"/alarms/{alarm_id}/assignee", json={"actor": "anna", "assignee": "engineer.karl"})
    assert same.status_code == 200
    assert api.put(f"/alarms/{alarm_id}/assignee", json={"actor": "anna", "assignee": None}).json()["assignee"] is None

    with conn.transaction():
        clear_alarm(conn, "EX-1", "OIL_OVERHEAT", T0 + MIN)
    detail = api.get(f"/alarms/{alarm_id}").json()
    assert detail["state"] == "cleared" and detail["acknowledged_by"] == "admin"
    history = detail["history"]
    # One 'assigned' for the change and one for the removal; the repeated assignment recorded nothing.
    assert [e["kind"] for e in history] == ["raised", "acknowledged", "commented", "assigned", "assigned", "cleared"]
    assert history[1]["actor"] == "admin"
    assert history[1]["detail"] == {"note": "calling the site", "on_behalf_of": "Dispatcher Anna"}
    assert history[3]["detail"] == {"assignee": "engineer.karl", "previous": None, "on_behalf_of": "anna"}
    assert history[0]["actor"] == "system" and history[-1]["at"].startswith((T0 + MIN).strftime("%Y-%m-%dT%H:%M"))

    assert api.get("/alarms", params={"acknowledged": "true"}).json()["count"] == 1
    assert api.get("/alarms", params={"acknowledged": "false"}).json()["count"] == 0


def test_actions_on_unknown_alarms_and_invalid_bodies_are_clear_errors(api, conn):
    alarm_id = new_alarm(conn)
    for method, path, body in (("GET", "/alarms/999", None), ("POST", "/alarms/999/ack", {"actor": "anna"}),
                               ("POST", "/alarms/999/comments", {"actor": "anna", "text": "x"}),
                               ("PUT", "/alarms/999/assignee", {"actor": "anna", "assignee": "karl"}),
                               ("POST", "/alarms/999/shelve", {"actor": "anna", "minutes": 5}),
                               ("POST", "/alarms/999/unshelve", {"actor": "anna"})):
        response = api.request(method, path, json=body)
        assert response.status_code == 404, path
        assert response.json() == {"detail": "no alarm 999", "status": 404}
    for bad in ({"actor": ""}, {"actor": "   "}, {"actor": "x" * 101}, {"actor": "<script>"}, {"actor": 5},
                {"on_behalf_of": "<script>"}, {"actor": "anna", "on_behalf_of": "bob"}):
        response = api.post(f"/alarms/{alarm_id}/ack", json=bad)
        assert response.status_code == 422, bad
        assert "detail" in response.json()
    assert api.post(f"/alarms/{alarm_id}/comments", json={"actor": "anna", "text": ""}).status_code == 422
    assert api.get("/alarms/not-a-number").status_code == 422
    # Nothing of that reached the alarm.
    assert kinds(conn, alarm_id) == ["raised"]


def test_alarm_actions_record_the_signed_in_account_not_the_name_in_the_body(settings, fleet, conn):
    """An engineer acknowledging "as admin" is recorded as the engineer, with "admin" kept beside as the
    person it says it acted for; an empty body acts for oneself."""
    server = ApiServer(settings, settings.database_url)
    try:
        engineer = server.user("engineer", username="eve.engineer")
        alarm_id = new_alarm(conn)
        acked = engineer.post(f"/alarms/{alarm_id}/ack", json={"actor": "admin"})
        assert acked.status_code == 200 and acked.json()["acknowledged_by"] == "eve.engineer"
        assert engineer.post(f"/alarms/{alarm_id}/comments", json={"text": "on it"}).status_code == 201
        assert engineer.post(f"/alarms/{alarm_id}/shelve", json={"minutes": 5, "on_behalf_of": "eve.engineer"}) \
            .json()["shelved_by"] == "eve.engineer"
        assert engineer.post(f"/alarms/{alarm_id}/unshelve", json={}).status_code == 200
        history = engineer.get(f"/alarms/{alarm_id}").json()["history"]
        acted = [(e["kind"], e["actor"], e["detail"].get("on_behalf_of")) for e in history[1:]]
        assert acted == [("acknowledged", "eve.engineer", "admin"), ("commented", "eve.engineer", None),
                         ("shelved", "eve.engineer", None), ("unshelved", "eve.engineer", None)]
        stored = conn.execute("SELECT DISTINCT actor FROM alarm_events WHERE alarm_id = %s AND kind <> 'raised'",
                              (alarm_id,)).fetchall()
        conn.commit()
        assert stored == [("eve.engineer",)]
    finally:
        server.close()


# ---- 2. flapping ---------------------------------------------------------------------------------

def test_a_fault_that_raises_and_clears_repeatedly_is_one_alarm_with_a_count(conn, fleet):
    policy = {"flap_window_s": 600.0, "flap_threshold": 2}
    first = raise_or_reopen(conn, "EX-1", "OIL_OVERHEAT", "major", T0, 1, **policy)
    assert first.outcome == "raised"
    at = T0
    outcomes = []
    for _ in range(3):  # cleared for a minute, back again: three times within ten minutes
        clear_alarm(conn, "EX-1", "OIL_OVERHEAT", at + MIN)
        at += 2 * MIN
        outcomes.append(raise_or_reopen(conn, "EX-1", "OIL_OVERHEAT", "major", at, 1, **policy))
    assert {r.alarm_id for r in outcomes} == {first.alarm_id}
    assert [r.outcome for r in outcomes] == ["reopened"] * 3
    assert [r.flapping for r in outcomes] == [False, False, True]  # more than 2 reopenings in the window
    row = conn.execute("SELECT count(*), max(occurrences), max(flap_count), bool_and(flapping), "
                       "bool_and(state = 'active' AND cleared_at IS NULL) FROM alarms").fetchone()
    assert row == (1, 4, 3, True, True)
    assert kinds(conn, first.alarm_id) == ["raised", "cleared", "reopened", "cleared", "reopened", "cleared",
                                           "reopened", "flapping"]

    # Raised again while active: counted, not reopened.
    assert raise_or_reopen(conn, "EX-1", "OIL_OVERHEAT", "major", at + MIN, 1, **policy).outcome == "occurrence"
    # Cleared for longer than the window: a new incident, a new alarm (the old one stays cleared).
    clear_alarm(conn, "EX-1", "OIL_OVERHEAT", at + 2 * MIN)
    later = raise_or_reopen(conn, "EX-1", "OIL_OVERHEAT", "major", at + 13 * MIN, 1, **policy)
    assert later.outcome == "raised" and later.alarm_id != first.alarm_id
    assert conn.execute("SELECT count(*) FILTER (WHERE state = 'active'), count(*) FROM alarms").fetchone() == (1, 2)
    # Another fault code or machine never reopens this alarm.
    assert raise_or_reopen(conn, "CR-2", "OIL_OVERHEAT", "major", at + 14 * MIN, 1).outcome == "raised"


def test_flapping_stops_being_flagged_when_the_reopenings_spread_out(conn, fleet):
    alarm_id = raise_or_reopen(conn, "EX-1", "LOW_PRESSURE", "minor", T0, 1).alarm_id
    at = T0
    for gap in (2, 2, 2, 9):  # the last one comes back 9 minutes later: only it is in its window
        clear_alarm(conn, "EX-1", "LOW_PRESSURE", at + MIN)
        at += gap * MIN
        result = raise_or_reopen(conn, "EX-1", "LOW_PRESSURE", "minor", at, 1, flap_window_s=600, flap_threshold=2)
    assert result.alarm_id == alarm_id and result.outcome == "reopened" and not result.flapping
    assert conn.execute("SELECT flapping, flap_count FROM alarms").fetchone() == (False, 4)


def test_concurrent_raises_of_a_cleared_alarm_reopen_it_once(database_url, conn, fleet):
    """Eight workers raise a fault whose alarm just cleared: one reopens it, the others count on it."""
    alarm_id = raise_or_reopen(conn, "EX-1", "OIL_OVERHEAT", "major", T0, 1).alarm_id
    clear_alarm(conn, "EX-1", "OIL_OVERHEAT", T0 + MIN)
    conn.commit()
    workers = 8
    results = at_once_in_transactions(
        database_url, workers, lambda own: raise_or_reopen(own, "EX-1", "OIL_OVERHEAT", "major", T0 + 2 * MIN, 1))
    assert len(results) == workers
    assert conn.execute("SELECT id, occurrences FROM alarms WHERE state = 'active'").fetchall() == [
        (alarm_id, 1 + workers)]
    assert sorted(r.outcome for r in results) == ["occurrence"] * (workers - 1) + ["reopened"]


def test_a_reopening_that_loses_the_race_to_a_new_alarm_counts_on_it(database_url, conn, fleet):
    """Worker A makes a new active alarm (its raise is outside the flap window) while worker B reopens
    the cleared one: the unique index stops B, which rolls back to its savepoint and counts on A's."""
    old_id = raise_or_reopen(conn, "EX-1", "OIL_OVERHEAT", "major", T0, 1).alarm_id
    clear_alarm(conn, "EX-1", "OIL_OVERHEAT", T0 + MIN)
    conn.commit()
    with psycopg.connect(database_url) as a, psycopg.connect(database_url) as b:
        a_result = raise_or_reopen(a, "EX-1", "OIL_OVERHEAT", "major", T0 + 30 * MIN, 2)  # not committed yet
        assert a_result.outcome == "raised"
        b_results = []
        thread = threading.Thread(target=lambda: b_results.append(
            raise_or_reopen(b, "EX-1", "OIL_OVERHEAT", "major", T0 + 2 * MIN, 3)))
        thread.start()
        thread.join(timeout=1.0)
        assert thread.is_alive()  # B waits on A's row in the unique index
        a.commit()
        thread.join(timeout=10)
        b.commit()
    assert b_results[0].alarm_id == a_result.alarm_id and b_results[0].outcome == "occurrence"
    assert conn.execute("SELECT id, state, occurrences FROM alarms ORDER BY id").fetchall() == [
        (old_id, "cleared", 1), (a_result.alarm_id, "active", 2)]


def add_fault_event(conn: psycopg.Connection, kind: str, at: datetime, fault_code: str = "OIL_OVERHEAT") -> None:
    """What diagnostics writes: a fault episode opens (raised) or ends (cleared), with its event."""
    if kind == "raised":
        conn.execute("INSERT INTO faults (equipment_id, fault_code, severity, rule, rule_version, started_at, "
                     "evidence, title) VALUES ('EX-1', %s, 'critical', 'oil', 1, %s, '{}', 'Oil overheating')",
                     (fault_code, at))
    else:
        conn.execute("UPDATE faults SET ended_at = %s WHERE fault_code = %s AND ended_at IS NULL", (at, fault_code))
    conn.execute("INSERT INTO fault_events (fault_id, kind, at) SELECT max(id), %s, %s FROM faults "
                 "WHERE fault_code = %s", (kind, at, fault_code))
    conn.commit()


def consume_fault_events(worker: AlarmsWorker, conn: psycopg.Connection) -> None:
    """Let the worker take every fault event. A write transaction running elsewhere on the server (other
    databases count too) holds the outbox back until it ends, so wait rather than expect one round."""
    last = conn.execute("SELECT max(id) FROM fault_events").fetchone()[0]
    conn.commit()

    def consumed() -> bool:
        worker.process_fault_events(conn)
        conn.commit()
        done = worker.position()
        return bool(done) and done[1] >= last

    wait_for(consumed, timeout_s=60, what="the alarms worker to take the fault events")


def test_the_worker_folds_a_flapping_fault_into_one_alarm_and_one_ticket(settings, conn, fleet):
    api = ApiServer(settings, settings.database_url)
    try:
        worker = AlarmsWorker(settings.database_url, api.url, policy=AlarmPolicy(), api_key=api.service_key)
        at = T0
        for _ in range(4):
            add_fault_event(conn, "raised", at)
            consume_fault_events(worker, conn)
            worker.open_pending_tickets(conn)
            add_fault_event(conn, "cleared", at + MIN)
            consume_fault_events(worker, conn)
            at += 3 * MIN
        alarms = api.client().get("/alarms").json()
        assert alarms["count"] == 1
        alarm = alarms["data"][0]
        assert (alarm["occurrences"], alarm["flap_count"], alarm["flapping"], alarm["state"]) == (4, 3, True, "cleared")
        tickets = api.client().get("/tickets").json()
        assert tickets["count"] == 1 and tickets["data"][0]["source_alarm_id"] == alarm["id"]
        history = [e["kind"] for e in api.client().get(f"/alarms/{alarm['id']}").json()["history"]]
        assert history.count("ticket_opened") == 1 and history.count("reopened") == 3
    finally:
        api.close()


# ---- 3. shelving ---------------------------------------------------------------------------------

def test_shelving_hides_an_alarm_until_the_period_ends(api, conn):
    shelved_id = new_alarm(conn, "EX-1")
    other_id = new_alarm(conn, "CR-2")
    too_long = api.post(f"/alarms/{shelved_id}/shelve", json={"actor": "anna", "minutes": 24 * 60 + 1})
    assert too_long.status_code == 422 and too_long.json() == {"detail": "an alarm is shelved for at most 1440 minutes",
                                                          "status": 422}
    assert api.post(f"/alarms/{shelved_id}/shelve", json={"actor": "anna", "minutes": 0}).status_code == 422

    response = api.post(f"/alarms/{shelved_id}/shelve", json={"actor": "anna", "minutes": 30, "reason": "known leak"})
    assert response.status_code == 200
    until = datetime.fromisoformat(response.json()["shelved_until"])
    assert timedelta(minutes=29) < until - datetime.now(UTC) <= timedelta(minutes=30)
    assert [a["id"] for a in api.get("/alarms", params={"state": "active"}).json()["data"]] == [other_id]
    assert api.get("/alarms", params={"include_shelved": "true"}).json()["count"] == 2

    # The period ends (the worker's round with the clock 31 minutes on): unshelved by the system.
    assert unshelve_expired(conn, now=datetime.now(UTC) + timedelta(minutes=10)) == 0
    assert unshelve_expired(conn, now=datetime.now(UTC) + timedelta(minutes=31)) == 1
    assert api.get("/alarms", params={"state": "active"}).json()["count"] == 2
    history = api.get(f"/alarms/{shelved_id}").json()["history"]
    assert [(e["kind"], e["actor"]) for e in history][1:] == [("shelved", "admin"), ("unshelved", "system")]
    assert history[1]["detail"]["on_behalf_of"] == "anna"
    assert history[1]["detail"]["reason"] == "known leak"

    # Unshelved early by hand; unshelving an alarm that is not shelved is harmless.
    api.post(f"/alarms/{other_id}/shelve", json={"actor": "anna", "minutes": 5})
    assert api.post(f"/alarms/{other_id}/unshelve", json={"actor": "bob"}).json()["shelved_until"] is None
    assert api.post(f"/alarms/{other_id}/unshelve", json={"actor": "bob"}).status_code == 200
    assert kinds(conn, other_id) == ["raised", "shelved", "unshelved"]


# ---- 4. escalation -------------------------------------------------------------------------------

class Webhook:
    """A real HTTP endpoint on a free local port that answers 500 to the first ``fail_first`` requests."""

    def __init__(self, fail_first: int) -> None:
        self.requests: list[tuple[dict[str, str], dict]] = []
        self.fail_first = fail_first
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                hook.requests.append((dict(self.headers), body))
                self.send_response(500 if len(hook.requests) <= hook.fail_first else 204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/escalations"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    hook = Webhook(fail_first=2)
    yield hook
    hook.close()


def db_now(conn: psycopg.Connection) -> datetime:
    return conn.execute("SELECT now()").fetchone()[0]


def escalations(conn: psycopg.Connection) -> list[tuple]:
    return conn.execute("SELECT alarm_id, level, status, attempts FROM alarm_escalations "
                        "ORDER BY alarm_id, level").fetchall()


def test_an_unacknowledged_critical_alarm_escalates_once_per_level_retrying_the_webhook(database_url, conn, fleet,
                                                                                      webhook):
    policy = AlarmPolicy(escalation_after_min=15, escalation_max_level=2, escalation_webhook_url=webhook.url)
    alarm_id = new_alarm(conn, "EX-1", "OIL_OVERHEAT", "critical")
    now = db_now(conn)
    conn.commit()
    worker = AlarmsWorker(database_url, f"http://127.0.0.1:{free_tcp_port()}", policy=policy)

    # 14 minutes on: nothing yet.
    assert worker.process_timers(conn, now=now + 14 * MIN) == 0
    assert escalations(conn) == [] and webhook.requests == []

    # 16 minutes: level 1 is recorded and sent; the webhook fails (500) and the delivery backs off.
    t = now + 16 * MIN
    assert worker.process_timers(conn, now=t) == 1  # the recorded escalation; nothing delivered
    assert escalations(conn) == [(alarm_id, 1, "pending", 1)]
    assert len(webhook.requests) == 1
    # Same instant again: not due for a retry, and not escalated a second time.
    assert worker.process_timers(conn, now=t) == 0 and len(webhook.requests) == 1

    # A restarted worker (state in the database) retries after the backoff: 500 again, then 2xx.
    restarted = AlarmsWorker(database_url, f"http://127.0.0.1:{free_tcp_port()}", policy=policy)
    assert restarted.process_timers(conn, now=t + timedelta(seconds=1)) == 0
    assert escalations(conn) == [(alarm_id, 1, "pending", 2)]
    assert restarted.process_timers(conn, now=t + timedelta(seconds=2)) == 0  # backoff is now 2 s
    assert restarted.process_timers(conn, now=t + timedelta(seconds=3)) == 1
    assert escalations(conn) == [(alarm_id, 1, "sent", 3)]
    assert len(webhook.requests) == 3
    headers, body = webhook.requests[-1]
    assert {h["Idempotency-Key"] for h, _ in webhook.requests} == {f"alarm-{alarm_id}-escalation-1"}
    assert body["alarm_id"] == alarm_id and body["level"] == 1 and body["severity"] == "critical"
    assert body["equipment_id"] == "EX-1" and body["fault_code"] == "OIL_OVERHEAT"

    # Later rounds send nothing more for level 1; level 2 comes after twice the time, once.
    assert restarted.process_timers(conn, now=t + 5 * MIN) == 0
    assert restarted.process_timers(conn, now=now + 31 * MIN) == 2  # recorded and delivered at once
    assert restarted.process_timers(conn, now=now + 120 * MIN) == 0  # no level 3
    assert escalations(conn) == [(alarm_id, 1, "sent", 3), (alarm_id, 2, "sent", 1)]
    assert [b["level"] for _, b in webhook.requests] == [1, 1, 1, 2]
    history = conn.execute("SELECT kind, detail ->> 'level' FROM alarm_events WHERE alarm_id = %s "
                           "AND kind LIKE 'escalat%%' ORDER BY id", (alarm_id,)).fetchall()
    assert history == [("escalated", "1"), ("escalation_sent", "1"), ("escalated", "2"), ("escalation_sent", "2")]
    assert conn.execute("SELECT escalation_level FROM alarms WHERE id = %s", (alarm_id,)).fetchone()[0] == 2


def test_acknowledged_shelved_cleared_and_less_serious_alarms_do_not_escalate(database_url, conn, fleet, webhook):
    from alarms.lifecycle import acknowledge, shelve

    policy = AlarmPolicy(escalation_after_min=15, escalation_max_level=1, escalation_webhook_url=webhook.url)
    acked = new_alarm(conn, "EX-1", "OIL_OVERHEAT")
    acknowledge(conn, acked, "anna")
    shelved = new_alarm(conn, "EX-1", "LOW_PRESSURE")
    shelve(conn, shelved, "anna", 60)
    cleared = new_alarm(conn, "EX-1", "COOLANT_HOT")
    with conn.transaction():
        clear_alarm(conn, "EX-1", "COOLANT_HOT", T0 + MIN)
    new_alarm(conn, "CR-2", "OIL_OVERHEAT", "major")
    escalating = new_alarm(conn, "CR-2", "HYDRAULIC_LEAK", "critical")
    now = db_now(conn)
    conn.commit()
    worker = AlarmsWorker(database_url, "http://127.0.0.1:9", policy=policy)
    webhook.fail_first = 0
    assert worker.process_timers(conn, now=now + 20 * MIN) == 2  # recorded + delivered, one alarm
    assert [a for a, *_ in escalations(conn)] == [escalating]
    # The shelving ends (70 minutes on): the still unacknowledged critical alarm escalates now.
    assert worker.process_timers(conn, now=now + 70 * MIN) == 3  # unshelved + recorded + delivered
    assert [a for a, *_ in escalations(conn)] == [shelved, escalating]
    assert kinds(conn, shelved)[-3:] == ["unshelved", "escalated", "escalation_sent"]
    assert cleared not in [a for a, *_ in escalations(conn)] and acked not in [a for a, *_ in escalations(conn)]


def test_without_a_webhook_escalation_is_recorded_but_not_sent(database_url, conn, fleet, webhook):
    alarm_id = new_alarm(conn, created_ago=timedelta(minutes=20))
    conn.commit()
    worker = AlarmsWorker(database_url, "http://127.0.0.1:9", policy=AlarmPolicy(escalation_webhook_url=None))
    assert worker.process_timers(conn) == 1  # against the database's own clock
    assert escalations(conn) == [(alarm_id, 1, "unsent", 0)]
    assert worker.process_timers(conn) == 0
    assert kinds(conn, alarm_id) == ["raised", "escalated"]
    detail = conn.execute("SELECT detail FROM alarm_events WHERE kind = 'escalated'").fetchone()[0]
    assert detail["level"] == 1 and detail["notify"].startswith("none") and detail["unacknowledged_s"] >= 1200
    assert webhook.requests == []


def test_the_default_policy_comes_from_the_settings():
    class Configured:
        escalation_webhook_url = "http://hooks.example/escalate"
        escalation_after_min = 5.0
        alarm_flap_window_s = 120.0

    policy = AlarmPolicy.from_settings(Configured())
    assert (policy.escalation_webhook_url, policy.escalation_after_min, policy.flap_window_s) == (
        "http://hooks.example/escalate", 5.0, 120.0)
    assert policy.flap_threshold == 2 and policy.escalation_max_level == 2
    assert AlarmPolicy.from_settings(object()) == AlarmPolicy()
