"""Dispatch proposals.

A dispatcher reads ``GET /dispatch/proposals`` (every waiting ticket assigned jointly) or
``GET /tickets/{id}/dispatch-options`` (every qualified engineer for one ticket, best first), then
confirms or overrides with ``POST /tickets/{id}/actions/dispatch`` (``engineer``, optional
``warehouse``). Staff may read them."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, HTTPException

from api.auth import STAFF_ONLY
from api.deps import DbConn, SettingsDep
from api.schemas.dispatch import (
    DispatchPlanPublic,
    DispatchProposalPublic,
)
from tickets import dispatch, service

router = APIRouter(tags=["dispatch"])


@router.get("/dispatch/proposals", dependencies=STAFF_ONLY, response_model=DispatchProposalPublic,
            description="Every ticket waiting for a visit, assigned jointly to the available engineers so that "
                        "the sum of priority-weighted arrival times is least. Confirm one with "
                        "`POST /tickets/{id}/actions/dispatch`.")
def get_proposals(conn: DbConn, settings: SettingsDep) -> dict:
    return dispatch.propose(conn, datetime.now(UTC), dispatch.TravelModel.from_settings(settings))


@router.get("/tickets/{ticket_id}/dispatch-options", dependencies=STAFF_ONLY, response_model=list[DispatchPlanPublic],
            description="Every available, qualified engineer's best trip to this ticket's machine, best first.")
def get_ticket_options(ticket_id: int, conn: DbConn, settings: SettingsDep) -> list[dict]:
    if service.get_ticket(conn, ticket_id) is None:
        raise HTTPException(404, f"no ticket {ticket_id}")
    now = datetime.now(UTC)
    plans = dispatch.ticket_options(conn, ticket_id, now, dispatch.TravelModel.from_settings(settings))
    return [plan.as_dict(now) for plan in plans]
