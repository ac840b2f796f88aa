"""Accounts, tokens and API keys."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, Field, StringConstraints

from api.roles import Role

# Built from Role at import: pydantic reads it, type checkers cannot (hence the ignore).
_ROLE_NAMES = tuple(role.value for role in Role)
RoleName = Literal[_ROLE_NAMES]  # type: ignore[valid-type]
Username = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,99}$")]


class TokenPublic(BaseModel):
    access_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int = Field(description="seconds until the token expires")
    expires_at: datetime


class MePublic(BaseModel):
    username: str
    role: RoleName
    customer: str | None


class UserCreate(BaseModel):
    username: Username
    role: RoleName
    password: str | None = Field(None, min_length=12, max_length=200,
                                 description="for people (password flow); service accounts use API keys")
    customer: str | None = Field(None, min_length=1, max_length=100, description="required for role customer")


class UserPublic(BaseModel):
    id: int
    username: str
    role: RoleName
    customer: str | None
    active: bool
    created_at: datetime


class UsersPublic(BaseModel):
    data: list[UserPublic]
    count: int


class UserActiveUpdate(BaseModel):
    active: bool = Field(description="false disables the account and revokes its tokens")


class ApiKeyCreate(BaseModel):
    name: str = Field(min_length=1, max_length=100)
    user_id: int | None = Field(None, ge=1, description="admin only: the key's owner (default: the caller)")
    expires_in_days: int | None = Field(None, ge=1, le=3650, description="default: until revoked")


class ApiKeyPublic(BaseModel):
    id: int
    user_id: int
    name: str | None
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None


class ApiKeyCreated(ApiKeyPublic):
    key: str = Field(description="shown once; only its hash is stored")


class ApiKeysPublic(BaseModel):
    data: list[ApiKeyPublic]
    count: int
