"""Messages missing from the machines' telemetry, found from the controllers' sequence numbers:
what dispatchers look at before trusting a machine's history (a machine with gaps not yet healed
may have had a fault in them)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from api.auth import Reader
from api.deps import DbConn
from api.schemas.sequences import SequencePublic, SequencesPublic
from api.tenancy import customer_filter, ensure_visible
from ingest import sequences

router = APIRouter(tags=["sequence gaps"])

MAX_PAGE = 1000


@router.get("/sequence-gaps", response_model=SequencesPublic)
def list_machines_missing_messages(caller: Reader, conn: DbConn,
                                   customer: Annotated[str | None, Query(max_length=128)] = None,
                                   limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
                                   offset: Annotated[int, Query(ge=0)] = 0) -> SequencesPublic:
    """Machines with messages still missing (gaps not healed yet), the longest-waiting first."""
    rows, count = sequences.machines_missing_messages(conn, customer=customer_filter(caller, customer),
                                                      limit=limit, offset=offset)
    return SequencesPublic(data=[SequencePublic(**r) for r in rows], count=count)


@router.get("/equipment/{equipment_id}/sequence", response_model=SequencePublic)
def get_sequence(equipment_id: str, caller: Reader, conn: DbConn) -> SequencePublic:
    """The machine's message counts: received, duplicates, gaps found, healed, lost, still missing."""
    ensure_visible(conn, caller, "equipment", equipment_id)
    row = sequences.machine_sequence(conn, equipment_id)
    return SequencePublic(equipment_id=equipment_id) if row is None else SequencePublic(**row)
