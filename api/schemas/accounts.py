"""Accounts, tokens and API keys."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, Field, StringConstraints, ValidationInfo, field_validator

from api.credentials import PASSWORD_MAX_LENGTH, PASSWORD_MIN_LENGTH, password_problem
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
    password: str | None = Field(None, min_length=PASSWORD_MIN_LENGTH, max_length=PASSWORD_MAX_LENGTH,
                                 description="for people (password flow); service accounts use API keys. At least "
                                             "12 characters of which 5 different, not containing the username, "
                                             "not one of the most common passwords")
    customer: str | None = Field(None, min_length=1, max_length=100,
                                 description="required for role customer: a customer of the fleet register")

    @field_validator("password")
    @classmethod
    def _password_policy(cls, password: str | None, info: ValidationInfo) -> str | None:
        if password is not None:
            problem = password_problem(password, info.data.get("username"))
            if problem is not None:
                raise ValueError(problem)
        return password


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
    expires_in_days: int | None = Field(None, ge=1, le=3650,
                                        description="default: until revoked; never later than the credential "
                                                    "that creates the key expires")


class ApiKeyPublic(BaseModel):
    id: int
    user_id: int
    name: str | None
    created_at: datetime
    expires_at: datetime | None = Field(description="never later than the expiry of the credential that created it")
    revoked_at: datetime | None
    parent_id: int | None = Field(None, description="the token or key that created this key; revoking it revokes "
                                                    "this key too")


class ApiKeyCreated(ApiKeyPublic):
    key: str = Field(description="shown once; only its hash is stored")


class ApiKeysPublic(BaseModel):
    data: list[ApiKeyPublic]
    count: int
