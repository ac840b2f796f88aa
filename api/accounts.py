"""Accounts and their tokens in the database (``api_users``, ``api_tokens``): create, list,
deactivate, log in, API keys, revocation, authentication of a bearer token, and the accounts
created at first start."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg.rows import dict_row

from api.credentials import ACCESS_PREFIX, API_KEY_PREFIX, hash_password, new_token, token_hash, verify_password
from api.roles import Principal, Role
from core.settings import Settings

log = logging.getLogger(__name__)

SERVICE_ALARMS = "alarms"


class UsernameTaken(ValueError):
    pass


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
    token = new_token(ACCESS_PREFIX)
    expires_at = datetime.now(UTC) + ttl
    conn.execute("INSERT INTO api_tokens (user_id, kind, token_hash, expires_at) VALUES (%s, 'access', %s, %s)",
                 (row[0], token_hash(token), expires_at))
    conn.commit()
    return token, expires_at


def create_api_key(conn: psycopg.Connection, user_id: int, name: str, *, expires_at: datetime | None = None,
                   token: str | None = None) -> tuple[str, dict[str, Any]]:
    token = token or new_token(API_KEY_PREFIX)
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            "INSERT INTO api_tokens (user_id, kind, token_hash, name, expires_at) VALUES (%s, 'api_key', %s, %s, %s) "
            "RETURNING id, user_id, name, created_at, expires_at, revoked_at",
            (user_id, token_hash(token), name, expires_at),
        ).fetchone()
    if row is None:  # INSERT … RETURNING gives its row or raises
        raise RuntimeError("inserting the API key returned no row")
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
            user = conn.execute("SELECT id FROM api_users WHERE username = %s", (SERVICE_ALARMS,)).fetchone()
            if user is None:  # created just above, or already there
                raise RuntimeError(f"the account {SERVICE_ALARMS!r} is missing")
            create_api_key(conn, user[0], "alarms worker (configured)", token=key)
            log.info("registered the alarms worker's API key")
        conn.commit()
