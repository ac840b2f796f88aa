"""Accounts and their tokens in the database (``api_users``, ``api_tokens``, ``api_login_throttle``):
create, list, deactivate, log in (throttled per username), API keys (with their lineage), revocation
(with everything the credential created), authentication of a bearer token, and the accounts created
at first start."""

from __future__ import annotations

import hashlib
import logging
import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg.rows import dict_row

from api.credentials import ACCESS_PREFIX, API_KEY_PREFIX, hash_password, new_token, token_hash, verify_password
from api.roles import Principal, Role
from core.db import one
from core.settings import Settings

log = logging.getLogger(__name__)

SERVICE_ALARMS = "alarms"


class UsernameTaken(ValueError):
    pass


class LoginThrottled(Exception):
    """Too many failed logins for this username: no attempt is checked until ``retry_after_s`` passed."""

    def __init__(self, retry_after_s: float) -> None:
        super().__init__(f"too many failed logins for this username; try again in {math.ceil(retry_after_s)} s")
        self.retry_after_s = retry_after_s


class TooManyKeys(ValueError):
    pass


class CredentialRevoked(ValueError):
    """The credential a new key would descend from was revoked or expired meanwhile."""


@dataclass(frozen=True, slots=True)
class LoginPolicy:
    """After ``failures_before_lockout`` failed logins in a row a username is locked for ``lockout_s``,
    doubled with every further failure up to ``lockout_max_s``; a successful login clears it."""

    failures_before_lockout: int = 5
    lockout_s: float = 30.0
    lockout_max_s: float = 900.0

    @classmethod
    def from_settings(cls, settings: Settings) -> LoginPolicy:
        return cls(max(1, settings.login_failures_before_lockout), settings.login_lockout_s,
                   settings.login_lockout_max_s)

    def lockout(self, failures: int) -> timedelta | None:
        """How long a username with ``failures`` failures in a row is locked (None: not locked)."""
        if failures < self.failures_before_lockout:
            return None
        doublings = min(failures - self.failures_before_lockout, 40)
        return timedelta(seconds=min(self.lockout_s * 2**doublings, self.lockout_max_s))


# Failures older than this are forgotten: a typo last week does not count towards today's lockout.
LOGIN_FAILURES_FORGOTTEN_AFTER = timedelta(days=1)
# Stale throttle rows removed per failed login (the table holds one row per username tried).
LOGIN_THROTTLE_PRUNE = 100


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
            roots = [r["id"] for r in cur.execute("SELECT id FROM api_tokens WHERE user_id = %s ORDER BY id FOR UPDATE",
                                                  (user_id,))]
            _revoke_with_descendants(conn, roots)
    conn.commit()
    return row


def customer_registered(conn: psycopg.Connection, customer: str) -> bool:
    """Whether ``customer`` is a customer on record (core.customers)."""
    found = conn.execute("SELECT 1 FROM customers WHERE id = %s", (customer,)).fetchone() is not None
    conn.rollback()
    return found


def login(conn: psycopg.Connection, username: str, password: str, ttl: timedelta,
          policy: LoginPolicy | None = None) -> tuple[str, datetime] | None:
    """A new access token for valid credentials of an active account, else None.

    Raises LoginThrottled while the username (known or not: both are throttled alike) is locked;
    then the password is not checked at all, so the answer cannot tell whether it was right.
    """
    key = hashlib.sha256(username.encode("utf-8", "surrogatepass")).hexdigest()
    _count_attempt(conn, key, policy or LoginPolicy())
    row = conn.execute("SELECT id, password_hash FROM api_users WHERE username = %s AND active",
                       (username,)).fetchone()
    if not verify_password(password, row[1] if row else None) or row is None:
        # The attempt is already counted; only clear out rows nobody has tried for a long time.
        conn.execute(
            "DELETE FROM api_login_throttle WHERE username_key IN (SELECT username_key FROM api_login_throttle "
            "WHERE last_attempt_at < now() - %s AND (locked_until IS NULL OR locked_until < now()) LIMIT %s)",
            (LOGIN_FAILURES_FORGOTTEN_AFTER, LOGIN_THROTTLE_PRUNE))
        conn.commit()
        return None
    conn.execute("DELETE FROM api_login_throttle WHERE username_key = %s", (key,))
    # Expired access tokens are useless; dropping them here keeps the table small without a job.
    conn.execute("DELETE FROM api_tokens WHERE kind = 'access' AND expires_at < now() - interval '1 day'")
    token = new_token(ACCESS_PREFIX)
    expires_at = datetime.now(UTC) + ttl
    conn.execute("INSERT INTO api_tokens (user_id, kind, token_hash, expires_at) VALUES (%s, 'access', %s, %s)",
                 (row[0], token_hash(token), expires_at))
    conn.commit()
    return token, expires_at


def _count_attempt(conn: psycopg.Connection, key: str, policy: LoginPolicy) -> None:
    """Count a login attempt as a failure before the password is checked (a success clears it later),
    committed at once: concurrent guesses, in this process or another, see each other, so no more of
    them get through than the policy allows. Raises LoginThrottled while the username is locked."""
    # The row, created if missing, locked until the commit below (DO UPDATE locks even a no-op).
    failures, locked_until, last_attempt_at, now = one(conn.execute(
        "INSERT INTO api_login_throttle AS t (username_key) VALUES (%s) "
        "ON CONFLICT (username_key) DO UPDATE SET username_key = t.username_key "
        "RETURNING t.failures, t.locked_until, t.last_attempt_at, now()", (key,)))
    if locked_until is not None and locked_until > now:
        conn.commit()
        raise LoginThrottled((locked_until - now).total_seconds())
    failures = 1 if failures and last_attempt_at < now - LOGIN_FAILURES_FORGOTTEN_AFTER else failures + 1
    lockout = policy.lockout(failures)
    conn.execute("UPDATE api_login_throttle SET failures = %s, locked_until = %s, last_attempt_at = %s "
                 "WHERE username_key = %s", (failures, now + lockout if lockout else None, now, key))
    conn.commit()


def create_api_key(conn: psycopg.Connection, user_id: int, name: str, *, expires_at: datetime | None = None,
                   token: str | None = None, parent_id: int | None = None,
                   max_active: int | None = None) -> tuple[str, dict[str, Any]]:
    """A new API key of ``user_id``; return (the key, its row).

    ``parent_id`` is the credential that creates it (the caller's token or key): the key's expiry is
    capped at the parent's, and revoking the parent revokes the key. ``max_active`` caps the owner's
    active keys (TooManyKeys). Raises CredentialRevoked when the parent is no longer valid.
    """
    token = token or new_token(API_KEY_PREFIX)
    try:
        with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
            if parent_id is not None:
                # FOR SHARE: a revocation of the parent running now waits for this key, then revokes it too
                # (or this waits for the revocation and finds the parent revoked).
                parent = cur.execute(
                    "SELECT expires_at FROM api_tokens WHERE id = %s AND revoked_at IS NULL "
                    "AND (expires_at IS NULL OR expires_at > now()) FOR SHARE", (parent_id,)).fetchone()
                if parent is None:
                    raise CredentialRevoked(f"credential {parent_id} is revoked or expired")
                if parent["expires_at"] is not None and (expires_at is None or expires_at > parent["expires_at"]):
                    expires_at = parent["expires_at"]
            if max_active is not None:
                # One key creation per owner at a time, so that two at once cannot both pass the count.
                cur.execute("SELECT 1 FROM api_users WHERE id = %s FOR UPDATE", (user_id,))
                active = one(cur.execute(
                    "SELECT count(*) AS n FROM api_tokens WHERE user_id = %s AND kind = 'api_key' "
                    "AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now())", (user_id,)))["n"]
                if active >= max_active:
                    raise TooManyKeys(f"user {user_id} already has {active} active API keys (at most {max_active}); "
                                      "revoke one (DELETE /api/v1/auth/api-keys/{key_id}) first")
            row = cur.execute(
                "INSERT INTO api_tokens (user_id, kind, token_hash, name, expires_at, parent_id) "
                "VALUES (%s, 'api_key', %s, %s, %s, %s) "
                "RETURNING id, user_id, name, created_at, expires_at, revoked_at, parent_id",
                (user_id, token_hash(token), name, expires_at, parent_id),
            ).fetchone()
            if row is None:  # INSERT … RETURNING gives its row or raises
                raise RuntimeError("inserting the API key returned no row")
    except BaseException:
        conn.rollback()
        raise
    conn.commit()
    return token, row


def list_api_keys(conn: psycopg.Connection, user_id: int | None) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            "SELECT id, user_id, name, created_at, expires_at, revoked_at, parent_id FROM api_tokens "
            "WHERE kind = 'api_key' AND (%(user)s::bigint IS NULL OR user_id = %(user)s) ORDER BY id",
            {"user": user_id},
        ).fetchall()


def revoke_token(conn: psycopg.Connection, token_id: int, *, owner: int | None) -> bool:
    """Revoke one token and every key it created (recursively); ``owner`` restricts it to that user's
    tokens (None: any). False when there is no such token (of the owner's)."""
    row = conn.execute(
        "SELECT id FROM api_tokens WHERE id = %s AND (%s::bigint IS NULL OR user_id = %s) FOR UPDATE",
        (token_id, owner, owner),
    ).fetchone()
    if row is None:
        conn.rollback()
        return False
    _revoke_with_descendants(conn, [token_id])
    conn.commit()
    return True


_REVOKE_TREE = """
WITH RECURSIVE tree (id) AS (
    SELECT id FROM api_tokens WHERE id = ANY(%s)
    UNION
    SELECT t.id FROM api_tokens t JOIN tree ON t.parent_id = tree.id
)
UPDATE api_tokens SET revoked_at = now() WHERE id IN (SELECT id FROM tree) AND revoked_at IS NULL
"""


def _revoke_with_descendants(conn: psycopg.Connection, roots: list[int]) -> None:
    """Revoke ``roots`` and everything created from them, in the caller's transaction. Repeated until
    nothing is left: a key created from a descendant while the first pass ran (it waited for that
    pass's row lock, so it is committed by now) is found by the next."""
    if not roots:
        return
    while conn.execute(_REVOKE_TREE, (roots,)).rowcount:
        pass


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
