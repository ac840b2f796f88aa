"""Credential hardening over the real API and database: login throttling and lockout per username, the
rate limit that a made-up Authorization or X-Forwarded-For header no longer escapes, API key lineage
(expiry cap, revocation cascade, keys per account), 413 for chunked bodies, database errors kept out of
answers, the password policy, customer accounts bound to registered customers, tickets naming alarms
that exist, and /docs served from the package."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import psycopg
import pytest
from fastapi import FastAPI

from alarms.lifecycle import raise_or_reopen
from api import accounts, credentials, errors
from api.limits import TrustedProxies, parse_networks
from core.register import EquipmentRecord, register_equipment
from tests.helpers import ApiServer

TOKEN_URL = "/api/v1/auth/token"


@pytest.fixture(autouse=True)
def no_login_throttle(database_url: str) -> Iterator[None]:
    """The throttle table is not among those the fixtures empty: start and leave it clean."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("DELETE FROM api_login_throttle")
    yield
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("DELETE FROM api_login_throttle")


@pytest.fixture
def fleet(conn: psycopg.Connection) -> None:
    register_equipment(conn, [EquipmentRecord("EX-1", "S-1", "EX210", "excavator", "acme"),
                              EquipmentRecord("CR-2", "S-2", "TC500", "crane", "nordbau")])
    conn.commit()


@pytest.fixture
def strict(settings):
    """Settings with a short lockout (3 failures, then 30 s doubling up to 120 s)."""
    return settings.model_copy(update={"login_failures_before_lockout": 3, "login_lockout_s": 30.0,
                                       "login_lockout_max_s": 120.0})


@pytest.fixture
def server(strict, conn) -> Iterator[ApiServer]:
    api = ApiServer(strict, strict.database_url)
    yield api
    api.close()


def login(server: ApiServer, username: str, password: str) -> httpx.Response:
    return httpx.post(server.url + TOKEN_URL, data={"username": username, "password": password}, timeout=30)


def new_account(server: ApiServer, role: str = "dispatcher", **extra) -> tuple[str, str]:
    username = f"{role}-{uuid.uuid4().hex[:8]}"
    password = f"pw-{uuid.uuid4().hex}"
    created = server.client().post("/users", json={"username": username, "role": role, "password": password,
                                                   **extra})
    assert created.status_code == 201, created.text
    return username, password


def throttle_row(conn: psycopg.Connection, username: str):
    row = conn.execute("SELECT failures, locked_until - last_attempt_at FROM api_login_throttle "
                       "WHERE username_key = %s", (hashlib.sha256(username.encode()).hexdigest(),)).fetchone()
    conn.commit()
    return row


def end_lockout(conn: psycopg.Connection) -> None:
    """The lockout's time passing, without waiting for it."""
    conn.execute("UPDATE api_login_throttle SET locked_until = now() - interval '1 second', "
                 "last_attempt_at = last_attempt_at - interval '1 minute' WHERE locked_until IS NOT NULL")
    conn.commit()


# ---- 1. login throttling and lockout ---------------------------------------------------------------------

def test_failed_logins_lock_the_username_with_back_off_and_a_success_resets_it(server, conn):
    username, password = new_account(server)
    assert [login(server, username, "wrong-password-1").status_code for _ in range(3)] == [401, 401, 401]
    # Locked: the right password gets exactly the answer a wrong one gets, and neither is checked.
    right = login(server, username, password)
    wrong = login(server, username, "wrong-password-2")
    assert right.status_code == wrong.status_code == 429
    assert right.json() == wrong.json() and right.json()["detail"].startswith("too many failed logins")
    assert 1 <= int(right.headers["retry-after"]) <= 30 and right.headers["retry-after"] == wrong.headers["retry-after"]
    assert throttle_row(conn, username) == (3, timedelta(seconds=30))  # attempts while locked are not counted

    # Each failure after a lockout doubles the next one, up to the maximum.
    for expected in (60, 120, 120):
        end_lockout(conn)
        assert login(server, username, "wrong-password-3").status_code == 401
        assert throttle_row(conn, username)[1] == timedelta(seconds=expected)
        assert login(server, username, password).status_code == 429

    # Once the lockout is over, the right password works and clears the count.
    end_lockout(conn)
    assert login(server, username, password).status_code == 200
    assert throttle_row(conn, username) is None
    assert [login(server, username, "wrong-password-4").status_code for _ in range(2)] == [401, 401]
    assert login(server, username, password).status_code == 200


def test_unknown_usernames_are_throttled_and_cost_the_same_as_known_ones(server, conn, monkeypatch):
    username, _ = new_account(server)
    hashed: list[int] = []
    scrypt = credentials.hashlib.scrypt

    def counting(*args, **kwargs):
        hashed.append(1)
        return scrypt(*args, **kwargs)

    monkeypatch.setattr(credentials.hashlib, "scrypt", counting)
    answers = {}
    for name in (username, "nobody-" + uuid.uuid4().hex[:6]):
        hashed.clear()
        statuses = [login(server, name, "wrong-password-1").status_code for _ in range(4)]
        answers[name] = (statuses, len(hashed), login(server, name, "wrong-password-2").json())
    known, unknown = answers.values()
    # Three failures, each one password hash; then locked, and no hash at all.
    assert known[:2] == unknown[:2] == ([401, 401, 401, 429], 3)
    assert known[2] == unknown[2]


def test_api_processes_share_the_count_and_concurrent_guesses_get_no_more_tries(strict, conn):
    first = ApiServer(strict, strict.database_url)
    second = ApiServer(strict, strict.database_url)
    try:
        username, password = new_account(first)
        assert login(first, username, "wrong-password-1").status_code == 401
        assert login(second, username, "wrong-password-1").status_code == 401
        assert login(first, username, "wrong-password-1").status_code == 401
        assert login(second, username, password).status_code == 429

        target = "guessed-" + uuid.uuid4().hex[:6]
        barrier = threading.Barrier(10)
        statuses: list[int] = []

        def guess(i: int) -> None:
            barrier.wait()
            statuses.append(login(first if i % 2 else second, target, f"guess-number-{i}").status_code)

        threads = [threading.Thread(target=guess, args=(i,)) for i in range(10)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(statuses) == [401] * 3 + [429] * 7
    finally:
        first.close()
        second.close()


# ---- 1b. the rate limit a client cannot escape --------------------------------------------------------

def test_made_up_authorization_and_forwarded_headers_share_the_client_address_bucket(settings, conn):
    limited = settings.model_copy(update={"rate_limit_per_min": 1.0, "rate_limit_burst": 6})
    server = ApiServer(limited, limited.database_url)  # its admin login takes one request from 127.0.0.1
    try:
        admin = server.client()
        assert admin.get("/auth/me").status_code == 200  # the admin's token: from now on the admin's own bucket
        statuses = [httpx.get(server.url + "/api/v1/equipment", headers={
            "Authorization": f"Bearer isa_{uuid.uuid4().hex}", "X-Forwarded-For": f"198.51.100.{i}"}).status_code
            for i in range(10)]
        assert statuses[:4] == [401] * 4 and set(statuses[4:]) == {429}
        spoofed = httpx.get(server.url + "/api/v1/equipment",
                            headers={"X-Forwarded-For": "203.0.113.77", "Authorization": "Bearer made-up"})
        assert spoofed.status_code == 429 and int(spoofed.headers["retry-after"]) >= 1
        # A token that authenticated has its account's allowance, whatever the address.
        assert admin.get("/auth/me").status_code == 200
    finally:
        server.close()


def test_forwarded_for_is_believed_only_from_trusted_proxies(settings, conn):
    limited = settings.model_copy(update={"rate_limit_per_min": 1.0, "rate_limit_burst": 3,
                                          "trusted_proxies": "127.0.0.1, 10.0.0.0/8"})
    server = ApiServer(limited, limited.database_url)
    try:
        def anonymous(forwarded_for: str) -> int:
            return httpx.get(server.url + "/api/v1/equipment", headers={"X-Forwarded-For": forwarded_for}).status_code

        # Behind the (trusted) local proxy, each client has its own bucket ...
        assert [anonymous("198.51.100.1") for _ in range(4)] == [401, 401, 401, 429]
        assert anonymous("198.51.100.2") == 401
        # ... and what a client writes before the address the proxy appended is not believed.
        assert anonymous("192.0.2.99, 198.51.100.1") == 429
        assert anonymous("192.0.2.98, 198.51.100.1, 10.1.2.3") == 429
    finally:
        server.close()
    proxies = TrustedProxies(parse_networks("10.0.0.0/8, ::1"))
    assert proxies.client_of("10.0.0.5", [b"1.2.3.4, 5.6.7.8:4711, 10.9.9.9"]) == "5.6.7.8"
    assert proxies.client_of("192.0.2.1", [b"5.6.7.8"]) == "192.0.2.1"  # not a proxy: header ignored
    assert proxies.client_of("::1", [b"[2001:db8::7]:443"]) == "2001:db8::7"
    assert proxies.client_of("10.0.0.5", [b"not-an-address"]) == "10.0.0.5"
    assert not TrustedProxies(parse_networks("")).trusts("127.0.0.1")
    with pytest.raises(ValueError, match="not an IP address"):
        parse_networks("127.0.0.1, proxy.example")


# ---- 2. API key lineage ------------------------------------------------------------------------------

def token_row(conn: psycopg.Connection, token: str):
    row = conn.execute("SELECT id, expires_at, revoked_at, parent_id FROM api_tokens WHERE token_hash = %s",
                       (credentials.token_hash(token),)).fetchone()
    conn.commit()
    return row


def test_a_key_expires_with_the_credential_that_made_it_and_falls_with_it(settings, conn, fleet):
    three_days = settings.model_copy(update={"access_token_ttl_min": 3 * 24 * 60.0})
    server = ApiServer(three_days, three_days.database_url)
    try:
        username, password = new_account(server, "customer", customer="acme")
        session = server.login(username, password)
        session_id, session_expiry, _, _ = token_row(conn, session)
        user = server.client(session)

        forever = user.post("/auth/api-keys", json={"name": "no expiry asked"}).json()
        assert datetime.fromisoformat(forever["expires_at"]) == session_expiry and forever["parent_id"] == session_id
        one_day = user.post("/auth/api-keys", json={"name": "a day", "expires_in_days": 1}).json()
        assert datetime.fromisoformat(one_day["expires_at"]) < session_expiry
        # A key made with the one-day key lives a day at most, however long it asks for.
        child = server.client(one_day["key"]).post("/auth/api-keys", json={"name": "child", "expires_in_days": 3650})
        assert child.status_code == 201 and child.json()["expires_at"] == one_day["expires_at"]
        grandchild = server.client(child.json()["key"]).post("/auth/api-keys", json={"name": "grandchild"}).json()
        assert grandchild["expires_at"] == one_day["expires_at"] and grandchild["parent_id"] == child.json()["id"]
        assert server.client(grandchild["key"]).get("/auth/me").json()["customer"] == "acme"  # the owner's, no more

        # Revoking the one-day key revokes what it made, recursively, and nothing else.
        assert user.delete(f"/auth/api-keys/{one_day['id']}").status_code == 204
        for key in (one_day, child.json(), grandchild):
            assert server.client(key["key"]).get("/auth/me").status_code == 401
        assert server.client(forever["key"]).get("/auth/me").status_code == 200
        # Logging out revokes the session's keys.
        assert user.post("/auth/logout").status_code == 204
        assert server.client(forever["key"]).get("/auth/me").status_code == 401
        assert token_row(conn, forever["key"])[2] is not None

        # A key an admin's session made for someone else falls with that admin's account.
        second_admin, second_password = new_account(server, "admin")
        other = server.client(server.login(second_admin, second_password))
        engineer_id = other.post("/users", json={"username": "eng-" + uuid.uuid4().hex[:6], "role": "engineer"}) \
            .json()["id"]
        engineer_key = other.post("/auth/api-keys", json={"name": "for the engineer", "user_id": engineer_id}).json()
        assert server.client(engineer_key["key"]).get("/auth/me").json()["role"] == "engineer"
        second_id = conn.execute("SELECT id FROM api_users WHERE username = %s", (second_admin,)).fetchone()[0]
        conn.commit()
        assert server.client().patch(f"/users/{second_id}", json={"active": False}).status_code == 200
        assert server.client(engineer_key["key"]).get("/auth/me").status_code == 401
        # Nobody but an admin makes keys for others.
        assert server.client(server.service_key).post("/auth/api-keys", json={"name": "x"}).status_code == 403
    finally:
        server.close()


def test_a_revoked_parent_cannot_make_keys(conn, fleet):
    user = accounts.create_user(conn, "parent-test", accounts.Role.dispatcher)
    parent, row = accounts.create_api_key(conn, user["id"], "parent")
    assert accounts.revoke_token(conn, row["id"], owner=None)
    with pytest.raises(accounts.CredentialRevoked):
        accounts.create_api_key(conn, user["id"], "child", parent_id=row["id"])
    assert conn.execute("SELECT count(*) FROM api_tokens").fetchone()[0] == 1
    conn.commit()


def test_keys_per_account_are_capped(settings, conn):
    capped = settings.model_copy(update={"api_keys_per_user_max": 3})
    server = ApiServer(capped, capped.database_url)
    try:
        username, password = new_account(server)
        user = server.client(server.login(username, password))
        keys = [user.post("/auth/api-keys", json={"name": f"k{i}"}) for i in range(3)]
        assert [k.status_code for k in keys] == [201] * 3
        refused = user.post("/auth/api-keys", json={"name": "one too many"})
        assert refused.status_code == 409 and refused.json()["status"] == 409
        assert "at most 3" in refused.json()["detail"] and "revoke one" in refused.json()["detail"]
        # An admin making a key for this account meets the same cap; a revoked or expired key makes room.
        user_id = keys[0].json()["user_id"]
        assert server.client().post("/auth/api-keys", json={"name": "x", "user_id": user_id}).status_code == 409
        assert user.delete(f"/auth/api-keys/{keys[0].json()['id']}").status_code == 204
        assert user.post("/auth/api-keys", json={"name": "replacement"}).status_code == 201
        conn.execute("UPDATE api_tokens SET expires_at = now() - interval '1 second' WHERE id = %s",
                     (keys[1].json()["id"],))
        conn.commit()
        assert user.post("/auth/api-keys", json={"name": "after expiry"}).status_code == 201
        assert user.post("/auth/api-keys", json={"name": "over again"}).status_code == 409
    finally:
        server.close()


# ---- 4. bodies, errors, passwords, customers, alarms on tickets, docs ------------------------------------------

def test_a_chunked_body_over_the_limit_is_refused_with_413(settings, conn):
    small = settings.model_copy(update={"max_body_bytes": 1000})
    server = ApiServer(small, small.database_url)
    try:
        def chunks(n: int, size: int) -> Iterator[bytes]:
            yield b'{"equipment_id": "EX-1", "title": "'
            for _ in range(n):
                yield b"x" * size
            yield b'"}'

        client = server.client()
        big = client.post("/tickets", content=chunks(10, 400), headers={"Content-Type": "application/json"})
        assert big.status_code == 413 and big.json() == {"detail": "request body larger than 1000 bytes",
                                                          "status": 413}
        assert big.request.headers.get("transfer-encoding") == "chunked"
        form = httpx.post(server.url + TOKEN_URL, content=(b"username=admin&password=" + b"y" * 600 for _ in range(3)),
                          headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert form.status_code == 413
        # A chunked body within the limit is read as usual (here: no such equipment).
        fine = client.post("/tickets", content=chunks(1, 10), headers={"Content-Type": "application/json"})
        assert fine.status_code == 422 and fine.json()["detail"] == "no equipment 'EX-1'"
    finally:
        server.close()


def test_database_errors_reach_the_log_not_the_client(server, caplog):
    caplog.set_level(logging.INFO, logger="api.errors")
    nul = server.client().post("/auth/api-keys", json={"name": "with\u0000nul"})
    body = nul.json()
    assert nul.status_code == 422 and body["detail"].startswith("invalid value:")
    request_id = nul.headers["x-request-id"]
    assert request_id in body["detail"]
    assert not re.search(r"0x00|NUL|byte sequence|UTF8|psycopg|postgres", body["detail"], re.IGNORECASE)
    logged = [r.getMessage() for r in caplog.records if request_id in r.getMessage()]
    assert logged and "0x00" in logged[0]  # the database's own words stay in the server's log


@pytest.mark.parametrize("exc, status", [
    (psycopg.errors.UniqueViolation('duplicate key value violates unique constraint "api_tokens_token_hash_key"'), 409),
    (psycopg.errors.ForeignKeyViolation('insert violates foreign key constraint "tickets_equipment_fk"'), 409),
    (psycopg.OperationalError('connection to server at "10.1.2.3", port 5432 failed: password authentication'), 503),
    (psycopg.errors.InternalError_('could not open relation with OID 16384'), 500),
    (psycopg.errors.InvalidTextRepresentation('invalid input syntax for type integer: "secret"'), 422),
])
def test_every_database_error_is_answered_generically(exc, status, caplog):
    app = FastAPI()
    errors.install(app)

    @app.get("/boom")
    def boom() -> None:
        raise exc

    async def call() -> httpx.Response:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            return await client.get("/boom")

    response = asyncio.run(call())
    assert response.status_code == status
    text = response.text
    for secret in ("api_tokens", "tickets_equipment_fk", "10.1.2.3", "16384", "secret", "constraint"):
        assert secret not in text
    assert response.json()["status"] == status and response.headers["x-request-id"] in response.json()["detail"]


@pytest.mark.parametrize("password, username, problem", [
    ("short-pw", "pat", "at least 12 characters"),
    ("a" * 20, "pat", "5 different characters"),
    ("abababababababab", "pat", "5 different characters"),
    ("Pat.Example2026", "pat.example2026", "contain the username"),
    ("my-name-is-pat.smith!", "pat.smith", "contain the username"),
    ("Password1234", "pat", "most common"),
    ("QWERTY123456", "pat", "most common"),
])
def test_the_password_policy(password, username, problem):
    assert problem in (credentials.password_problem(password, username) or "")


def test_accounts_get_policy_passwords_and_registered_customers_only(server, fleet):
    admin = server.client()
    for password in ("x" * 14, "password1234", "dana.smith-1234"):
        refused = admin.post("/users", json={"username": "dana.smith", "role": "dispatcher", "password": password})
        assert refused.status_code == 422, password
        assert refused.json()["detail"].startswith("body.password:") and password not in refused.text
    assert admin.post("/users", json={"username": "dana.smith", "role": "dispatcher",
                                      "password": "tractor-lemon-harbour"}).status_code == 201
    assert credentials.password_problem("tractor-lemon-harbour", "dana.smith") is None

    ghost = admin.post("/users", json={"username": "ghost-user", "role": "customer", "customer": "ghost-corp",
                                       "password": "tractor-lemon-harbour"})
    assert ghost.status_code == 422 and ghost.json()["detail"].startswith("no customer 'ghost-corp'")
    real = admin.post("/users", json={"username": "acme-user", "role": "customer", "customer": "acme",
                                      "password": "tractor-lemon-harbour"})
    assert real.status_code == 201 and real.json()["customer"] == "acme"


def test_a_ticket_names_only_an_alarm_of_its_machine_unless_the_alarms_service_opens_it(server, conn, fleet):
    with conn.transaction():
        alarm_id = raise_or_reopen(conn, "EX-1", "OIL_OVERHEAT", "major", datetime.now(UTC), 1).alarm_id
    staff = server.user("dispatcher")
    future = staff.post("/tickets", json={"equipment_id": "EX-1", "title": "x", "source_alarm_id": alarm_id + 1})
    assert future.status_code == 422 and future.json()["detail"] == f"no alarm {alarm_id + 1}"
    other = staff.post("/tickets", json={"equipment_id": "CR-2", "title": "x", "source_alarm_id": alarm_id})
    assert other.status_code == 422 and "not on equipment 'CR-2'" in other.json()["detail"]
    mine = staff.post("/tickets", json={"equipment_id": "EX-1", "title": "x", "source_alarm_id": alarm_id})
    assert mine.status_code == 201
    # The alarms service opens its alarm's ticket as the alarm is stored: not held to the check, and
    # the id nobody could take is still its own.
    service = server.client(server.service_key)
    opened = service.post("/tickets", json={"equipment_id": "CR-2", "title": "from an alarm",
                                            "source_alarm_id": alarm_id + 1}, headers={"Idempotency-Key": "a"})
    assert opened.status_code == 201
    assert service.post("/tickets", json={"equipment_id": "CR-2", "title": "from an alarm",
                                          "source_alarm_id": alarm_id + 1}).json()["id"] == opened.json()["id"]


def test_docs_load_everything_from_the_api_itself(server):
    page = httpx.get(server.url + "/docs")
    assert page.status_code == 200 and "SwaggerUIBundle" in page.text
    assert "cdn.jsdelivr.net" not in page.text and "fastapi.tiangolo.com" not in page.text
    assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert len(assets) == 3 and all(url.startswith("/docs-assets/") for url in assets)
    for url, kind in zip(sorted(assets), ("image/png", "javascript", "text/css"), strict=True):
        asset = httpx.get(server.url + url)
        assert asset.status_code == 200 and kind in asset.headers["content-type"], url
    assert "validatorUrl" in page.text  # no badge from validator.swagger.io
    assert httpx.get(server.url + "/docs/oauth2-redirect").status_code == 200
    assert httpx.get(server.url + "/redoc").status_code == 404
    assert "/docs-assets" not in str(httpx.get(server.url + "/openapi.json").json()["paths"])
