"""Faults with their diagnosis."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel


class FaultPublic(BaseModel):
    id: int
    equipment_id: str
    fault_code: str
    title: str | None
    severity: str
    rule: str
    rule_version: int
    started_at: datetime
    ended_at: datetime | None
    evidence: dict[str, Any]
    diagnosis: dict[str, Any] | None
    remote_resolvable: bool | None
    backfilled: bool


class FaultsPublic(BaseModel):
    data: list[FaultPublic]
    count: int
