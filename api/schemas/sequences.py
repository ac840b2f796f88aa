"""What a machine's message sequence numbers say: messages missing, healed, lost (ingest.sequences)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field


class MissingRangePublic(BaseModel):
    first: int
    last: int
    detected_at: datetime


class SequencePublic(BaseModel):
    equipment_id: str
    high_seq: int | None = Field(default=None, description="the highest sequence number received since then (none yet: "
                                                   "no message of the machine has settled)")
    messages: int = Field(default=0, description="messages received, repeats included")
    duplicates: int = Field(default=0, description="messages received again (harmless: stored once)")
    gaps: int = Field(default=0, description="gaps found in the sequence")
    missed: int = Field(default=0, description="messages found missing in those gaps")
    healed: int = Field(default=0, description="missing messages that arrived later (late, or sent again on a resend)")
    lost: int = Field(default=0, description="missing messages given up: not resent in time, or the counter "
                                             "started again")
    restarts: int = Field(default=0, description="times the controller's counter started again")
    missing_now: int = Field(default=0, description="messages still missing")
    missing_since: datetime | None = Field(default=None, description="when the oldest gap still open was found")
    missing: list[MissingRangePublic] = Field(default_factory=list, description="the gaps still open, oldest first")
    updated_at: datetime | None = None


class SequencesPublic(BaseModel):
    data: list[SequencePublic]
    count: int
