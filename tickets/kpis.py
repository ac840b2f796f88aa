"""Service KPIs over the tickets created in a window (optionally one customer's, one engineer's, or
one service station's: the tickets its engineers were sent to).

- remote resolution rate: resolved remotely / resolved.
- first-time-fix rate: on-site resolutions fixed at the first visit / on-site resolutions.
- SLA compliance per timer (respond, arrive, resolve): met / decided, where a timer is decided once
  it stopped or its deadline passed (a ticket still waiting past its deadline counts as missed);
  rejected and cancelled tickets count for the response only. The scheduler's warnings and breaches
  (``ticket_sla_alerts``) are counted alongside.
- time to respond (created → first step out of 'created') and to resolve (created → resolved, the
  MTTR): mean and 90th percentile, in hours.
- late-arrival warnings: visits whose tracked ETA passed the promised arrival.
- open backlog by state: tickets open now that were created before the window's end.
- survey: the mean of each indicator over the first callbacks, the number of complaints.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row

from core.db import one
from tickets.service import COMPLAINT_SCORE_MAX, SURVEY_INDICATORS
from tickets.sla import TIMERS
from tickets.workflow import OPEN_STATES

_POPULATION = """
    SELECT t.* FROM tickets t JOIN equipment e ON e.id = t.equipment_id
    WHERE t.created_at >= %(start)s AND t.created_at < %(end)s
      AND (%(customer)s::text IS NULL OR e.customer = %(customer)s)
      AND (%(engineer)s::text IS NULL OR t.engineer = %(engineer)s)
      AND (%(station)s::text IS NULL OR t.engineer IN (SELECT id FROM engineers WHERE station_id = %(station)s))
"""

_TOTALS = f"""
WITH p AS ({_POPULATION})
SELECT count(*) AS tickets,
       count(*) FILTER (WHERE resolved_at IS NOT NULL) AS resolved,
       count(*) FILTER (WHERE resolution = 'remote') AS resolved_remotely,
       count(*) FILTER (WHERE resolution = 'on_site') AS resolved_on_site,
       count(*) FILTER (WHERE resolution = 'on_site' AND first_time_fix) AS first_time_fixes,
       count(*) FILTER (WHERE state = 'closed') AS closed,
       count(*) FILTER (WHERE late_warned_at IS NOT NULL) AS late_arrival_warnings,
       count(*) FILTER (WHERE responded_at IS NOT NULL OR respond_by <= %(now)s) AS respond_decided,
       count(*) FILTER (WHERE responded_at <= respond_by) AS respond_met,
       count(*) FILTER (WHERE arrive_by IS NOT NULL AND (arrived_at IS NOT NULL
                        OR arrive_by <= LEAST(%(now)s, COALESCE(resolved_at, ended_at, %(now)s)))) AS arrive_decided,
       count(*) FILTER (WHERE arrived_at <= arrive_by) AS arrive_met,
       count(*) FILTER (WHERE resolved_at IS NOT NULL OR (ended_at IS NULL AND resolve_by <= %(now)s))
           AS resolve_decided,
       count(*) FILTER (WHERE resolved_at <= resolve_by) AS resolve_met,
       count(responded_at) AS respond_n,
       avg(extract(epoch FROM responded_at - created_at)) / 3600 AS respond_mean_h,
       percentile_cont(0.9) WITHIN GROUP (ORDER BY extract(epoch FROM responded_at - created_at)) / 3600
           AS respond_p90_h,
       count(resolved_at) AS resolve_n,
       avg(extract(epoch FROM resolved_at - created_at)) / 3600 AS resolve_mean_h,
       percentile_cont(0.9) WITHIN GROUP (ORDER BY extract(epoch FROM resolved_at - created_at)) / 3600
           AS resolve_p90_h
FROM p
"""

_ALERTS = f"""
WITH p AS ({_POPULATION})
SELECT a.timer, a.kind, count(*) AS n FROM ticket_sla_alerts a JOIN p ON p.id = a.ticket_id
GROUP BY a.timer, a.kind
"""

_BACKLOG = """
SELECT t.state, count(*) AS n FROM tickets t JOIN equipment e ON e.id = t.equipment_id
WHERE t.state = ANY(%(open)s) AND t.created_at < %(end)s
  AND (%(customer)s::text IS NULL OR e.customer = %(customer)s)
  AND (%(engineer)s::text IS NULL OR t.engineer = %(engineer)s)
  AND (%(station)s::text IS NULL OR t.engineer IN (SELECT id FROM engineers WHERE station_id = %(station)s))
GROUP BY t.state
"""

_SURVEYS = f"""
WITH p AS ({_POPULATION})
SELECT count(*) AS surveys,
       count(*) FILTER (WHERE LEAST({', '.join('s.' + i for i in SURVEY_INDICATORS)}) <= {COMPLAINT_SCORE_MAX})
           AS complaints,
       {', '.join(f'avg(s.{i})::float8 AS {i}' for i in SURVEY_INDICATORS)}
FROM ticket_surveys s JOIN p ON p.id = s.ticket_id WHERE s.round = 1
"""


def _rate(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


def compute_kpis(conn: psycopg.Connection, start: datetime, end: datetime, *, customer: str | None = None,
                 engineer: str | None = None, station: str | None = None,
                 now: datetime | None = None) -> dict[str, Any]:
    with conn.cursor(row_factory=dict_row) as cur:
        if now is None:
            now = one(cur.execute("SELECT now() AS now"))["now"]
        params = {"start": start, "end": end, "customer": customer, "engineer": engineer, "station": station,
                  "now": now,
                  "open": list(OPEN_STATES)}
        t = one(cur.execute(_TOTALS, params))
        alerts = {(r["timer"], r["kind"]): r["n"] for r in cur.execute(_ALERTS, params)}
        backlog = {r["state"]: r["n"] for r in cur.execute(_BACKLOG, params)}
        s = one(cur.execute(_SURVEYS, params))
    return {
        "start": start, "end": end, "customer": customer, "engineer": engineer, "station": station,
        "tickets": t["tickets"], "resolved": t["resolved"], "resolved_remotely": t["resolved_remotely"],
        "resolved_on_site": t["resolved_on_site"], "closed": t["closed"],
        "late_arrival_warnings": t["late_arrival_warnings"],
        "remote_resolution_rate": _rate(t["resolved_remotely"], t["resolved"]),
        "first_time_fix_rate": _rate(t["first_time_fixes"], t["resolved_on_site"]),
        "sla": {
            timer.name: {
                "decided": t[f"{timer.name}_decided"], "met": t[f"{timer.name}_met"],
                "compliance": _rate(t[f"{timer.name}_met"], t[f"{timer.name}_decided"]),
                "warnings": alerts.get((timer.name, "warning"), 0), "breaches": alerts.get((timer.name, "breach"), 0),
            }
            for timer in TIMERS
        },
        "time_to_respond_h": {"count": t["respond_n"], "mean": _float(t["respond_mean_h"]),
                              "p90": _float(t["respond_p90_h"])},
        "time_to_resolve_h": {"count": t["resolve_n"], "mean": _float(t["resolve_mean_h"]),
                              "p90": _float(t["resolve_p90_h"])},
        "backlog": {state: backlog.get(state, 0) for state in OPEN_STATES},
        "backlog_total": sum(backlog.values()),
        "survey": {"count": s["surveys"], "complaints": s["complaints"],
                   "means": {i: _float(s[i]) for i in SURVEY_INDICATORS}},
    }
