"""Dead letters: the device input IronSight refused, for staff to see what a controller sends and
why it is refused. Staff only: a dead letter can be any customer's machine's, or no known machine's
at all (its topic names whatever the sender chose)."""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query

from api.auth import Staff
from api.deps import DbConn, utc
from api.schemas.dead_letters import (
    DeadLetterPublic,
    DeadLetterReasonPublic,
    DeadLetterReasonsPublic,
    DeadLettersPublic,
)
from ingest import dead_letters

router = APIRouter(prefix="/dead-letters", tags=["dead letters"])

MAX_PAGE = 500
# How much of a payload a listing shows; the table keeps up to 64 KiB of it.
PREVIEW_BYTES = 2048

Reason = Annotated[str | None, Query(max_length=100, description="a reason code, e.g. not_json")]
EquipmentId = Annotated[str | None, Query(max_length=64)]
Start = Annotated[datetime | None, Query(description="received at or after (UTC when no zone is given)")]
End = Annotated[datetime | None, Query(description="received before (UTC when no zone is given)")]


def _escaped(text: str) -> str:
    """``text`` with every non-printable character (controls, format characters such as bidi
    overrides, separators) written as a Python-style escape."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def _preview(payload: bytes) -> str:
    return _escaped(payload.decode("utf-8", "backslashreplace"))


def _range(start: datetime | None, end: datetime | None) -> tuple[datetime | None, datetime | None]:
    start, end = (utc(start) if start else None), (utc(end) if end else None)
    if start is not None and end is not None and start >= end:
        raise HTTPException(422, "start must be before end")
    return start, end


@router.get("", response_model=DeadLettersPublic)
def list_dead_letters(caller: Staff, conn: DbConn, reason: Reason = None, equipment_id: EquipmentId = None,
                      start: Start = None, end: End = None,
                      limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
                      offset: Annotated[int, Query(ge=0)] = 0) -> DeadLettersPublic:
    """Refused messages and readings, newest first, with a preview of their payload (the first
    2 KiB, as escaped text and as base64)."""
    start, end = _range(start, end)
    rows, count = dead_letters.list_dead_letters(conn, reason=reason, equipment_id=equipment_id, start=start,
                                                 end=end, limit=limit, offset=offset, preview_bytes=PREVIEW_BYTES)
    return DeadLettersPublic(data=[DeadLetterPublic(
        id=row["id"], received_at=row["received_at"], topic=_escaped(row["topic"]), equipment_id=row["equipment_id"],
        reason=_escaped(row["reason"]), detail=_escaped(row["detail"]) if row["detail"] is not None else None,
        payload_bytes=row["payload_bytes"], payload_preview=_preview(row["payload"]),
        payload_base64=base64.b64encode(row["payload"]).decode("ascii"),
        payload_truncated=len(row["payload"]) < row["payload_bytes"],
    ) for row in rows], count=count)


@router.get("/reasons", response_model=DeadLetterReasonsPublic)
def dead_letter_reasons(caller: Staff, conn: DbConn, equipment_id: EquipmentId = None, start: Start = None,
                        end: End = None) -> DeadLetterReasonsPublic:
    """How many dead letters per reason (most frequent first), with the first and the last one's time."""
    start, end = _range(start, end)
    rows = dead_letters.count_by_reason(conn, equipment_id=equipment_id, start=start, end=end)
    return DeadLetterReasonsPublic(data=[DeadLetterReasonPublic(**row) for row in rows],
                                   total=sum(row["count"] for row in rows))
