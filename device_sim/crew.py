"""A simulated service organisation working the tickets through the real API and broker.

The people act through ``/api/v1`` exactly as a control centre's users would, and the vans report
their positions over MQTT like the controllers do, each van's tracker on a connection of its own
with the credential the dispatcher issued it through the API (``POST /vehicles/{id}/tracker-credential``),
which lets it publish that van's position and nothing else:

- the dispatcher accepts new tickets, tries remote diagnosis where the diagnosis says it may work
  (it does most of the time), and confirms the joint dispatch proposals for the rest;
- each engineer accepts a dispatch, drives the route the plan gave (via the warehouse when the part
  must be collected) at road speed, repairs on site once tracking has recorded the arrival, resolves
  with the part used, and drives home;
- a machine fixed remotely or on site is healthy again in the simulated fleet (told over a
  simulation-only topic), so its alarms clear;
- the call centre calls every customer back (a few give a low score, opening a complaint that ends
  in a second callback);
- given simulated customers (device_sim.customers), the call centre answers their calls: the
  telephony system posts each ringing number (``POST /calls/incoming``), the agent reads the caller
  on screen, and completes the call (``PATCH /calls/{id}``) when it ends: a question answered from
  the machine's state, a fault walked through on the phone when the diagnosis says it can be fixed
  remotely, else a work order opened (``POST /tickets``, channel phone) or the open one's state told;
  questions and complaints raised through the portal are answered remotely, and a fault reported
  for a machine whose work order is already in hand is rejected as its duplicate.

Human delays are drawn from ranges of minutes and divided by ``speed``; vans drive ``speed`` times
road speed (run the tracking worker with the same factor on its travel model so ETAs match).

Everyone signs in as themselves: with an administrator's login the crew creates (once) an account
per person — the dispatcher and the call centre as dispatchers, each engineer as an engineer — and
acts with an API key of each, revoked when it stops; the work orders' history names them. The
crew's own MQTT session (``mqtt_url``'s account) only tells the simulated fleet which machines were
repaired.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx

from core import mqtt
from core.geo import distance_km, step_towards
from core.positions import Position, encode_position, position_topic
from device_sim.customers import Ring, SimulatedCustomers
from device_sim.simulated_fleet import repaired_topic

log = logging.getLogger(__name__)

SURVEY_INDICATORS = ("product_quality", "overall_service", "timeliness", "attitude", "engineer_skill", "parts_supply")
DISPATCHER = "dispatcher.sim"
CALL_CENTRE = "callcentre.sim"
MANAGER = "management.sim"  # closes complaints sent back too often (an administrator's call)
KEY_NAME = "simulated service crew"

# Minutes, before dividing by the speed factor.
ACCEPT_MIN = (0.5, 2.0)
REMOTE_DIAGNOSIS_MIN = (3.0, 8.0)
ENGINEER_ACCEPT_MIN = (0.3, 1.0)
REPAIR_MIN = (20.0, 50.0)
CALLBACK_MIN = (2.0, 6.0)
DEPARTMENT_ANSWER_MIN = (5.0, 15.0)
MANAGEMENT_MIN = (5.0, 10.0)
CALL_MIN = (1.0, 4.0)
ANSWER_MIN = (5.0, 20.0)
PICKUP_MIN = 15.0  # IRONSIGHT_DISPATCH_PICKUP_MIN's default: the stop the ETAs count on

REMOTE_SUCCESS = 0.75
FIRST_TIME_FIX = 0.93
LOW_SCORE_SHARE = 0.1
NO_ANSWER_SHARE = 0.2      # a callback that reaches nobody is tried again later
SATISFIED_SHARE = 0.7      # a customer called back after a department's answer is satisfied
# What each department answers a complaint with.
DEPARTMENT_ANSWERS = {
    "quality / R&D": "the failure was analysed; the part's supplier changed its process",
    "service management": "the engineer was spoken to; the customer gets a goodwill check-up",
    "dispatch": "dispatch now plans this site from the nearer station",
    "service engineering": "the engineer is booked on the model's training",
    "parts logistics": "the part is now stocked at the nearer warehouse",
}

# What the telephony system names the number customers call.
HOTLINE = "service-hotline"
# Requests of these kinds are answered by the control centre; faults and maintenance need the machine.
ANSWERED_KINDS = {"consultation": "answered the customer's question",
                  "suggestion": "suggestion passed on to the product team; customer thanked"}
# Where a fault's work order can still be fixed on the phone, the steps that take it to resolved.
PHONE_FIX_STEPS = {"created": ("accept", "accepted"), "accepted": ("start_remote_diagnosis", "remote_diagnosis"),
                   "remote_diagnosis": ("resolve_remote", "resolved")}


@dataclass
class Call:
    """A call the call centre is on: what the telephony system recorded and put on screen."""

    id: int
    ring: Ring
    screen: dict[str, Any]
    ends_at: float


@dataclass
class Van:
    vehicle_id: str
    engineer_id: str
    lat: float
    lon: float
    home: tuple[float, float]
    ticket_id: int | None = None
    waypoints: list[tuple[str, float, float]] = field(default_factory=list)  # (kind, lat, lon)
    paused_until: float = 0.0
    last_report: float = 0.0


class ServiceCrew:
    def __init__(self, api_url: str, mqtt_url: str, *, topic_root: str, username: str, password: str,
                 speed: float = 1.0, seed: int = 1, road_speed_kmh: float = 60.0, road_factor: float = 1.3,
                 report_every_s: float = 5.0, round_every_s: float = 2.0,
                 customers: SimulatedCustomers | None = None, no_answer_share: float = NO_ANSWER_SHARE) -> None:
        self.base_url = api_url.rstrip("/") + "/api/v1"
        self.api = httpx.Client(base_url=self.base_url, timeout=10)  # the dispatcher's, once signed in
        self.admin_login = (username, password)
        self.people: dict[str, httpx.Client] = {}
        self.keys: list[int] = []
        self.broker = mqtt.parse_mqtt_url(mqtt_url)
        self.topic_root = topic_root
        self.speed = speed
        self.rng = random.Random(seed)
        # Straight-line progress: the road is longer than the crow flies by the road factor.
        self.crow_kmh = road_speed_kmh * speed / road_factor
        self.report_every_s = report_every_s
        self.round_every_s = round_every_s
        self.due: dict[tuple[str, int], float] = {}      # (step, ticket) → when the person gets to it
        self.needs_visit: set[int] = set()
        self.vans: dict[str, Van] = {}
        self.trackers: dict[str, mqtt.Session] = {}  # vehicle id → its tracker's own connection
        self.tracker_credentials: dict[str, tuple[str, str]] = {}  # vehicle id → (username, password)
        self._session: mqtt.Session | None = None
        self.customers = customers
        self.calls: list[Call] = []
        self.no_answer_share = no_answer_share

    # --- plumbing -------------------------------------------------------------------------------

    def _later(self, minutes: tuple[float, float]) -> float:
        return time.monotonic() + self.rng.uniform(*minutes) * 60 / self.speed

    def _ready(self, step: str, ticket_id: int, minutes: tuple[float, float]) -> bool:
        """True once the person's delay for this step of this ticket has passed (drawn on first sight)."""
        key = (step, ticket_id)
        if key not in self.due:
            self.due[key] = self._later(minutes)
        return time.monotonic() >= self.due[key]

    def _tickets(self, state: str) -> list[dict[str, Any]]:
        return self.api.get("/tickets", params={"state": state, "limit": 1000}).json()["data"]

    def _as(self, person: str) -> httpx.Client:
        return self.people.get(person, self.api)

    def sign_in(self) -> None:
        """Accounts and API keys for the dispatcher, the call centre and every engineer with a van."""
        username, password = self.admin_login
        token = httpx.post(self.base_url + "/auth/token", data={"username": username, "password": password},
                           timeout=30)
        token.raise_for_status()
        with httpx.Client(base_url=self.base_url, timeout=10,
                          headers={"Authorization": f"Bearer {token.json()['access_token']}"}) as admin:
            engineers = [v["engineer_id"] for v in admin.get("/vehicles").json() if v["engineer_id"]]
            users = {u["username"]: u["id"] for u in admin.get("/users").json()["data"]}
            for person, role in ((DISPATCHER, "dispatcher"), (CALL_CENTRE, "dispatcher"), (MANAGER, "admin"),
                                 *((e, "engineer") for e in engineers)):
                if person not in users:
                    created = admin.post("/users", json={"username": person, "role": role})
                    created.raise_for_status()
                    users[person] = created.json()["id"]
                key = admin.post("/auth/api-keys", json={"name": KEY_NAME, "user_id": users[person]})
                key.raise_for_status()
                self.keys.append(key.json()["id"])
                self.people[person] = httpx.Client(base_url=self.base_url, timeout=10,
                                                   headers={"Authorization": f"Bearer {key.json()['key']}"})
            if self.customers is not None:
                self.customers.sign_in(admin)
        self.api = self.people[DISPATCHER]
        # The vans' trackers are fitted now, so that the broker has their credentials before they drive.
        for vehicle in self.api.get("/vehicles").json():
            if vehicle["engineer_id"]:
                self._issue_tracker_credential(vehicle["id"])

    def _issue_tracker_credential(self, vehicle_id: str) -> tuple[str, str] | None:
        """The dispatcher gives the van's tracker its credential through the API, as an operator
        fitting the tracker would (a new one each start: the old one stops working)."""
        issued = self.api.post(f"/vehicles/{vehicle_id}/tracker-credential")
        if issued.status_code != 201:
            log.warning("crew: no tracker credential for %s: %s %s", vehicle_id, issued.status_code,
                        issued.text[:200])
            return None
        credential = issued.json()
        self.tracker_credentials[vehicle_id] = (credential["username"], credential["password"])
        return self.tracker_credentials[vehicle_id]

    def sign_out(self) -> None:
        for key_id in self.keys:
            try:
                self.api.delete(f"/auth/api-keys/{key_id}")
            except httpx.HTTPError:
                pass  # the API is already gone: the keys stay until an admin revokes them
        for client in self.people.values():
            client.close()
        if self.customers is not None:
            self.customers.sign_out()

    def _act(self, ticket_id: int, action: str, actor: str, **fields: Any) -> bool:
        response = self._as(actor).post(f"/tickets/{ticket_id}/actions/{action}", json={"actor": actor, **fields})
        if response.status_code != 200:
            log.info("crew: %s on ticket %s refused: %s %s", action, ticket_id, response.status_code,
                     response.text[:200])
            return False
        return True

    def run(self, stop: threading.Event) -> None:
        while True:
            try:
                self.sign_in()
                break
            except httpx.HTTPError as exc:
                log.warning("crew: cannot sign in yet (%s); retrying", exc)
                if stop.wait(2.0):
                    return
        client_id = f"ironsight-crew-{self.rng.randrange(1 << 30):x}"
        session = mqtt.Session(self.broker, client_id, name="simulated crews").start()
        last_tick = time.monotonic()
        try:
            while not stop.wait(self.round_every_s):
                now = time.monotonic()
                try:
                    self.round(session, now - last_tick)
                except httpx.HTTPError as exc:
                    log.warning("crew: API unavailable (%s); retrying", exc)
                last_tick = now
        finally:
            session.stop()
            for tracker in self.trackers.values():
                tracker.stop()
            self._hang_up()
            self.sign_out()

    # --- one round of everyone's work -------------------------------------------------------------

    def round(self, session: mqtt.Session, dt_s: float) -> None:
        self._session = session
        self._dispatcher()
        self._engineers(dt_s)
        self._call_centre()
        if self.customers is not None:
            for ring in self.customers.calls_due():
                self._answer(ring)
            self._end_calls()
            self.customers.raise_requests()

    def _fixed(self, ticket: dict[str, Any]) -> None:
        """The machine works again: tell the simulated fleet (the alarms then clear on their own)."""
        if self._session is not None:
            self._session.publish(repaired_topic(self.topic_root, ticket["equipment_id"]), b"", qos=1)

    def _dispatcher(self) -> None:
        for ticket in self._tickets("created"):
            if self._ready("accept", ticket["id"], ACCEPT_MIN):
                duplicate_of = self._in_hand_before(ticket)
                if duplicate_of is not None:
                    self._act(ticket["id"], "reject", DISPATCHER,
                              reason=f"duplicate: work order {duplicate_of} is already in hand for this machine")
                else:
                    self._act(ticket["id"], "accept", DISPATCHER)
        for ticket in self._tickets("accepted"):
            if ticket["kind"] == "complaint":
                # A complaint is no work order: it goes to the department that answers for it.
                self._as(DISPATCHER).post("/complaints", json={
                    "ticket_id": ticket["id"], "department": "service management", "actor": DISPATCHER,
                    "description": ticket["title"]})
                continue
            remote = ticket["remote_resolvable"] and ticket["id"] not in self.needs_visit
            if ticket["kind"] in ANSWERED_KINDS or remote:
                self._act(ticket["id"], "start_remote_diagnosis", DISPATCHER)
        for ticket in self._tickets("remote_diagnosis"):
            tid = ticket["id"]
            if ticket["kind"] in ANSWERED_KINDS:
                if self._ready("answer", tid, ANSWER_MIN):
                    self._act(tid, "resolve_remote", DISPATCHER, work_done=ANSWERED_KINDS[ticket["kind"]])
                continue
            if tid in self.needs_visit or not self._ready("remote", tid, REMOTE_DIAGNOSIS_MIN):
                continue
            if self.rng.random() < REMOTE_SUCCESS:
                remedy = _remedy(ticket) or "solved with the customer"
                if self._act(tid, "resolve_remote", DISPATCHER, work_done=remedy):
                    self._fixed(ticket)
            else:
                self.needs_visit.add(tid)
                self._act(tid, "follow_up", DISPATCHER, reason="remote diagnosis did not solve it; a visit is needed")
        proposal = self.api.get("/dispatch/proposals").json()
        waiting = {t["id"]: t for t in self._tickets("accepted") + self._tickets("remote_diagnosis")}
        for plan in proposal["proposals"]:
            waiting_ticket = waiting.get(plan["ticket_id"])
            if waiting_ticket is None or waiting_ticket["kind"] in ANSWERED_KINDS or (
                    waiting_ticket["remote_resolvable"] and waiting_ticket["id"] not in self.needs_visit):
                continue
            self._act(waiting_ticket["id"], "dispatch", DISPATCHER, engineer=plan["engineer_id"],
                      warehouse=plan["warehouse_id"])

    def _in_hand_before(self, ticket: dict[str, Any]) -> int | None:
        """An earlier fault work order of the machine still being worked on, when ``ticket`` is a
        fault a person reported (an alarm's ticket is linked to the one in hand by the API itself)."""
        if ticket["kind"] != "fault" or ticket["channel"] == "alarm":
            return None
        orders = self.api.get("/tickets", params={"equipment_id": ticket["equipment_id"], "limit": 1000}).json()
        return next((t["id"] for t in orders["data"] if t["id"] < ticket["id"] and t["kind"] == "fault"
                     and t["resolved_at"] is None and t["ended_at"] is None), None)

    def _engineers(self, dt_s: float) -> None:
        for vehicle in self.api.get("/vehicles").json():
            van = self.vans.get(vehicle["id"])
            if van is None:
                if vehicle["engineer_id"] is None:
                    continue
                station = (vehicle["lat"], vehicle["lon"])
                van = self.vans[vehicle["id"]] = Van(vehicle["id"], vehicle["engineer_id"], *station, home=station)
            self._tracker(van.vehicle_id)  # connected before its first drive
            self._work(van, vehicle.get("current_ticket_id"), dt_s)

    def _tracker(self, vehicle_id: str) -> mqtt.Session | None:
        """The van's tracker: a connection of its own, with its own credential."""
        session = self.trackers.get(vehicle_id)
        if session is None:
            credential = self.tracker_credentials.get(vehicle_id) or self._issue_tracker_credential(vehicle_id)
            if credential is None:
                return None
            session = mqtt.Session(self.broker.with_credentials(*credential), f"{self.topic_root}-van-{vehicle_id}",
                                   name=f"van {vehicle_id}").start()
            self.trackers[vehicle_id] = session
        return session

    def _work(self, van: Van, ticket_id: int | None, dt_s: float) -> None:
        if ticket_id is not None and ticket_id != van.ticket_id:
            van.ticket_id, van.waypoints = ticket_id, []
        if ticket_id is None:
            van.ticket_id = None
            if (van.lat, van.lon) != van.home:
                self._drive(van, [("home", *van.home)], dt_s)
            return
        ticket = self.api.get(f"/tickets/{ticket_id}").json()
        state = ticket["state"]
        if state == "dispatched" and self._ready("engineer_accept", ticket_id, ENGINEER_ACCEPT_MIN):
            self._act(ticket_id, "engineer_accept", van.engineer_id)
        elif state == "en_route":
            if not van.waypoints:
                van.waypoints = self._route(ticket)
            self._drive(van, van.waypoints, dt_s)
        elif state == "on_site" and self._ready("repair", ticket_id, REPAIR_MIN):
            part = ticket.get("required_part")
            # Not fixed the first time: the fault comes back and makes a new work order (a second visit).
            fixed = self.rng.random() < FIRST_TIME_FIX
            if self._act(ticket_id, "resolve", van.engineer_id, first_time_fix=fixed,
                         work_done=_remedy(ticket) or "repaired on site",
                         parts_used=[{"part": part, "quantity": 1}] if part else []) and fixed:
                self._fixed(ticket)

    def _route(self, ticket: dict[str, Any]) -> list[tuple[str, float, float]]:
        route = []
        if ticket.get("pickup_warehouse_id") and not ticket.get("part_picked_up_at"):
            warehouse = self.api.get(f"/warehouses/{ticket['pickup_warehouse_id']}").json()
            route.append(("warehouse", warehouse["lat"], warehouse["lon"]))
        machine = self.api.get(f"/equipment/{ticket['equipment_id']}").json()
        if machine.get("lat") is not None:
            route.append(("site", machine["lat"], machine["lon"]))
        return route

    def _drive(self, van: Van, waypoints: list[tuple[str, float, float]], dt_s: float) -> None:
        now = time.monotonic()
        if now < van.paused_until or not waypoints:
            return
        kind, lat, lon = waypoints[0]
        van.lat, van.lon = step_towards(van.lat, van.lon, lat, lon, self.crow_kmh * dt_s / 3600)
        reached = distance_km(van.lat, van.lon, lat, lon) < 1e-6
        if reached:
            waypoints.pop(0)
            if kind == "warehouse":
                van.paused_until = now + PICKUP_MIN * 60 / self.speed
        tracker = self._tracker(van.vehicle_id)
        if tracker is not None and (reached or now - van.last_report >= self.report_every_s):
            moving = 0.0 if reached else self.crow_kmh * 1.3 / max(self.speed, 1e-9)
            tracker.publish(position_topic(self.topic_root, van.vehicle_id),
                            encode_position(Position(datetime.now(UTC), van.lat, van.lon, round(moving, 1))), qos=1)
            van.last_report = now

    def _call_centre(self) -> None:
        """The call centre works its callback queue; departments answer complaints; management closes
        the ones sent back too often."""
        agent = self._as(CALL_CENTRE)
        for callback in agent.get("/callbacks", params={"due": "now", "limit": 1000}).json()["data"]:
            step = f"callback-{callback['attempts']}"
            if not self._ready(step, callback["id"], CALLBACK_MIN):
                continue
            call: dict[str, Any] = {"agent": CALL_CENTRE, "contact_id": callback["contact_id"]}
            if self.rng.random() < self.no_answer_share:
                call |= {"outcome": self.rng.choice(("no_answer", "busy")), "note": "nobody answered"}
            elif callback["purpose"] == "survey":
                scores = {name: self.rng.choice((4, 5, 5)) for name in SURVEY_INDICATORS}
                if self.rng.random() < LOW_SCORE_SHARE:
                    scores[self.rng.choice(SURVEY_INDICATORS)] = self.rng.choice((1, 2))
                call |= {"outcome": "answered", "scores": scores, "note": "callback after the repair"}
            else:
                satisfied = self.rng.random() < SATISFIED_SHARE
                call |= {"outcome": "answered", "satisfied": satisfied,
                         "note": "problem solved, thanks" if satisfied else "it happened again"}
            done = agent.post(f"/callbacks/{callback['id']}/attempts", json=call)
            if done.status_code != 200:
                log.info("crew: callback %s not recorded: %s %s", callback["id"], done.status_code, done.text[:200])
        for complaint in agent.get("/complaints", params={"state": "with_department", "limit": 1000}).json()["data"]:
            if self._ready(f"department-{complaint['round']}", complaint["id"], DEPARTMENT_ANSWER_MIN):
                agent.post(f"/complaints/{complaint['id']}/answer", json={
                    "actor": complaint["department"],
                    "answer": DEPARTMENT_ANSWERS.get(complaint["department"], "handled")})
        for complaint in agent.get("/complaints", params={"state": "escalated", "limit": 1000}).json()["data"]:
            if self._ready("management", complaint["id"], MANAGEMENT_MIN):
                self._as(MANAGER).post(f"/complaints/{complaint['id']}/close", json={
                    "actor": MANAGER, "note": "goodwill: the next service is on us"})

    # --- the front desk: customers' calls ----------------------------------------------------------

    def _answer(self, ring: Ring) -> None:
        """The phone rings: the telephony system records the call and puts the caller on screen."""
        rang = self._as(CALL_CENTRE).post("/calls/incoming", json={"phone": ring.phone, "line": HOTLINE})
        if rang.status_code != 201:
            log.info("crew: incoming call from %s refused: %s %s", ring.phone, rang.status_code, rang.text[:200])
            return
        body = rang.json()
        self.calls.append(Call(body["call"]["id"], ring, body["caller"], self._later(CALL_MIN)))

    def _end_calls(self) -> None:
        now = time.monotonic()
        for call in [c for c in self.calls if now >= c.ends_at]:
            self.calls.remove(call)
            on_screen = next((m for m in call.screen["machines"] if m["id"] == call.ring.equipment_id), None)
            outcome, ticket_id, notes = self._handle(call, on_screen)
            done = self._as(CALL_CENTRE).patch(f"/calls/{call.id}", json={
                "equipment_id": on_screen["id"] if on_screen else None, "outcome": outcome, "ticket_id": ticket_id,
                "notes": notes, "ended": True})
            if done.status_code != 200:
                log.info("crew: call %s not completed: %s %s", call.id, done.status_code, done.text[:200])

    def _hang_up(self) -> None:
        """The call centre closes: the calls still on end without an outcome."""
        for call in self.calls:
            try:
                self._as(CALL_CENTRE).patch(f"/calls/{call.id}", json={"notes": "cut off", "ended": True})
            except httpx.HTTPError:
                return  # the API is already gone: the calls stay open
        self.calls.clear()

    def _handle(self, call: Call, machine: dict[str, Any] | None) -> tuple[str, int | None, str]:
        """What the agent does with what the caller says and the screen shows: (outcome, work order, notes)."""
        ring, screen = call.ring, call.screen
        if screen["contact"] is None:
            return "other", None, f"caller not on record ({ring.phone})"
        if machine is None:
            return "other", None, f"{ring.equipment_id} is not one of {screen['customer']['name']}'s machines"
        if ring.topic == "complaint" and ring.ticket_id is not None:
            self._act(ring.ticket_id, "urge", CALL_CENTRE, reason="the customer called: the engineer is late")
            return "complaint", ring.ticket_id, "the engineer is late; the work order was urged"
        if ring.topic == "fault" and machine["alarms"]:
            return self._fault_call(call, machine)
        if ring.topic == "service" and machine["next_service_due_hours"] is not None:
            return "question_answered", None, (f"next service due at {machine['next_service_due_hours']:.0f} engine "
                                               f"hours (now {machine['engine_hours'] or 0:.0f})")
        where = f"at {machine['lat']:.4f}, {machine['lon']:.4f}" if machine["lat"] is not None else "position unknown"
        return "question_answered", None, f"{machine['id']} is {'online' if machine['online'] else 'offline'}, {where}"

    def _fault_call(self, call: Call, machine: dict[str, Any]) -> tuple[str, int | None, str]:
        alarm = machine["alarms"][0]
        diagnosis = alarm["diagnosis"] or {}
        remedy = _remedy({"diagnosis": diagnosis}) or "the remedy steps"
        fixable = bool(diagnosis.get("remote_resolvable"))
        order = next((o for o in machine["open_orders"]
                      if o["kind"] == "fault" and o["state"] not in ("resolved", "complaint")), None)
        if order is not None:
            if fixable and order["state"] in PHONE_FIX_STEPS and order["id"] not in self.needs_visit:
                if self.rng.random() < REMOTE_SUCCESS:
                    if self._fix_on_phone(order["id"], remedy):
                        self._fixed({"equipment_id": machine["id"]})
                        return "solved_on_phone", order["id"], f"walked the caller through: {remedy}"
                else:
                    self.needs_visit.add(order["id"])
                    self._act(order["id"], "follow_up", CALL_CENTRE,
                              reason="the remedy did not help on the phone; a visit is needed")
            state = self._as(CALL_CENTRE).get(f"/tickets/{order['id']}").json()["state"]
            return "question_answered", order["id"], f"work order {order['id']} is {state}"
        if fixable and self.rng.random() < REMOTE_SUCCESS:
            self._fixed({"equipment_id": machine["id"]})
            return "solved_on_phone", None, f"walked the caller through: {remedy}"
        opened = self._as(CALL_CENTRE).post("/tickets", headers={"Idempotency-Key": f"call-{call.id}"}, json={
            "equipment_id": machine["id"], "title": alarm["title"] or alarm["fault_code"],
            "description": f"reported on the phone by {call.screen['contact']['name']}", "priority": alarm["severity"],
            "kind": "fault", "channel": "phone", "contact_id": call.screen["contact"]["id"],
            "fault_code": alarm["fault_code"], "diagnosis": diagnosis or None,
            # Tried on the phone already, or not a remote fix: someone has to go.
            "remote_resolvable": False})
        if opened.status_code not in (200, 201):
            log.info("crew: no work order for call %s: %s %s", call.id, opened.status_code, opened.text[:200])
            return "other", None, "could not open a work order"
        return "work_order_opened", opened.json()["id"], f"{alarm['fault_code']}: an engineer will come"

    def _fix_on_phone(self, ticket_id: int, remedy: str) -> bool:
        """Take the work order through remote diagnosis to resolved, as the agent fixing it on the phone."""
        state = self._as(CALL_CENTRE).get(f"/tickets/{ticket_id}").json()["state"]
        while state in PHONE_FIX_STEPS:
            action, state = PHONE_FIX_STEPS[state]
            fields = {"work_done": f"solved on the phone: {remedy}"} if action == "resolve_remote" else {}
            if not self._act(ticket_id, action, CALL_CENTRE, **fields):
                return False
        return state == "resolved"


def _remedy(ticket: dict[str, Any]) -> str | None:
    causes = (ticket.get("diagnosis") or {}).get("causes") or []
    if causes and causes[0].get("remedy"):
        remedy = causes[0]["remedy"]
        return "; ".join(remedy) if isinstance(remedy, list) else str(remedy)
    return None
