"""Tenant isolation over every route of the OpenAPI document.

Two customers, alpha and beta, each with a machine, readings, a fault, an alarm and tickets. For
every operation the API publishes, alpha's token is aimed at beta's resources (ids in the path,
beta's ids and name in the query, a valid body): the answer must be a refusal (403 for a role that
may not call the route at all, 404 for something that is not alpha's) or a listing without a trace
of beta, and beta's rows must be unchanged afterwards. Each operation alpha may call is also
called on alpha's own resources and must succeed, so a route that refuses everything cannot pass.
An operation missing from CASES fails the test: a new route needs its entry here.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg
import pytest

from api.roles import Role
from tests.helpers import ApiServer, Tenant, seed_tenant
from tickets import aftercare

ALPHA, BETA = "alpha-corp", "beta-corp"
BETA_MARKERS = (BETA, "BETA-1", "SN-BETA-1", "beta-user")


@dataclass
class Case:
    """How to call one operation: a body, extra query, and what a customer may do with it."""

    body: dict[str, Any] | None = None
    query: dict[str, Any] = field(default_factory=dict)
    customer_allowed: bool = True
    # Expected success status when alpha calls it on its own resources.
    ok: int = 200
    form: dict[str, str] | None = None


SURVEY = {"actor": "callback desk", "product_quality": 4, "overall_service": 5, "timeliness": 4, "attitude": 5,
          "engineer_skill": 4, "parts_supply": 4, "comment": "fine"}
ACTOR = {"actor": "anna"}

CASES: dict[str, Case] = {
    "POST /api/v1/auth/token": Case(form={"username": "beta-user", "password": "wrong-password-123"}, ok=401),
    "GET /api/v1/auth/me": Case(),
    "POST /api/v1/auth/logout": Case(ok=204),
    "POST /api/v1/auth/api-keys": Case(body={"name": "fleet software", "user_id": "{user_id}"}, ok=201),
    "GET /api/v1/auth/api-keys": Case(),
    "DELETE /api/v1/auth/api-keys/{key_id}": Case(ok=204),
    "POST /api/v1/users": Case(body={"username": "mallory", "role": "customer", "customer": BETA,
                                     "password": "long-enough-password"}, customer_allowed=False),
    "GET /api/v1/users": Case(customer_allowed=False),
    "PATCH /api/v1/users/{user_id}": Case(body={"active": False}, customer_allowed=False),
    "GET /api/v1/equipment": Case(query={"customer": "{customer}"}),
    "GET /api/v1/equipment/{equipment_id}": Case(),
    "GET /api/v1/equipment/{equipment_id}/readings": Case(),
    "GET /api/v1/faults": Case(query={"equipment_id": "{equipment_id}"}),
    "GET /api/v1/alarms": Case(query={"equipment_id": "{equipment_id}"}),
    "GET /api/v1/alarms/{alarm_id}": Case(),
    "POST /api/v1/alarms/{alarm_id}/ack": Case(body=ACTOR, customer_allowed=False),
    "POST /api/v1/alarms/{alarm_id}/comments": Case(body=ACTOR | {"text": "x"}, customer_allowed=False),
    "PUT /api/v1/alarms/{alarm_id}/assignee": Case(body=ACTOR | {"assignee": "x"}, customer_allowed=False),
    "POST /api/v1/alarms/{alarm_id}/shelve": Case(body=ACTOR | {"minutes": 5}, customer_allowed=False),
    "POST /api/v1/alarms/{alarm_id}/unshelve": Case(body=ACTOR, customer_allowed=False),
    "POST /api/v1/tickets": Case(body={"equipment_id": "{equipment_id}", "title": "x"}, customer_allowed=False),
    "GET /api/v1/tickets": Case(query={"equipment_id": "{equipment_id}"}),
    "GET /api/v1/tickets/{ticket_id}": Case(),
    "POST /api/v1/tickets/{ticket_id}/actions/{action}": Case(body=ACTOR | {"reason": "x"}, customer_allowed=False),
    "POST /api/v1/tickets/{ticket_id}/survey": Case(body=SURVEY),
    "GET /api/v1/kpis": Case(query={"customer": "{customer}"}),
    "GET /api/v1/kpis/satisfaction": Case(customer_allowed=False),
    "GET /api/v1/health": Case(),
    "GET /api/v1/portal/fleet": Case(query={"customer": "{customer}"}),
    "GET /api/v1/iso15143/Fleet/{page}": Case(),
    "GET /api/v1/iso15143/Fleet/Equipment/ID/{equipment_id}/{element}/{start}/{end}/{page}": Case(),
    "GET /api/v1/portal/equipment/{equipment_id}/history": Case(),
    "GET /api/v1/portal/equipment/{equipment_id}/track": Case(),
    "GET /api/v1/portal/equipment/{equipment_id}/usage": Case(),
    "GET /api/v1/portal/equipment/{equipment_id}/service-record": Case(),
    "GET /api/v1/portal/equipment/{equipment_id}/export.csv": Case(),
    "GET /api/v1/equipment/{equipment_id}/presence": Case(),
    "GET /api/v1/equipment/{equipment_id}/sequence": Case(),
    "GET /api/v1/sequence-gaps": Case(query={"customer": "{customer}"}),
    "GET /api/v1/customers": Case(customer_allowed=False),
    "POST /api/v1/customers": Case(body={"id": "new-customer"}, customer_allowed=False),
    "GET /api/v1/customers/{customer_id}": Case(),
    "PATCH /api/v1/customers/{customer_id}": Case(body={"notes": "x"}, customer_allowed=False),
    "DELETE /api/v1/customers/{customer_id}": Case(customer_allowed=False),
    "GET /api/v1/customers/{customer_id}/contacts": Case(),
    "POST /api/v1/customers/{customer_id}/contacts": Case(body={"name": "x"}, customer_allowed=False),
    "PATCH /api/v1/customers/{customer_id}/contacts/{contact_id}": Case(body={"role": "x"}, customer_allowed=False),
    "DELETE /api/v1/customers/{customer_id}/contacts/{contact_id}": Case(customer_allowed=False),
    "GET /api/v1/contract-tiers": Case(customer_allowed=False),
    "PUT /api/v1/contract-tiers/{name}": Case(body={"respond_h": 1, "arrive_h": 1, "resolve_h": 1},
                                              customer_allowed=False),
    "GET /api/v1/calls/lookup": Case(query={"phone": "+31201234567"}, customer_allowed=False),
    "POST /api/v1/calls/incoming": Case(body={"phone": "+31201234567"}, customer_allowed=False),
    "POST /api/v1/calls": Case(body={"phone": "+31201234567"}, customer_allowed=False),
    "PATCH /api/v1/calls/{call_id}": Case(body={"notes": "x"}, customer_allowed=False),
    "GET /api/v1/calls": Case(customer_allowed=False),
    "POST /api/v1/tickets/requests": Case(body={"equipment_id": "{equipment_id}", "title": "x"}, ok=201),
    "POST /api/v1/equipment/{equipment_id}/service-records": Case(
        body={"engine_hours": 1000, "interval_h": 250, "work_done": "x"}, customer_allowed=False),
    "GET /api/v1/equipment/{equipment_id}/service-records": Case(),
    "POST /api/v1/equipment/{equipment_id}/commands": Case(body={"kind": "snapshot"}, customer_allowed=False),
    "GET /api/v1/equipment/{equipment_id}/commands": Case(customer_allowed=False),
    "GET /api/v1/equipment/{equipment_id}/commands/{command_id}": Case(customer_allowed=False),
    "POST /api/v1/devices": Case(body={"equipment_id": "{equipment_id}", "serial": "CTL-X"}, customer_allowed=False),
    "GET /api/v1/devices": Case(customer_allowed=False),
    "GET /api/v1/devices/{equipment_id}": Case(customer_allowed=False),
    "PATCH /api/v1/devices/{equipment_id}": Case(body={"firmware": "9"}, customer_allowed=False),
    "DELETE /api/v1/devices/{equipment_id}": Case(customer_allowed=False),
    "POST /api/v1/devices/{equipment_id}/credential": Case(customer_allowed=False),
    "POST /api/v1/devices/{equipment_id}/revoke": Case(customer_allowed=False),
    "GET /api/v1/service-stations": Case(customer_allowed=False),
    "PUT /api/v1/service-stations/{station_id}": Case(body={"name": "x", "lat": 1, "lon": 1}, customer_allowed=False),
    "GET /api/v1/engineers": Case(customer_allowed=False),
    "GET /api/v1/engineers/{engineer_id}": Case(customer_allowed=False),
    "PUT /api/v1/engineers/{engineer_id}": Case(body={"name": "x", "station_id": "{station_id}"},
                                                customer_allowed=False),
    "GET /api/v1/vehicles": Case(customer_allowed=False),
    "GET /api/v1/vehicles/{vehicle_id}": Case(customer_allowed=False),
    "PUT /api/v1/vehicles/{vehicle_id}": Case(body={"station_id": "{station_id}"}, customer_allowed=False),
    "POST /api/v1/vehicles/{vehicle_id}/tracker-credential": Case(customer_allowed=False, ok=201),
    "DELETE /api/v1/vehicles/{vehicle_id}/tracker-credential": Case(customer_allowed=False, ok=204),
    "GET /api/v1/dead-letters": Case(customer_allowed=False),
    "GET /api/v1/dead-letters/reasons": Case(customer_allowed=False),
    "GET /api/v1/warehouses": Case(customer_allowed=False),
    "GET /api/v1/warehouses/{warehouse_id}": Case(customer_allowed=False),
    "PUT /api/v1/warehouses/{warehouse_id}": Case(body={"name": "x", "lat": 1, "lon": 1}, customer_allowed=False),
    "PUT /api/v1/warehouses/{warehouse_id}/stock/{part}": Case(body={"quantity": 1}, customer_allowed=False),
    "GET /api/v1/parts": Case(customer_allowed=False),
    "GET /api/v1/parts-catalogue": Case(query={"q": "belt", "model": "EX210"}, customer_allowed=False),
    "PUT /api/v1/parts-catalogue/{part_number}": Case(body={"name": "fan belt", "models": ["EX210"]},
                                                      customer_allowed=False),
    "GET /api/v1/portal/equipment/{equipment_id}/parts": Case(query={"q": "belt"}),
    "GET /api/v1/dispatch/proposals": Case(customer_allowed=False),
    "GET /api/v1/tickets/{ticket_id}/dispatch-options": Case(customer_allowed=False),
    "GET /api/v1/callbacks": Case(customer_allowed=False),
    "GET /api/v1/callbacks/plan": Case(customer_allowed=False),
    "GET /api/v1/callbacks/{callback_id}": Case(customer_allowed=False),
    "POST /api/v1/callbacks/{callback_id}/claim": Case(body={"agent": "x"}, customer_allowed=False),
    "POST /api/v1/callbacks/{callback_id}/attempts": Case(body={"agent": "x", "outcome": "no_answer"},
                                                          customer_allowed=False),
    "GET /api/v1/complaints": Case(query={"customer": "{customer}"}),
    "POST /api/v1/complaints": Case(body={"ticket_id": "{ticket_id}", "department": "dispatch", "actor": "x"},
                                    customer_allowed=False),
    "GET /api/v1/complaints/{complaint_id}": Case(),
    "POST /api/v1/complaints/{complaint_id}/answer": Case(body={"answer": "x", "actor": "x"}, customer_allowed=False),
    "POST /api/v1/complaints/{complaint_id}/close": Case(body={"note": "x", "actor": "x"}, customer_allowed=False),
    "GET /api/v1/service-groups": Case(customer_allowed=False),
    "GET /api/v1/service-groups/{name}": Case(customer_allowed=False),
    "PUT /api/v1/service-groups/{name}": Case(body={"kind": "expert"}, customer_allowed=False),
    "DELETE /api/v1/service-groups/{name}": Case(customer_allowed=False),
}


@dataclass
class Side:
    tenant: Tenant
    client: httpx.Client
    user_id: int
    key_id: int
    callback_id: int
    complaint_id: int

    def values(self) -> dict[str, Any]:
        t = self.tenant
        return {"equipment_id": t.equipment_id, "alarm_id": t.alarm_id, "ticket_id": t.ticket_id,
                "customer": t.customer, "user_id": self.user_id, "key_id": self.key_id, "action": "urge",
                "serial": t.serial, "fault_id": t.fault_id, "page": 1, "element": "Locations",
                "command_id": "00000000-0000-0000-0000-000000000000", "station_id": "ST-1", "engineer_id": "ENG-1",
                "vehicle_id": "VAN-1", "warehouse_id": "WH-1", "part": "fan belt",
                "part_number": "IS-FAN-BELT", "customer_id": t.customer, "contact_id": 1, "call_id": 1,
                "name": "gold", "callback_id": self.callback_id, "complaint_id": self.complaint_id,
                "start": f"{datetime.now(UTC) - timedelta(days=1):%Y-%m-%dT%H:%M:%SZ}",
                "end": f"{datetime.now(UTC) + timedelta(hours=1):%Y-%m-%dT%H:%M:%SZ}"}


@pytest.fixture
def world(settings, conn):
    alpha = seed_tenant(conn, ALPHA, "ALPHA-1")
    beta = seed_tenant(conn, BETA, "BETA-1")
    server = ApiServer(settings, settings.database_url)
    sides = {}
    for tenant, username in ((alpha, "alpha-user"), (beta, "beta-user")):
        client = server.user("customer", customer=tenant.customer, username=username)
        user_id = conn.execute("SELECT id FROM api_users WHERE username = %s", (username,)).fetchone()[0]
        key = client.post("/auth/api-keys", json={"name": "integration"}).json()
        callback_id = conn.execute("SELECT id FROM callbacks WHERE ticket_id = %s", (tenant.ticket_id,)).fetchone()[0]
        conn.commit()
        complaint = aftercare.raise_complaint(conn, tenant.open_ticket_id, department="dispatch", actor="anna",
                                              description="the engineer was late")
        sides[tenant.customer] = Side(tenant, client, user_id, key["id"], callback_id, complaint["id"])
    yield server, sides[ALPHA], sides[BETA]
    server.close()


def operations(server: ApiServer) -> dict[str, dict[str, Any]]:
    spec = httpx.get(server.url + "/openapi.json").json()
    return {f"{method.upper()} {path}": op for path, item in spec["paths"].items() for method, op in item.items()
            if method in ("get", "post", "put", "patch", "delete")}


def declared_roles() -> dict[str, frozenset]:
    from api.app import api_routes, create_app
    from api.auth import declared_roles as roles_of
    from core.settings import Settings

    app = create_app(Settings(), "postgresql://unused/ironsight")
    return {f"{method} {route.path}": roles_of(route) for route in api_routes(app) for method in route.methods}


def ordered(ops: dict[str, Any]) -> list[str]:
    """Revoking a key and logging out come last: they end what the other calls use."""
    enders = ["DELETE /api/v1/auth/api-keys/{key_id}", "POST /api/v1/auth/logout"]
    return [k for k in ops if k not in enders] + [k for k in enders if k in ops]


def fill(template: Any, values: dict[str, Any]) -> Any:
    if isinstance(template, str):
        whole = re.fullmatch(r"\{(\w+)\}", template)
        if whole:
            return values[whole.group(1)]
        return re.sub(r"\{(\w+)\}", lambda m: str(values[m.group(1)]), template)
    if isinstance(template, dict):
        return {k: fill(v, values) for k, v in template.items()}
    return template


def call(client: httpx.Client, key: str, case: Case, values: dict[str, Any]) -> httpx.Response:
    method, path = key.split(" ", 1)
    url = fill(path, values).removeprefix("/api/v1")
    kwargs: dict[str, Any] = {"params": fill(case.query, values)}
    if case.body is not None:
        kwargs["json"] = fill(case.body, values)
    if case.form is not None:
        kwargs["data"] = case.form
    return client.request(method, url, **kwargs)


def beta_rows(conn: psycopg.Connection) -> str:
    """Everything of beta's in the tables a write could touch, as one comparable text."""
    queries = [
        "SELECT * FROM equipment WHERE customer = %(c)s ORDER BY id",
        "SELECT * FROM alarms WHERE equipment_id IN (SELECT id FROM equipment WHERE customer = %(c)s) ORDER BY id",
        "SELECT * FROM alarm_events WHERE alarm_id IN (SELECT a.id FROM alarms a JOIN equipment e "
        "ON e.id = a.equipment_id WHERE e.customer = %(c)s) ORDER BY id",
        "SELECT * FROM tickets WHERE equipment_id IN (SELECT id FROM equipment WHERE customer = %(c)s) ORDER BY id",
        "SELECT * FROM ticket_events WHERE ticket_id IN (SELECT t.id FROM tickets t JOIN equipment e "
        "ON e.id = t.equipment_id WHERE e.customer = %(c)s) ORDER BY id",
        "SELECT * FROM ticket_surveys ORDER BY ticket_id, round",
        "SELECT * FROM callbacks ORDER BY id",
        "SELECT * FROM callback_attempts ORDER BY id",
        "SELECT * FROM complaints ORDER BY id",
        "SELECT * FROM complaint_rounds ORDER BY complaint_id, round",
        "SELECT u.*, t.id, t.kind, t.revoked_at, t.expires_at FROM api_users u LEFT JOIN api_tokens t "
        "ON t.user_id = u.id WHERE u.customer = %(c)s ORDER BY u.id, t.id",
    ]
    rows = [conn.execute(q, {"c": BETA}).fetchall() for q in queries]
    conn.commit()
    return json.dumps(rows, default=str)


def test_every_route_declares_access_and_a_customer_never_reaches_another_customers_data(world, conn):
    server, alpha, beta = world
    ops = operations(server)
    missing = sorted(set(ops) - set(CASES))
    assert not missing, f"operations without a tenant-isolation case in tests/test_tenancy.py: {missing}"
    assert not sorted(set(CASES) - set(ops)), "cases for operations that no longer exist"

    roles = declared_roles()
    for key, case in CASES.items():
        assert case.customer_allowed == (not roles[key] or Role.customer in roles[key]), key

    before = beta_rows(conn)
    for key in ordered(ops):
        case = CASES[key]
        response = call(alpha.client, key, case, beta.values())
        assert response.status_code < 500, (key, response.text)
        leaked = [m for m in BETA_MARKERS if m in response.text]
        if case.customer_allowed:
            assert response.status_code != 403, (key, response.text)
        else:
            assert response.status_code == 403, (key, response.status_code, response.text)
        if response.status_code < 300:
            assert not leaked, (key, leaked, response.text[:500])
        else:
            assert response.status_code in (401, 403, 404), (key, response.status_code, response.text)
            assert not leaked or response.status_code == 404 and "no " in response.json()["detail"], key
    assert beta_rows(conn) == before, "a call with alpha's token changed beta's data"
    # beta's own token still works after all that (nothing of beta's was revoked).
    assert beta.client.get("/auth/me").json()["customer"] == BETA


def test_each_route_a_customer_may_call_works_on_its_own_data(world, conn):
    """The control of the test above: the same calls on alpha's own resources succeed."""
    server, alpha, beta = world
    for key in ordered(operations(server)):
        case = CASES[key]
        if not case.customer_allowed:
            continue
        response = call(alpha.client, key, case, alpha.values())
        assert response.status_code == case.ok, (key, response.status_code, response.text)
        if response.status_code == 200 and key.startswith("GET"):
            assert not [m for m in BETA_MARKERS if m in response.text], key
    assert alpha.client.get("/auth/me").status_code == 401


def test_staff_see_every_customer_and_an_id_of_another_customer_reads_as_unknown(world):
    server, alpha, beta = world
    staff = server.user("dispatcher")
    assert {e["customer"] for e in staff.get("/equipment").json()["data"]} == {ALPHA, BETA}
    assert staff.get(f"/alarms/{beta.tenant.alarm_id}").status_code == 200
    unknown = alpha.client.get("/tickets/999999")
    foreign = alpha.client.get(f"/tickets/{beta.tenant.ticket_id}")
    assert (unknown.status_code, foreign.status_code) == (404, 404)
    assert foreign.json() == {"detail": f"no ticket {beta.tenant.ticket_id}", "status": 404}
    assert alpha.client.get("/equipment").json()["count"] == 1
    assert alpha.client.get("/kpis").json()["customer"] == ALPHA
