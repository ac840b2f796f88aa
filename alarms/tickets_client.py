"""Opening tickets through the tickets API over HTTP; the alarm id makes every retry idempotent.

The worker authenticates with its own API key (a service account), never a person's credentials.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import httpx

log = logging.getLogger(__name__)

REQUEST_TIMEOUT_S = 10.0


@dataclass(frozen=True, slots=True)
class TicketRequest:
    alarm_id: int
    equipment_id: str
    fault_code: str
    severity: str
    title: str
    description: str = ""
    diagnosis: dict[str, Any] | None = None


class TicketsClient:
    def __init__(self, base_url: str, api_key: str | None = None) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(base_url=base_url, timeout=REQUEST_TIMEOUT_S, headers=headers)

    def open_ticket(self, request: TicketRequest) -> int:
        """Return the ticket id; the same alarm always yields the same ticket."""
        response = self._http.post(
            "/api/v1/tickets",
            json={
                "equipment_id": request.equipment_id,
                "title": request.title,
                "priority": request.severity,
                "source_alarm_id": request.alarm_id,
                "fault_code": request.fault_code,
                "description": request.description,
                "diagnosis": request.diagnosis,
                "remote_resolvable": request.diagnosis.get("remote_resolvable") if request.diagnosis else None,
            },
            headers={"Idempotency-Key": f"alarm-{request.alarm_id}"},
        )
        response.raise_for_status()
        return int(response.json()["id"])

    def close(self) -> None:
        self._http.close()
