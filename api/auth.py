"""Accounts, credentials and who may call what.

People log in with the OAuth2 password flow and get an access token that expires; integrations get
long-lived API keys. Both are opaque random bearer tokens, stored only as SHA-256 hashes; passwords
are stored as salted scrypt hashes. Every route declares the roles that may call it with
``require(...)``; ``create_app`` refuses to build an app with a route that declares nothing.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any

import psycopg
from fastapi import Depends, HTTPException, Request
from fastapi.security import OAuth2PasswordBearer
from psycopg.rows import dict_row

from api.deps import DbConn
from core.settings import Settings

log = logging.getLogger(__name__)

TOKEN_URL = "/api/v1/auth/token"
# scrypt cost: about 50 ms and 16 MiB per hash here, paid once per login, not per request.
SCRYPT_N = 2**14
SCRYPT_R = 8
SCRYPT_P = 1
SALT_BYTES = 16
TOKEN_BYTES = 32
ACCESS_PREFIX = "isa_"
API_KEY_PREFIX = "isk_"
SERVICE_ALARMS = "alarms"


class Role(StrEnum):
    admin = "admin"
    dispatcher = "dispatcher"
    engineer = "engineer"
    customer = "customer"
    service = "service"


# The control centre works every fleet; a customer sees one.
STAFF = (Role.admin, Role.dispatcher, Role.engineer)
READERS = (*STAFF, Role.customer)


@dataclass(frozen=True, slots=True)
class Principal:
    user_id: int
    username: str
    role: Role
    customer: str | None
    token_id: int

    @property
    def scope(self) -> str | None:
        """The one customer whose data the caller may see; None for staff (every customer)."""
        return self.customer if self.role is Role.customer else None


class UsernameTaken(ValueError):
    pass


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(SALT_BYTES)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P)
    return "$".join(["scrypt", str(SCRYPT_N), str(SCRYPT_R), str(SCRYPT_P),
                     base64.b64encode(salt).decode(), base64.b64encode(digest).decode()])


def verify_password(password: str, stored: str | None) -> bool:
    if not stored:
        # Same work as a real check, so that response time does not tell which usernames exist.
        hashlib.scrypt(password.encode(), salt=b"0" * SALT_BYTES, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P)
        return False
    scheme, n, r, p, salt, digest = stored.split("$")
    if scheme != "scrypt":
        return False
    candidate = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p))
    return hmac.compare_digest(candidate, base64.b64decode(digest))


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_user(conn: psycopg.Connection, username: str, role: Role, *, password: str | None = None,
                customer: str | None = None) -> dict[str, Any]:
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            "INSERT INTO api_users (username, password_hash, role, customer) VALUES (%s, %s, %s, %s) "
            "ON CONFLICT (username) DO NOTHING RETURNING id, username, role, customer, active, created_at",
            (username, hash_password(password) if password else None, role.value,
             customer if role is Role.customer else None),
        ).fetchone()
    if row is None:
        conn.rollback()
        raise UsernameTaken(f"username {username!r} is taken")
    conn.commit()
    return row


def list_users(conn: psycopg.Connection) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute("SELECT id, username, role, customer, active, created_at FROM api_users ORDER BY id")\
            .fetchall()


def set_active(conn: psycopg.Connection, user_id: int, active: bool) -> dict[str, Any] | None:
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute("UPDATE api_users SET active = %s WHERE id = %s "
                          "RETURNING id, username, role, customer, active, created_at", (active, user_id)).fetchone()
        if row is not None and not active:
            cur.execute("UPDATE api_tokens SET revoked_at = now() WHERE user_id = %s AND revoked_at IS NULL",
                        (user_id,))
    conn.commit()
    return row


def login(conn: psycopg.Connection, username: str, password: str, ttl: timedelta) -> tuple[str, datetime] | None:
    """A new access token for valid credentials of an active account, else None."""
    row = conn.execute("SELECT id, password_hash FROM api_users WHERE username = %s AND active",
                       (username,)).fetchone()
    if not verify_password(password, row[1] if row else None) or row is None:
        conn.rollback()
        return None
    # Expired access tokens are useless; dropping them here keeps the table small without a job.
    conn.execute("DELETE FROM api_tokens WHERE kind = 'access' AND expires_at < now() - interval '1 day'")
    token = ACCESS_PREFIX + secrets.token_urlsafe(TOKEN_BYTES)
    expires_at = datetime.now(UTC) + ttl
    conn.execute("INSERT INTO api_tokens (user_id, kind, token_hash, expires_at) VALUES (%s, 'access', %s, %s)",
                 (row[0], token_hash(token), expires_at))
    conn.commit()
    return token, expires_at


def create_api_key(conn: psycopg.Connection, user_id: int, name: str, *, expires_at: datetime | None = None,
                   token: str | None = None) -> tuple[str, dict[str, Any]]:
    token = token or API_KEY_PREFIX + secrets.token_urlsafe(TOKEN_BYTES)
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            "INSERT INTO api_tokens (user_id, kind, token_hash, name, expires_at) VALUES (%s, 'api_key', %s, %s, %s) "
            "RETURNING id, user_id, name, created_at, expires_at, revoked_at",
            (user_id, token_hash(token), name, expires_at),
        ).fetchone()
    conn.commit()
    return token, row


def list_api_keys(conn: psycopg.Connection, user_id: int | None) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            "SELECT id, user_id, name, created_at, expires_at, revoked_at FROM api_tokens "
            "WHERE kind = 'api_key' AND (%(user)s::bigint IS NULL OR user_id = %(user)s) ORDER BY id",
            {"user": user_id},
        ).fetchall()


def revoke_token(conn: psycopg.Connection, token_id: int, *, owner: int | None) -> bool:
    """Revoke one token; ``owner`` restricts it to that user's tokens (None: any)."""
    row = conn.execute(
        "UPDATE api_tokens SET revoked_at = coalesce(revoked_at, now()) "
        "WHERE id = %s AND (%s::bigint IS NULL OR user_id = %s) RETURNING id", (token_id, owner, owner),
    ).fetchone()
    conn.commit()
    return row is not None


def authenticate(conn: psycopg.Connection, token: str) -> Principal | None:
    row = conn.execute(
        "SELECT u.id, u.username, u.role, u.customer, t.id FROM api_tokens t JOIN api_users u ON u.id = t.user_id "
        "WHERE t.token_hash = %s AND t.revoked_at IS NULL AND (t.expires_at IS NULL OR t.expires_at > now()) "
        "AND u.active", (token_hash(token),),
    ).fetchone()
    # End the read so that the request's connection is not left idle in a transaction.
    conn.rollback()
    if row is None:
        return None
    return Principal(user_id=row[0], username=row[1], role=Role(row[2]), customer=row[3], token_id=row[4])


def bootstrap(conn: psycopg.Connection, settings: Settings) -> None:
    """Create the configured admin and register the alarms worker's key, when they are missing.

    Nothing is created without configuration: no account ever has a default password.
    """
    if settings.admin_password is not None:
        try:
            create_user(conn, settings.admin_username, Role.admin,
                        password=settings.admin_password.get_secret_value())
            log.info("created the bootstrap admin account %r", settings.admin_username)
        except UsernameTaken:
            pass
    if settings.alarms_api_key is not None:
        key = settings.alarms_api_key.get_secret_value()
        try:
            create_user(conn, SERVICE_ALARMS, Role.service)
        except UsernameTaken:
            pass
        exists = conn.execute("SELECT 1 FROM api_tokens WHERE token_hash = %s", (token_hash(key),)).fetchone()
        if exists is None:
            user_id = conn.execute("SELECT id FROM api_users WHERE username = %s", (SERVICE_ALARMS,)).fetchone()[0]
            create_api_key(conn, user_id, "alarms worker (configured)", token=key)
            log.info("registered the alarms worker's API key")
        conn.commit()


_bearer = OAuth2PasswordBearer(tokenUrl=TOKEN_URL, auto_error=False)


def _unauthorized(message: str) -> HTTPException:
    return HTTPException(401, message, headers={"WWW-Authenticate": "Bearer"})


def current_principal(request: Request, conn: DbConn, token: str | None = Depends(_bearer)) -> Principal:
    if not token:
        raise _unauthorized("not authenticated: send Authorization: Bearer <token>")
    principal = authenticate(conn, token)
    if principal is None:
        raise _unauthorized("invalid, expired or revoked token")
    request.state.principal = principal
    return principal


def require(*roles: Role) -> Any:
    """The access declaration of a route: the caller must hold one of ``roles``.

    Use as ``caller: Annotated[Principal, require(Role.admin, Role.dispatcher)]`` or in a route's
    ``dependencies=[require(...)]``. A missing or bad token answers 401, another role 403.
    """
    allowed = frozenset(roles)
    if not allowed:
        raise ValueError("require() needs at least one role; use public() for open routes")

    def check(principal: Annotated[Principal, Depends(current_principal)]) -> Principal:
        if principal.role not in allowed:
            raise HTTPException(403, f"a {principal.role.value} may not do this")
        return principal

    check.access_roles = allowed  # type: ignore[attr-defined]
    return Depends(check)


def public() -> Any:
    """The access declaration of a route anyone may call (health, login)."""

    def anyone() -> None:
        return None

    anyone.access_roles = frozenset()  # type: ignore[attr-defined]
    return Depends(anyone)


# The callers routes most often take, named once: ``caller: Reader`` instead of
# ``caller: Annotated[Principal, require(*READERS)]``.
Reader = Annotated[Principal, require(*READERS)]
Staff = Annotated[Principal, require(*STAFF)]
AnyCaller = Annotated[Principal, require(*Role)]


def declared_roles(route: Any) -> frozenset[Role] | None:
    """The roles a route declared through require()/public(); None if it declared nothing."""
    stack = [route.dependant]
    while stack:
        dependant = stack.pop()
        roles = getattr(dependant.call, "access_roles", None)
        if roles is not None:
            return roles
        stack.extend(dependant.dependencies)
    return None
