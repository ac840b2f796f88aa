"""Request dependencies as ``Annotated`` aliases, and the checks of a request's period and bucket that
every route reading a time range shares."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Annotated

import psycopg
from fastapi import Depends, HTTPException, Path, Request

from core.settings import Settings


def _connection(request: Request) -> Iterator[psycopg.Connection]:
    with request.app.state.pool.connection() as conn:
        yield conn


def _settings(request: Request) -> Settings:
    return request.app.state.settings


DbConn = Annotated[psycopg.Connection, Depends(_connection)]
SettingsDep = Annotated[Settings, Depends(_settings)]


# The longest period any route reads in one request.
MAX_RANGE = timedelta(days=400)


def period(start: datetime | None, end: datetime | None, *, default: timedelta,
           longest: timedelta = MAX_RANGE) -> tuple[datetime, datetime]:
    """A request's period [start, end): times without a zone are UTC, ``end`` defaults to now and
    ``start`` to ``default`` before it; 422 unless start is before end and the period at most
    ``longest``."""
    end = utc(end) if end else datetime.now(UTC)
    start = utc(start) if start else end - default
    if start >= end:
        raise HTTPException(422, "start must be before end")
    if end - start > longest:
        raise HTTPException(422, f"a period covers at most {longest.days} days")
    return start, end


def utc(ts: datetime) -> datetime:
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


_BUCKET = re.compile(r"^(\d{1,6})(s|m|h|d)$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_bucket(text: str) -> timedelta:
    match = _BUCKET.match(text)
    if not match or int(match.group(1)) == 0:
        raise HTTPException(422, f"bucket must look like 30s, 5m, 1h or 1d, not {text!r}")
    return timedelta(seconds=int(match.group(1)) * _UNIT_S[match.group(2)])


# Identifiers of the service organisation's resources (stations, engineers, vans, warehouses) in paths.
ResourceId = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]
PartName = Annotated[str, Path(min_length=1, max_length=100)]


def one_or_404(rows: list[dict], what: str, resource_id: str) -> dict:
    if not rows:
        raise HTTPException(404, f"no {what} {resource_id!r}")
    return rows[0]
