"""The device registry, credentials, presence and remote commands."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, StringConstraints, model_validator

from core.device_messages import COMMAND_KINDS
from devices.commands import FINAL_STATES, OPEN_STATES
from devices.registry import DEVICE_STATES

# --- device registry, presence, remote commands ---

DeviceState = Literal[DEVICE_STATES]  # type: ignore[valid-type]
CommandKind = Literal[COMMAND_KINDS]  # type: ignore[valid-type]
CommandState = Literal[(*OPEN_STATES, *FINAL_STATES)]  # type: ignore[valid-type]
Identifier = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]


class DeviceCreate(BaseModel):
    """A controller registered on a machine. Give the machine's details (model, kind, customer) to
    register the machine at the same time; leave them out for a machine already registered."""

    equipment_id: Identifier
    serial: Identifier = Field(description="the controller's serial, which it provisions with")
    firmware: str | None = Field(None, max_length=64)
    commissioned_on: date | None = None
    report_interval_s: float = Field(1.0, gt=0, le=3600)
    equipment_serial: str | None = Field(None, max_length=64, description="the machine's own serial")
    model: str | None = Field(None, max_length=64)
    kind: str | None = Field(None, max_length=64)
    customer: str | None = Field(None, max_length=128)
    site: str | None = Field(None, max_length=128)


class DeviceUpdate(BaseModel):
    """Only the fields given change; customer, kind and site are the machine's."""

    firmware: str | None = Field(None, max_length=64)
    commissioned_on: date | None = None
    report_interval_s: float | None = Field(None, gt=0, le=3600)
    customer: str | None = Field(None, min_length=1, max_length=128)
    kind: str | None = Field(None, min_length=1, max_length=64)
    site: str | None = Field(None, max_length=128)

    @model_validator(mode="after")
    def _required_fields_are_not_cleared(self) -> DeviceUpdate:
        # Absent means "unchanged"; null would clear, which these fields cannot be.
        cleared = [name for name in ("report_interval_s", "customer", "kind")
                   if name in self.model_fields_set and getattr(self, name) is None]
        if cleared:
            raise ValueError(f"{', '.join(cleared)} cannot be null")
        return self


class DevicePublic(BaseModel):
    equipment_id: str
    serial: str
    equipment_serial: str
    model: str
    kind: str
    customer: str
    site: str | None
    firmware: str | None
    commissioned_on: date | None
    report_interval_s: float
    state: DeviceState
    credential_issued_at: datetime | None
    revoked_at: datetime | None
    created_at: datetime
    updated_at: datetime


class DevicesPublic(BaseModel):
    data: list[DevicePublic]
    count: int


class CredentialPublic(BaseModel):
    """Shown once: only a hash is kept."""

    equipment_id: str
    username: str
    password: str


class PresencePublic(BaseModel):
    equipment_id: str
    online: bool = Field(description="connected (status topic) and heard from within the offline limit")
    connected: bool | None = Field(description="what the retained status topic says; None: never reported")
    disconnect_reason: str | None = Field(description="clean (said goodbye) or lost (last will)")
    changed_at: datetime | None
    status_at: datetime | None
    last_seen: datetime | None
    last_telemetry_at: datetime | None
    signal_dbm: float | None
    firmware: str | None
    report_interval_s: float | None
    locked: bool | None


class CommandCreate(BaseModel):
    kind: CommandKind
    params: dict[str, Any] = Field(default_factory=dict,
                                   description="set_report_interval: interval_s and duration_s; others: none")
    timeout_s: float | None = Field(None, gt=0, le=7 * 86400, description="validity; default from settings")
    reason: str | None = Field(None, max_length=500, description="required for lock and unlock")


class CommandEventPublic(BaseModel):
    at: datetime
    state: str
    actor: str | None
    detail: str | None


class CommandPublic(BaseModel):
    id: str
    equipment_id: str
    kind: CommandKind
    params: dict[str, Any]
    state: CommandState
    requested_by: str | None
    reason: str | None
    created_at: datetime
    expires_at: datetime
    sent_at: datetime | None
    send_count: int
    acknowledged_at: datetime | None
    finished_at: datetime | None
    detail: str | None
    result: dict[str, Any] | None
    events: list[CommandEventPublic] | None = None


class CommandsPublic(BaseModel):
    data: list[CommandPublic]
    count: int
