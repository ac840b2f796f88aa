"""Refused device input (dead letters), as staff see it: what came, on which topic, and why it was
refused; the payload as a bounded preview, never as raw bytes a client might render."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field


class DeadLetterPublic(BaseModel):
    id: int
    received_at: datetime
    topic: str = Field(description="the MQTT topic, non-printable characters escaped")
    equipment_id: str | None
    reason: str = Field(description="the stable reason code (docs/protocol.md)")
    detail: str | None = Field(description="what exactly was wrong, non-printable characters escaped")
    payload_bytes: int = Field(description="the payload's size as received")
    payload_preview: str = Field(description="the payload's first bytes as text: UTF-8 where it is, other bytes "
                                             "as \\xNN, control characters escaped")
    payload_base64: str = Field(description="the same first bytes, base64-encoded")
    payload_truncated: bool = Field(description="the preview is shorter than the payload")


class DeadLettersPublic(BaseModel):
    data: list[DeadLetterPublic]
    count: int


class DeadLetterReasonPublic(BaseModel):
    reason: str
    count: int
    first_at: datetime
    last_at: datetime


class DeadLetterReasonsPublic(BaseModel):
    data: list[DeadLetterReasonPublic]
    total: int
