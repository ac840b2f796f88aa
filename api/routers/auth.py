from __future__ import annotations

import logging
import math
from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Response, status
from fastapi.security import OAuth2PasswordRequestForm

from api import accounts
from api.auth import AnyCaller, public, require
from api.deps import DbConn, SettingsDep
from api.roles import Principal, Role
from api.schemas.accounts import (
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyPublic,
    ApiKeysPublic,
    MePublic,
    TokenPublic,
    UserActiveUpdate,
    UserCreate,
    UserPublic,
    UsersPublic,
)

log = logging.getLogger(__name__)

router = APIRouter(tags=["auth"])

# Service accounts use the keys an admin gives them; they do not mint their own.
KEY_HOLDERS = (Role.admin, Role.dispatcher, Role.engineer, Role.customer)


@router.post("/auth/token", response_model=TokenPublic, dependencies=[public()],
             responses={401: {"description": "wrong username or password"},
                        429: {"description": "too many failed logins for this username (Retry-After says when "
                                             "the next attempt is checked), or too many requests"}})
def issue_token(form: Annotated[OAuth2PasswordRequestForm, Depends()], conn: DbConn,
                settings: SettingsDep) -> TokenPublic:
    """OAuth2 password flow: form fields ``username`` and ``password``; the token expires.

    Failed logins are counted per username (whether it exists or not): after
    `IRONSIGHT_LOGIN_FAILURES_BEFORE_LOCKOUT` in a row the username is locked, and every further failure
    doubles the wait. While it is locked every attempt is answered 429, right password or not."""
    ttl = timedelta(minutes=settings.access_token_ttl_min)
    try:
        issued = accounts.login(conn, form.username, form.password, ttl, accounts.LoginPolicy.from_settings(settings))
    except accounts.LoginThrottled as exc:
        log.warning("login refused for %r: locked after failed logins", form.username[:100])
        raise HTTPException(429, str(exc), headers={"Retry-After": str(max(1, math.ceil(exc.retry_after_s)))}) \
            from None
    if issued is None:
        log.info("failed login for %r", form.username[:100])
        raise HTTPException(401, "wrong username or password", headers={"WWW-Authenticate": "Bearer"})
    token, expires_at = issued
    return TokenPublic(access_token=token, expires_in=int(ttl.total_seconds()), expires_at=expires_at)


@router.get("/auth/me", response_model=MePublic)
def me(caller: AnyCaller) -> MePublic:
    return MePublic(username=caller.username, role=caller.role.value, customer=caller.customer)


@router.post("/auth/logout", status_code=status.HTTP_204_NO_CONTENT)
def logout(caller: AnyCaller, conn: DbConn) -> Response:
    """Revoke the token this request carries, and every API key created with it."""
    accounts.revoke_token(conn, caller.token_id, owner=caller.user_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/auth/api-keys", response_model=ApiKeyCreated, status_code=status.HTTP_201_CREATED,
             responses={404: {"description": "no such user"},
                        409: {"description": "the owner already holds the most active API keys allowed"}})
def create_api_key(body: ApiKeyCreate, caller: Annotated[Principal, require(*KEY_HOLDERS)],
                   conn: DbConn, settings: SettingsDep) -> ApiKeyCreated:
    """A key for an integration, acting as its owner (the owner's role and customer, never more).

    The key descends from the credential this request carries: it expires no later than that
    credential (`expires_at` in the answer says when), and revoking that credential (logout, DELETE of
    the key, disabling its account) revokes this key and every key made with it. An account holds at
    most `IRONSIGHT_API_KEYS_PER_USER_MAX` active keys."""
    owner = caller.user_id
    if body.user_id is not None and body.user_id != caller.user_id:
        if caller.role is not Role.admin:
            raise HTTPException(404, f"no user {body.user_id}")
        if conn.execute("SELECT 1 FROM api_users WHERE id = %s", (body.user_id,)).fetchone() is None:
            raise HTTPException(404, f"no user {body.user_id}")
        owner = body.user_id
    expires_at = datetime.now(UTC) + timedelta(days=body.expires_in_days) if body.expires_in_days else None
    try:
        key, row = accounts.create_api_key(conn, owner, body.name, expires_at=expires_at, parent_id=caller.token_id,
                                           max_active=settings.api_keys_per_user_max)
    except accounts.TooManyKeys as exc:
        raise HTTPException(409, str(exc)) from None
    except accounts.CredentialRevoked:
        raise HTTPException(401, "invalid, expired or revoked token", headers={"WWW-Authenticate": "Bearer"}) from None
    return ApiKeyCreated(**row, key=key)


@router.get("/auth/api-keys", response_model=ApiKeysPublic)
def list_api_keys(caller: Annotated[Principal, require(*KEY_HOLDERS)], conn: DbConn) -> ApiKeysPublic:
    """The caller's own keys (an admin sees every key)."""
    rows = accounts.list_api_keys(conn, None if caller.role is Role.admin else caller.user_id)
    return ApiKeysPublic(data=[ApiKeyPublic(**row) for row in rows], count=len(rows))


@router.delete("/auth/api-keys/{key_id}", status_code=status.HTTP_204_NO_CONTENT,
               responses={404: {"description": "no such key (of the caller's)"}})
def revoke_api_key(key_id: int, caller: Annotated[Principal, require(*KEY_HOLDERS)], conn: DbConn) -> Response:
    """Revoke the key and every key created with it (recursively)."""
    owner = None if caller.role is Role.admin else caller.user_id
    if not accounts.revoke_token(conn, key_id, owner=owner):
        raise HTTPException(404, f"no API key {key_id}")
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/users", response_model=UserPublic, status_code=status.HTTP_201_CREATED,
             dependencies=[require(Role.admin)],
             responses={409: {"description": "username taken"},
                        422: {"description": "invalid role/customer, a customer not on record, or a "
                                             "password the policy refuses"}})
def create_user(body: UserCreate, conn: DbConn) -> UserPublic:
    """An account. A customer account is bound to a customer on record (``/customers``); the
    password must pass the policy (docs/api.md)."""
    role = Role(body.role)
    if (role is Role.customer) != (body.customer is not None):
        raise HTTPException(422, "a customer account needs a customer, and only a customer account has one")
    if body.customer is not None and not accounts.customer_registered(conn, body.customer):
        raise HTTPException(422, f"no customer {body.customer!r} on record (POST /api/v1/customers first)")
    try:
        return UserPublic(**accounts.create_user(conn, body.username, role, password=body.password,
                                             customer=body.customer))
    except accounts.UsernameTaken as exc:
        raise HTTPException(409, str(exc)) from None


@router.get("/users", response_model=UsersPublic, dependencies=[require(Role.admin)])
def list_users(conn: DbConn) -> UsersPublic:
    rows = accounts.list_users(conn)
    return UsersPublic(data=[UserPublic(**row) for row in rows], count=len(rows))


@router.patch("/users/{user_id}", response_model=UserPublic,
              responses={404: {"description": "no such user"}, 409: {"description": "an admin disabling itself"}})
def set_user_active(user_id: int, body: UserActiveUpdate, caller: Annotated[Principal, require(Role.admin)],
                    conn: DbConn) -> UserPublic:
    if user_id == caller.user_id and not body.active:
        # The last admin could lock everyone out; another admin can do it.
        raise HTTPException(409, "an admin cannot disable its own account")
    row = accounts.set_active(conn, user_id, body.active)
    if row is None:
        raise HTTPException(404, f"no user {user_id}")
    return UserPublic(**row)
