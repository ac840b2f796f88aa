"""The customer portal: a customer's own fleet, one machine's history, usage, track, service record
and a CSV export. Staff may call it too (for any customer's machine)."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import StreamingResponse

from alarms import queries as alarm_queries
from api.auth import Reader
from api.deps import DbConn, SettingsDep, parse_bucket, period
from api.schemas.equipment import ReadingPublic, ReadingsPublic
from api.schemas.portal import (
    DailyUsagePublic,
    FleetMachinePublic,
    FleetPublic,
    ServiceRecordPublic,
    TrackPointPublic,
    TrackPublic,
    UsagePublic,
)
from api.schemas.service_records import RecordedServicePublic
from api.schemas.tickets import TicketPublic
from api.tenancy import customer_filter, ensure_visible
from core.telemetry import CHANNELS
from diagnostics.rulebook import rulebook_for
from diagnostics.rules import ServiceDue
from ingest import queries
from tickets import service, service_records

router = APIRouter(prefix="/portal", tags=["portal"])

MAX_PAGE = 1000
# A chart wants a few hundred points, not a million: history picks the smallest bucket that keeps
# the answer under this many points; short ranges come raw.
HISTORY_MAX_POINTS = 1000
RAW_UP_TO = timedelta(hours=6)
BUCKET_LADDER = [timedelta(seconds=s) for s in (60, 300, 900, 3600, 6 * 3600, 86400, 7 * 86400)]
TRACK_MAX_POINTS = 5000
MAX_SERVICE_RECORD = 200
DEFAULT_HISTORY = timedelta(hours=24)
DEFAULT_USAGE = timedelta(days=30)



def auto_bucket(span: timedelta, max_points: int) -> timedelta | None:
    if span <= RAW_UP_TO and max_points >= HISTORY_MAX_POINTS:
        return None
    for step in BUCKET_LADDER:
        if span / step <= max_points:
            return step
    return BUCKET_LADDER[-1]


def next_service_due(model: str, engine_hours: float | None, last_service: float | None) -> float | None:
    """The engine-hour reading of the next service, as the service-due rule counts it."""
    rule = next((r for r in rulebook_for(model).rules if isinstance(r, ServiceDue)), None)
    if rule is None or engine_hours is None:
        return None
    serviced = rule.last_boundary(engine_hours) if last_service is None else last_service
    return float(rule.due_at(serviced))


@router.get("/fleet", response_model=FleetPublic)
def fleet(caller: Reader, conn: DbConn, settings: SettingsDep, customer: str | None = None,
          limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
          offset: Annotated[int, Query(ge=0)] = 0) -> FleetPublic:
    """My equipment: model, serial, last position, online, engine hours, fuel, active alarms and the
    next service due."""
    rows, count = queries.list_equipment(conn, offline_after_s=settings.offline_after_s,
                                         customer=customer_filter(caller, customer), limit=limit, offset=offset)
    ids = [r["id"] for r in rows]
    alarms = alarm_queries.active_counts(conn, ids)
    serviced = queries.last_service_hours(conn, ids)
    data = []
    for r in rows:
        due = next_service_due(r["model"], r["engine_hours"], serviced.get(r["id"]))
        data.append(FleetMachinePublic(
            **{k: r[k] for k in ("id", "serial", "model", "kind", "site", "customer", "online", "last_ts", "lat",
                                 "lon", "engine_hours", "fuel_level_pct")},
            active_alarms=alarms.get(r["id"], 0), next_service_due_hours=due,
            hours_to_next_service=None if due is None else round(due - r["engine_hours"], 2)))
    return FleetPublic(data=data, count=count)


@router.get("/equipment/{equipment_id}/history", response_model=ReadingsPublic,
            responses={404: {"description": "no such equipment (of the caller's)"}})
def history(equipment_id: str, caller: Reader, conn: DbConn, start: datetime | None = None,
            end: datetime | None = None,
            bucket: Annotated[str | None, Query(description="30s, 5m, 1h, 1d …; default: raw up to 6 h, "
                                                            "else the smallest bucket giving ≤ max_points")] = None,
            max_points: Annotated[int, Query(ge=10, le=HISTORY_MAX_POINTS)] = HISTORY_MAX_POINTS) -> ReadingsPublic:
    """One machine's readings over any period up to 400 days (default: the last 24 h), downsampled."""
    start, end = period(start, end, default=DEFAULT_HISTORY)
    step = parse_bucket(bucket) if bucket else auto_bucket(end - start, max_points)
    if step is not None and (end - start) / step > max_points:
        raise HTTPException(422, f"bucket too small: more than {max_points} points; choose a larger one")
    ensure_visible(conn, caller, "equipment", equipment_id)
    rows = queries.readings(conn, equipment_id, start, end, step, max_points)
    return ReadingsPublic(equipment_id=equipment_id, start=start, end=end,
                          bucket_s=step.total_seconds() if step else None,
                          data=[ReadingPublic(**row) for row in rows], count=len(rows))


@router.get("/equipment/{equipment_id}/track", response_model=TrackPublic,
            responses={404: {"description": "no such equipment (of the caller's)"}})
def track(equipment_id: str, caller: Reader, conn: DbConn, start: datetime | None = None,
          end: datetime | None = None) -> TrackPublic:
    """Where the machine went (default: the last 24 h): every fix, or the last fix per bucket when
    there would be more than 5000."""
    start, end = period(start, end, default=DEFAULT_HISTORY)
    ensure_visible(conn, caller, "equipment", equipment_id)
    span = end - start
    step = None if span <= RAW_UP_TO else auto_bucket(span, TRACK_MAX_POINTS)
    rows = queries.track(conn, equipment_id, start, end, step, TRACK_MAX_POINTS)
    return TrackPublic(equipment_id=equipment_id, start=start, end=end,
                       bucket_s=step.total_seconds() if step else None,
                       data=[TrackPointPublic(**row) for row in rows], count=len(rows))


@router.get("/equipment/{equipment_id}/usage", response_model=UsagePublic,
            responses={404: {"description": "no such equipment (of the caller's)"}})
def usage(equipment_id: str, caller: Reader, conn: DbConn, start: datetime | None = None,
          end: datetime | None = None) -> UsagePublic:
    """Daily usage (UTC days, default: the last 30): engine hours, working and idle hours, fuel used."""
    start, end = period(start, end, default=DEFAULT_USAGE)
    ensure_visible(conn, caller, "equipment", equipment_id)
    rows = [DailyUsagePublic(**r) for r in queries.daily_usage(conn, equipment_id, start, end)]
    return UsagePublic(equipment_id=equipment_id, start=start, end=end, data=rows, count=len(rows))


@router.get("/equipment/{equipment_id}/service-record", response_model=ServiceRecordPublic,
            responses={404: {"description": "no such equipment (of the caller's)"}})
def service_record(equipment_id: str, caller: Reader, conn: DbConn, settings: SettingsDep) -> ServiceRecordPublic:
    """Every work order of the machine with its timeline, engineer, parts used and surveys; the services
    done, the latest first, and the next one due, counted from the services recorded. Alarms and faults
    are at /alarms and /faults with ``?equipment_id=``."""
    ensure_visible(conn, caller, "equipment", equipment_id)
    machine = queries.get_equipment(conn, equipment_id, offline_after_s=settings.offline_after_s)
    if machine is None:  # seen a moment ago; gone only if deleted meanwhile
        raise HTTPException(404, f"no equipment {equipment_id!r}")
    rows, count = service.list_tickets(conn, equipment_id=equipment_id, state=None, limit=MAX_SERVICE_RECORD,
                                       offset=0)
    tickets = []
    for r in rows:
        ticket = service.get_ticket(conn, r["id"])
        if ticket is None:  # listed a moment ago; gone only if its machine was deleted meanwhile
            raise RuntimeError(f"ticket {r['id']} vanished while reading the service record")
        tickets.append(TicketPublic(**ticket))
    done, done_count = service_records.list_service_records(conn, equipment_id, limit=MAX_SERVICE_RECORD, offset=0)
    services = [RecordedServicePublic(**row) for row in done]
    serviced = queries.last_service_hours(conn, [equipment_id]).get(equipment_id)
    due = next_service_due(machine["model"], machine["engine_hours"], serviced)
    return ServiceRecordPublic(
        equipment_id=equipment_id, data=tickets, count=count, services=services, services_count=done_count,
        last_service=services[0] if services else None, last_service_hours=serviced,
        engine_hours=machine["engine_hours"], next_service_due_hours=due,
        hours_to_next_service=None if due is None else round(due - machine["engine_hours"], 2))


@router.get("/equipment/{equipment_id}/export.csv", response_class=StreamingResponse,
            responses={200: {"content": {"text/csv": {}}, "description": "one row per reading"},
                       404: {"description": "no such equipment (of the caller's)"}})
def export_csv(equipment_id: str, caller: Reader, conn: DbConn, request: Request,
               start: datetime | None = None, end: datetime | None = None) -> StreamingResponse:
    """Raw readings of a period (default: the last 24 h, at most 400 days) as CSV, streamed as it is read."""
    start, end = period(start, end, default=DEFAULT_HISTORY)
    ensure_visible(conn, caller, "equipment", equipment_id)
    pool = request.app.state.pool

    def rows() -> Iterator[str]:
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(["ts", *CHANNELS])
        # Its own connection: the request's goes back to the pool before the body is sent.
        with pool.connection() as own:
            for row in queries.stream_readings(own, equipment_id, start, end):
                writer.writerow([row[0].isoformat(), *("" if v is None else v for v in row[1:])])
                if buffer.tell() > 65536:
                    yield buffer.getvalue()
                    buffer.seek(0)
                    buffer.truncate()
        yield buffer.getvalue()

    filename = f"{equipment_id}_{start:%Y%m%dT%H%M%S}_{end:%Y%m%dT%H%M%S}.csv"
    return StreamingResponse(rows(), media_type="text/csv",
                             headers={"Content-Disposition": f'attachment; filename="{filename}"'})
