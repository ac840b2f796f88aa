"""Service vans' position trackers: each van's broker credential (docs/protocol.md)."""

from __future__ import annotations

from pydantic import BaseModel, Field


class TrackerCredentialPublic(BaseModel):
    """Shown once: IronSight keeps only a hash of the password."""

    vehicle_id: str
    username: str = Field(description="the broker username: `vehicle~` and the vehicle id")
    password: str
    topic: str = Field(description="the only topic the tracker may publish to")
