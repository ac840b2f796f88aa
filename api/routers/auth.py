from __future__ import annotations

import logging
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
             responses={401: {"description": "wrong username or password"}})
def issue_token(form: Annotated[OAuth2PasswordRequestForm, Depends()], conn: DbConn,
                settings: SettingsDep) -> TokenPublic:
    """OAuth2 password flow: form fields ``username`` and ``password``; the token expires."""
    ttl = timedelta(minutes=settings.access_token_ttl_min)
    issued = accounts.login(conn, form.username, form.password, ttl)
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
    """Revoke the token this request carries."""
    accounts.revoke_token(conn, caller.token_id, owner=caller.user_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/auth/api-keys", response_model=ApiKeyCreated, status_code=status.HTTP_201_CREATED,
             responses={404: {"description": "no such user"}})
def create_api_key(body: ApiKeyCreate, caller: Annotated[Principal, require(*KEY_HOLDERS)],
                   conn: DbConn) -> ApiKeyCreated:
    """A long-lived key for an integration, acting as its owner (same role and customer)."""
    owner = caller.user_id
    if body.user_id is not None and body.user_id != caller.user_id:
        if caller.role is not Role.admin:
            raise HTTPException(404, f"no user {body.user_id}")
        if conn.execute("SELECT 1 FROM api_users WHERE id = %s", (body.user_id,)).fetchone() is None:
            raise HTTPException(404, f"no user {body.user_id}")
        owner = body.user_id
    expires_at = datetime.now(UTC) + timedelta(days=body.expires_in_days) if body.expires_in_days else None
    key, row = accounts.create_api_key(conn, owner, body.name, expires_at=expires_at)
    return ApiKeyCreated(**row, key=key)


@router.get("/auth/api-keys", response_model=ApiKeysPublic)
def list_api_keys(caller: Annotated[Principal, require(*KEY_HOLDERS)], conn: DbConn) -> ApiKeysPublic:
    """The caller's own keys (an admin sees every key)."""
    rows = accounts.list_api_keys(conn, None if caller.role is Role.admin else caller.user_id)
    return ApiKeysPublic(data=[ApiKeyPublic(**row) for row in rows], count=len(rows))


@router.delete("/auth/api-keys/{key_id}", status_code=status.HTTP_204_NO_CONTENT,
               responses={404: {"description": "no such key (of the caller's)"}})
def revoke_api_key(key_id: int, caller: Annotated[Principal, require(*KEY_HOLDERS)], conn: DbConn) -> Response:
    owner = None if caller.role is Role.admin else caller.user_id
    if not accounts.revoke_token(conn, key_id, owner=owner):
        raise HTTPException(404, f"no API key {key_id}")
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/users", response_model=UserPublic, status_code=status.HTTP_201_CREATED,
             dependencies=[require(Role.admin)],
             responses={409: {"description": "username taken"}, 422: {"description": "invalid role/customer"}})
def create_user(body: UserCreate, conn: DbConn) -> UserPublic:
    role = Role(body.role)
    if (role is Role.customer) != (body.customer is not None):
        raise HTTPException(422, "a customer account needs a customer, and only a customer account has one")
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
