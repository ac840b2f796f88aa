"""The simulated fleet's customers, acting as their people would: now and then a site manager calls
the control centre about one of the company's machines, and the company raises requests through
the portal.

Each customer with contacts on record gets a customer account (created once with the administrator's
login, as the crew's are) and acts only through ``/api/v1`` with an API key of it, revoked when it
stops: it sees its own fleet, alarms, work orders and contacts, and posts its requests (``POST
/tickets/requests``: a fault for a machine in alarm, otherwise a question or a complaint). A call is
only decided here (who calls, from which number, about what); the phone line delivers the number to
the call centre (device_sim.crew) spelled as a line gives it: a call from the call centre's own
country in the national format, any other with its country code (``+49 1512 …`` or ``0049…``).

Calls and requests come at random (a Poisson process) at the rates given, in real time whatever the
crew's speed: customers do not hurry because the crew does.
"""

from __future__ import annotations

import logging
import math
import random
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import phonenumbers

from device_sim.simulated_fleet import SITES_BY_NAME

log = logging.getLogger(__name__)

KEY_NAME = "simulated customer"
# When the customer has a machine in alarm, this share of its calls and requests is about it.
FAULT_SHARE = 0.6
# Of the other requests, this share complains (about a late engineer when there is one).
COMPLAINT_SHARE = 0.25
# What a caller without a fault or a complaint asks about one of its machines.
QUESTIONS = ("service", "whereabouts")
CONSULTATIONS = ("When is the next service of {machine} due?",
                 "How do we export the usage report of {machine}?",
                 "Can {machine} be moved to another site next month?")
COMPLAINTS = ("The invoice for the last service of {machine} came twice.",
              "Nobody called back about the service schedule of {machine}.")


@dataclass(frozen=True, slots=True)
class Ring:
    """A call as the phone line delivers it, and what the caller is going to say."""

    phone: str  # as the line gives it
    customer_id: str
    contact_id: int
    equipment_id: str
    topic: str  # "fault", "complaint", or one of QUESTIONS
    ticket_id: int | None = None  # the late work order a complaint is about


@dataclass
class Customer:
    id: str
    api: httpx.Client
    contacts: list[dict[str, Any]]
    key_id: int | None = None


@dataclass
class View:
    """What a customer sees of its own in the portal at a moment."""

    machines: list[dict[str, Any]]
    alarms: list[dict[str, Any]] = field(default_factory=list)


def as_the_line_gives_it(e164: str, call_centre_region: str, rng: random.Random) -> str:
    """The caller's number as a telephone line presents it to the call centre."""
    number = phonenumbers.parse(e164)
    if phonenumbers.region_code_for_number(number) == call_centre_region.upper():
        return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.NATIONAL)
    if rng.random() < 0.5:
        return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.INTERNATIONAL)
    return "00" + e164.removeprefix("+")


class SimulatedCustomers:
    def __init__(self, api_url: str, *, calls_per_hour: float, requests_per_hour: float, phone_region: str,
                 seed: int = 1) -> None:
        self.base_url = api_url.rstrip("/") + "/api/v1"
        self.calls_per_hour = calls_per_hour
        self.requests_per_hour = requests_per_hour
        self.phone_region = phone_region
        self.rng = random.Random(seed)
        self.customers: list[Customer] = []
        self.next_call = self._after(calls_per_hour)
        self.next_request = self._after(requests_per_hour)

    def _after(self, per_hour: float) -> float:
        return time.monotonic() + (self.rng.expovariate(per_hour / 3600) if per_hour > 0 else math.inf)

    def sign_in(self, admin: httpx.Client) -> None:
        """An account (created once) and an API key for each customer that has people with a phone."""
        self.customers = []
        users = {u["username"]: u["id"] for u in admin.get("/users").json()["data"]}
        for record in admin.get("/customers", params={"limit": 500}).json()["data"]:
            contacts = [c for c in admin.get(f"/customers/{record['id']}/contacts").json() if c["phones"]]
            if not contacts:
                continue
            username = f"{record['id']}.portal"
            if username not in users:
                created = admin.post("/users", json={"username": username, "role": "customer",
                                                     "customer": record["id"]})
                created.raise_for_status()
                users[username] = created.json()["id"]
            key = admin.post("/auth/api-keys", json={"name": KEY_NAME, "user_id": users[username]})
            key.raise_for_status()
            client = httpx.Client(base_url=self.base_url, timeout=10,
                                  headers={"Authorization": f"Bearer {key.json()['key']}"})
            self.customers.append(Customer(record["id"], client, contacts, key.json()["id"]))
        log.info("customers: %d simulated customers signed in", len(self.customers))

    def sign_out(self) -> None:
        for customer in self.customers:
            try:
                customer.api.delete(f"/auth/api-keys/{customer.key_id}")
            except httpx.HTTPError:
                pass  # the API is already gone: the key expires with the login that made it
            customer.api.close()

    # --- what customers do --------------------------------------------------------------------

    def calls_due(self) -> list[Ring]:
        """The calls placed since the last look (most often none)."""
        rings = []
        while self.customers and time.monotonic() >= self.next_call:
            self.next_call = self._after(self.calls_per_hour)
            ring = self._call(self.rng.choice(self.customers))
            if ring is not None:
                rings.append(ring)
        return rings

    def raise_requests(self) -> None:
        while self.customers and time.monotonic() >= self.next_request:
            self.next_request = self._after(self.requests_per_hour)
            self._request(self.rng.choice(self.customers))

    def _view(self, customer: Customer) -> View:
        machines = customer.api.get("/portal/fleet", params={"limit": 1000}).json()["data"]
        view = View(machines)
        if any(m["active_alarms"] for m in machines):
            view.alarms = customer.api.get("/alarms", params={"state": "active", "limit": 1000}).json()["data"]
        return view

    def _late_order(self, customer: Customer) -> dict[str, Any] | None:
        """A work order of the customer's whose engineer should have arrived by now."""
        now = datetime.now(UTC)
        for state in ("dispatched", "en_route"):
            for ticket in customer.api.get("/tickets", params={"state": state, "limit": 1000}).json()["data"]:
                if ticket["arrive_by"] and datetime.fromisoformat(ticket["arrive_by"]) < now:
                    return ticket
        return None

    def _contact_at(self, customer: Customer, site: str | None) -> dict[str, Any]:
        """The customer's person at the machine's site (their number is of its country), else anyone."""
        site_record = SITES_BY_NAME.get(site or "")
        there = [c for c in customer.contacts if site_record is not None and any(
            phonenumbers.region_code_for_number(phonenumbers.parse(p)) == site_record.country for p in c["phones"])]
        return self.rng.choice(there or customer.contacts)

    def _call(self, customer: Customer) -> Ring | None:
        view = self._view(customer)
        if not view.machines:
            return None
        machine, topic, ticket_id = self.rng.choice(view.machines), self.rng.choice(QUESTIONS), None
        if view.alarms and self.rng.random() < FAULT_SHARE:
            alarm = self.rng.choice(view.alarms)
            machine = next((m for m in view.machines if m["id"] == alarm["equipment_id"]), machine)
            topic = "fault"
        elif (late := self._late_order(customer)) is not None:
            machine = next((m for m in view.machines if m["id"] == late["equipment_id"]), machine)
            topic, ticket_id = "complaint", late["id"]
        contact = self._contact_at(customer, machine["site"])
        phone = as_the_line_gives_it(self.rng.choice(contact["phones"]), self.phone_region, self.rng)
        log.info("customers: %s (%s) calls from %s about %s (%s)", contact["name"], customer.id, phone,
                 machine["id"], topic)
        return Ring(phone, customer.id, contact["id"], machine["id"], topic, ticket_id)

    def _request(self, customer: Customer) -> None:
        view = self._view(customer)
        if not view.machines:
            return
        machine = self.rng.choice(view.machines)
        if view.alarms and self.rng.random() < FAULT_SHARE:
            alarm = self.rng.choice(view.alarms)
            machine = next((m for m in view.machines if m["id"] == alarm["equipment_id"]), machine)
            kind, title = "fault", f"{alarm['title'] or alarm['fault_code']} on {machine['id']}"
            description = f"The portal shows {alarm['fault_code']} on {machine['id']} since {alarm['raised_at']}."
        elif self.rng.random() < COMPLAINT_SHARE:
            kind = "complaint"
            late = self._late_order(customer)
            if late is not None:
                machine = next((m for m in view.machines if m["id"] == late["equipment_id"]), machine)
                title = f"The engineer for work order {late['id']} is late"
            else:
                title = self.rng.choice(COMPLAINTS).format(machine=machine["id"])
            description = title
        else:
            kind = "consultation"
            title = self.rng.choice(CONSULTATIONS).format(machine=machine["id"])
            description = title
        contact = self._contact_at(customer, machine["site"])
        raised = customer.api.post("/tickets/requests", json={
            "equipment_id": machine["id"], "kind": kind, "title": title[:200], "description": description,
            "contact_id": contact["id"]})
        if raised.status_code != 201:
            log.info("customers: %s's request refused: %s %s", customer.id, raised.status_code, raised.text[:200])
            return
        log.info("customers: %s raised %s request %s through the portal: %s", contact["name"], kind,
                 raised.json()["id"], title)
