"""Authentication and roles over HTTP: the password flow, API keys, expiry, revocation, bootstrap,
roles, the error shape, limits and headers, and secrets kept out of the logs."""

from __future__ import annotations

import logging

import httpx
import pytest
from pydantic import SecretStr

from api import accounts, credentials
from tests.helpers import ADMIN_PASSWORD, ApiServer


@pytest.fixture
def server(settings, conn):
    api = ApiServer(settings, settings.database_url)
    yield api
    api.close()


def test_no_token_bad_token_and_wrong_password_are_refused_with_one_error_shape(server):
    anonymous = httpx.get(server.url + "/api/v1/equipment")
    assert anonymous.status_code == 401 and anonymous.headers["www-authenticate"] == "Bearer"
    assert anonymous.json() == {"detail": "not authenticated: send Authorization: Bearer <token>", "status": 401}
    forged = httpx.get(server.url + "/api/v1/equipment", headers={"Authorization": "Bearer isa_forged"})
    assert forged.status_code == 401 and forged.json()["detail"] == "invalid, expired or revoked token"
    wrong = httpx.post(server.url + "/api/v1/auth/token", data={"username": "admin", "password": "nope"})
    assert wrong.status_code == 401 and wrong.json() == {"detail": "wrong username or password", "status": 401}
    nobody = httpx.post(server.url + "/api/v1/auth/token", data={"username": "nobody", "password": "nope"})
    assert nobody.json() == wrong.json()
    invalid = server.client().get("/equipment", params={"limit": 0})
    body = invalid.json()
    assert invalid.status_code == 422 and body["status"] == 422 and body["detail"].startswith("query.limit:")
    assert body["errors"][0]["loc"] == ["query", "limit"] and "input" not in body["errors"][0]


def test_password_flow_token_carries_the_role_and_logout_revokes_it(server):
    me = server.client().get("/auth/me").json()
    assert me == {"username": "admin", "role": "admin", "customer": None}
    token = server.login("admin", ADMIN_PASSWORD)
    client = server.client(token)
    assert client.get("/equipment").status_code == 200
    assert client.post("/auth/logout").status_code == 204
    assert client.get("/equipment").status_code == 401


def test_roles_decide_what_may_be_called(server, conn):
    from core.register import EquipmentRecord, register_equipment

    register_equipment(conn, [EquipmentRecord("EX-1", "S-1", "EX210", "excavator", "acme")])
    conn.commit()
    engineer = server.user("engineer")
    customer = server.user("customer", customer="acme")
    assert engineer.get("/users").status_code == 403
    assert engineer.get("/users").json() == {"detail": "a engineer may not do this", "status": 403}
    assert customer.post("/tickets", json={"equipment_id": "EX-1", "title": "x"}).status_code == 403
    ticket = engineer.post("/tickets", json={"equipment_id": "EX-1", "title": "x"})
    assert ticket.status_code == 201 and ticket.json()["created_by"] == engineer.get("/auth/me").json()["username"]
    assert customer.get(f"/tickets/{ticket.json()['id']}").status_code == 200
    assert customer.post(f"/tickets/{ticket.json()['id']}/actions/accept", json={"actor": "x"}).status_code == 403
    # A customer account must name its customer, and only a customer account may.
    for body in ({"username": "c1", "role": "customer"}, {"username": "d1", "role": "dispatcher", "customer": "x"}):
        assert server.client().post("/users", json=body).status_code == 422
    assert server.client().post("/users", json={"username": "admin", "role": "engineer"}).status_code == 409


def test_api_keys_act_as_their_owner_until_revoked_and_service_accounts_only_open_tickets(server, conn):
    from core.register import EquipmentRecord, register_equipment

    register_equipment(conn, [EquipmentRecord("EX-1", "S-1", "EX210", "excavator", "acme")])
    conn.commit()
    customer = server.user("customer", customer="acme")
    created = customer.post("/auth/api-keys", json={"name": "fleet software"})
    assert created.status_code == 201
    key = created.json()["key"]
    stored = conn.execute("SELECT token_hash FROM api_tokens WHERE id = %s", (created.json()["id"],)).fetchone()[0]
    conn.commit()
    assert key not in stored and stored == credentials.token_hash(key)
    integration = server.client(key)
    assert integration.get("/auth/me").json()["customer"] == "acme"
    assert [k["name"] for k in customer.get("/auth/api-keys").json()["data"]] == ["fleet software"]
    assert customer.delete(f"/auth/api-keys/{created.json()['id']}").status_code == 204
    assert integration.get("/equipment").status_code == 401

    service = server.client(server.service_key)
    assert service.get("/auth/me").json() == {"username": "alarms", "role": "service", "customer": None}
    assert service.get("/equipment").status_code == 403
    opened = service.post("/tickets", json={"equipment_id": "EX-1", "title": "from an alarm"})
    assert opened.status_code == 201 and opened.json()["created_by"] == "alarms"


def test_expired_tokens_and_disabled_accounts_are_refused(server, conn):
    client = server.user("dispatcher", username="dora")
    assert client.get("/equipment").status_code == 200
    conn.execute("UPDATE api_tokens SET expires_at = now() - interval '1 second' "
                 "WHERE user_id = (SELECT id FROM api_users WHERE username = 'dora')")
    conn.commit()
    assert client.get("/equipment").status_code == 401
    user_id = conn.execute("SELECT id FROM api_users WHERE username = 'dora'").fetchone()[0]
    conn.commit()
    assert server.client().patch(f"/users/{user_id}", json={"active": False}).json()["active"] is False
    assert httpx.post(server.url + "/api/v1/auth/token", data={"username": "dora", "password": "x"}).status_code == 401


def test_bootstrap_creates_the_admin_once_and_never_without_a_password(settings, conn):
    accounts.bootstrap(conn, settings)
    assert conn.execute("SELECT count(*) FROM api_users").fetchone()[0] == 0
    configured = settings.model_copy(update={"admin_password": SecretStr("first-password"),
                                             "alarms_api_key": SecretStr("isk_key")})
    accounts.bootstrap(conn, configured)
    accounts.bootstrap(conn, configured.model_copy(update={"admin_password": SecretStr("second-password")}))
    users = conn.execute("SELECT username, role, password_hash FROM api_users ORDER BY id").fetchall()
    assert [(u, r) for u, r, _ in users] == [("admin", "admin"), ("alarms", "service")]
    assert credentials.verify_password("first-password", users[0][2]) and "first-password" not in users[0][2]
    assert not credentials.verify_password("second-password", users[0][2])
    assert conn.execute("SELECT count(*) FROM api_tokens").fetchone()[0] == 1


def test_passwords_and_tokens_never_reach_the_logs(server, caplog):
    caplog.set_level(logging.DEBUG)
    secret = "correct-horse-battery-staple"
    server.client().post("/users", json={"username": "pat", "role": "dispatcher", "password": secret})
    token = server.login("pat", secret)
    httpx.post(server.url + "/api/v1/auth/token", data={"username": "pat", "password": secret + "-typo"})
    server.client(token).get("/equipment")
    server.client(token).post("/users", json={"username": "x", "role": "bogus", "password": secret})
    text = caplog.text
    assert secret not in text and token not in text and server.admin_token not in text


def test_security_headers_cors_body_limit_and_rate_limit(settings, conn):
    limited = settings.model_copy(update={"rate_limit_per_min": 60.0, "rate_limit_burst": 5,
                                          "cors_origins": ["https://portal.example"], "max_body_bytes": 1000})
    server = ApiServer(limited, limited.database_url)
    try:
        client = server.client()
        first = client.get("/auth/me")
        assert first.headers["x-content-type-options"] == "nosniff" and first.headers["x-frame-options"] == "DENY"
        assert first.headers["cache-control"] == "no-store"
        assert "default-src 'none'" in first.headers["content-security-policy"]
        preflight = client.options("/equipment", headers={"Origin": "https://portal.example",
                                                          "Access-Control-Request-Method": "GET"})
        assert preflight.headers["access-control-allow-origin"] == "https://portal.example"
        other = client.get("/auth/me", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers
        big = client.post("/tickets", content=b"{" + b" " * 2000 + b"}", headers={"Content-Type": "application/json"})
        assert big.status_code == 413 and big.json()["status"] == 413
        statuses = [client.get("/auth/me").status_code for _ in range(10)]
        assert 429 in statuses
        refused = client.get("/auth/me")
        assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
        assert refused.json() == {"detail": "too many requests; slow down", "status": 429}
        # Another token has its own allowance; health stays reachable for probes.
        assert server.client(server.service_key).get("/auth/me").status_code == 200
        assert httpx.get(server.url + "/api/v1/health").status_code == 200
    finally:
        server.close()


def test_password_hashes_are_salted_and_verifiable():
    first, second = credentials.hash_password("s3cret-pass"), credentials.hash_password("s3cret-pass")
    assert first != second and first.startswith("scrypt$")
    assert credentials.verify_password("s3cret-pass", first) and not credentials.verify_password("s3cret-pasS", first)
    assert not credentials.verify_password("anything", None)


def test_the_app_refuses_a_route_without_an_access_declaration():
    from fastapi import APIRouter

    from api import app as app_module
    from core.settings import Settings

    application = app_module.create_app(Settings(), "postgresql://unused/ironsight")
    router = APIRouter()
    router.add_api_route("/api/v1/undeclared", lambda: {"ok": True})
    application.include_router(router)
    with pytest.raises(RuntimeError, match="undeclared"):
        app_module.check_access_declared(application)




def test_values_the_database_cannot_take_are_refused_not_crashed_on(server):
    client = server.client()
    nul = client.post("/auth/api-keys", json={"name": "with\u0000nul"})
    assert nul.status_code == 422 and nul.json()["detail"].startswith("invalid value:")
    edge = client.get("/kpis", params={"end": "0001-01-01T00:06:03Z"})
    assert edge.status_code == 422 and edge.json()["detail"].startswith("value out of range")
    huge = client.get("/equipment", params={"offset": 10**22})
    assert huge.status_code == 422


def test_an_admin_cannot_lock_itself_out(server, conn):
    admin_id = conn.execute("SELECT id FROM api_users WHERE username = 'admin'").fetchone()[0]
    conn.commit()
    refused = server.client().patch(f"/users/{admin_id}", json={"active": False})
    assert refused.status_code == 409 and server.client().get("/auth/me").status_code == 200
