from __future__ import annotations

from datetime import datetime, timedelta

from fastapi import APIRouter

from api.auth import STAFF_ONLY, Reader
from api.deps import DbConn, period
from api.schemas.kpis import KpisPublic, SatisfactionGrouping, SatisfactionPublic, SatisfactionRowPublic
from api.tenancy import customer_filter
from tickets.kpis import compute_kpis, satisfaction

router = APIRouter(prefix="/kpis", tags=["kpis"])

DEFAULT_PERIOD = timedelta(days=30)


@router.get("", response_model=KpisPublic,
            description="Service KPIs over the tickets created in [start, end) (default: the last 30 days): "
                        "remote resolution and "
                        "first-time-fix rates, respond/arrive/resolve SLA compliance with the scheduler's "
                        "warnings and breaches, mean and p90 time to respond and to resolve (hours), open "
                        "backlog by state, mean of each callback-survey indicator. After the repair, each over "
                        "its own population: the callbacks due in the period (done on time, overdue, "
                        "unreachable, attempts), the complaints opened in it (by state, closed within the "
                        "week, sent back, escalated, departments' answers on time), and the tickets that "
                        "entered remote diagnosis in it (minutes until the next step, share within the "
                        "contract tier's limit). Filter by `customer`, `engineer` or service `station` (the "
                        "tickets its engineers were sent to).")
def get_kpis(caller: Reader, conn: DbConn, start: datetime | None = None,
             end: datetime | None = None, customer: str | None = None, engineer: str | None = None,
             station: str | None = None) -> KpisPublic:
    start, end = period(start, end, default=DEFAULT_PERIOD)
    customer = customer_filter(caller, customer)
    return KpisPublic(**compute_kpis(conn, start, end, customer=customer, engineer=engineer, station=station))


@router.get("/satisfaction", response_model=SatisfactionPublic, dependencies=STAFF_ONLY,
            description="Callback satisfaction per `engineer` or service `station` (`by`), worst first: over the "
                        "tickets created in [start, end) (default: the last 30 days) they were sent to, the "
                        "number of first callback surveys, the mean of each of the six indicators and of all "
                        "six, the surveys low enough for a complaint, and the complaints recorded. Staff only.")
def get_satisfaction(conn: DbConn, start: datetime | None = None, end: datetime | None = None,
                     by: SatisfactionGrouping = "engineer") -> SatisfactionPublic:
    start, end = period(start, end, default=DEFAULT_PERIOD)
    rows = [SatisfactionRowPublic(**row) for row in satisfaction(conn, start, end, by=by)]
    return SatisfactionPublic(start=start, end=end, by=by, data=rows, count=len(rows))
