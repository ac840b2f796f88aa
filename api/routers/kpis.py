from __future__ import annotations

from datetime import datetime, timedelta

from fastapi import APIRouter

from api.auth import Reader
from api.deps import DbConn, period
from api.schemas.kpis import KpisPublic
from api.tenancy import customer_filter
from tickets.kpis import compute_kpis

router = APIRouter(prefix="/kpis", tags=["kpis"])

DEFAULT_PERIOD = timedelta(days=30)


@router.get("", response_model=KpisPublic,
            description="Service KPIs over the tickets created in [start, end) (default: the last 30 days): "
                        "remote resolution and "
                        "first-time-fix rates, respond/arrive/resolve SLA compliance with the scheduler's "
                        "warnings and breaches, mean and p90 time to respond and to resolve (hours), open "
                        "backlog by state, mean of each callback-survey indicator. Filter by `customer`, "
                        "`engineer` or service `station` (the tickets its engineers were sent to).")
def get_kpis(caller: Reader, conn: DbConn, start: datetime | None = None,
             end: datetime | None = None, customer: str | None = None, engineer: str | None = None,
             station: str | None = None) -> KpisPublic:
    start, end = period(start, end, default=DEFAULT_PERIOD)
    customer = customer_filter(caller, customer)
    return KpisPublic(**compute_kpis(conn, start, end, customer=customer, engineer=engineer, station=station))
