"""Service KPIs over a window [start, end), optionally of one customer's, one engineer's, or one
service station's tickets (the tickets its engineers were sent to).

Over the tickets created in the window:

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

After the repair, each over its own population (the same filters apply to the tickets they belong to):
- callbacks due in the window: done, done on time (``done_at <= due_at``), unreachable, cancelled,
  still open and overdue now, attempts per done callback; on-time rate over the decided ones (done,
  unreachable, or still open past their due time; a cancelled callback is owed nobody).
- complaints opened in the window: by state, closed within the week (``closed_at - opened_at`` at
  most ``COMPLAINT_WEEK``: satisfied on the checking callback, or closed by management), the rate
  over the decided ones (closed, or the week over), sent back (round > 1), escalated to management
  (escalated now, or closed by management), and their departments' answers on time (each round's
  ``answered_at <= answer_due``, over the rounds answered or past their deadline).
- remote diagnosis of the tickets that entered it in the window (each ticket's first
  'remote_diagnosis_started' in the window): minutes to the next event that takes the ticket out of
  it (``LEAVING_REMOTE_DIAGNOSIS``, by event order), mean and p90 over those that left it, and the
  share within the customer's tier's ``remote_diagnosis_min`` (``DEFAULT_REMOTE_DIAGNOSIS_MIN``
  without a tier) over the decided ones (left it, or still in it past the limit).

``satisfaction`` ranks engineers or service stations by the first callback surveys of the tickets
created in the window, worst first.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row

from core.db import one
from tickets.complaints import ANSWER_WITHIN
from tickets.complaints import STATES as COMPLAINT_STATES
from tickets.service import COMPLAINT_SCORE_MAX, SURVEY_INDICATORS
from tickets.sla import DEFAULT_REMOTE_DIAGNOSIS_MIN, TIMERS
from tickets.workflow import BY_ACTION, OPEN_STATES, TRANSITIONS

# A complaint is meant to be settled within the week its department has to answer.
COMPLAINT_WEEK = ANSWER_WITHIN
# Complaints in management's hands: escalated, or closed by management (satisfied ones are the customer's word).
COMPLAINT_MANAGEMENT_STATES = ("escalated", "closed")

REMOTE_DIAGNOSIS = "remote_diagnosis"
ENTERED_REMOTE_DIAGNOSIS = BY_ACTION["start_remote_diagnosis"].event_name
# Every event of an action that moves a ticket out of remote diagnosis (resolved remotely,
# dispatched, escalated, rejected, cancelled), from the transition table so that a new way out counts.
LEAVING_REMOTE_DIAGNOSIS = tuple(sorted({t.event_name for t in TRANSITIONS if REMOTE_DIAGNOSIS in t.sources
                                         and t.target not in (None, REMOTE_DIAGNOSIS)}))

SATISFACTION_GROUPINGS = ("engineer", "station")

# The tickets the filters keep, over ``t`` (tickets) and ``e`` (their equipment).
_FILTER = """(%(customer)s::text IS NULL OR e.customer = %(customer)s)
      AND (%(engineer)s::text IS NULL OR t.engineer = %(engineer)s)
      AND (%(station)s::text IS NULL OR t.engineer IN (SELECT id FROM engineers WHERE station_id = %(station)s))"""

_POPULATION = f"""
    SELECT t.* FROM tickets t JOIN equipment e ON e.id = t.equipment_id
    WHERE t.created_at >= %(start)s AND t.created_at < %(end)s
      AND {_FILTER}
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

_BACKLOG = f"""
SELECT t.state, count(*) AS n FROM tickets t JOIN equipment e ON e.id = t.equipment_id
WHERE t.state = ANY(%(open)s) AND t.created_at < %(end)s
  AND {_FILTER}
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


_CALLBACKS = f"""
SELECT count(*) AS due,
       count(*) FILTER (WHERE c.state = 'done') AS done,
       count(*) FILTER (WHERE c.state = 'done' AND c.done_at <= c.due_at) AS done_on_time,
       count(*) FILTER (WHERE c.state = 'unreachable') AS unreachable,
       count(*) FILTER (WHERE c.state = 'cancelled') AS cancelled,
       count(*) FILTER (WHERE c.state = 'open') AS open,
       count(*) FILTER (WHERE c.state = 'open' AND c.due_at < %(now)s) AS overdue,
       count(*) FILTER (WHERE c.state IN ('done', 'unreachable') OR (c.state = 'open' AND c.due_at < %(now)s))
           AS decided,
       avg(c.attempts) FILTER (WHERE c.state = 'done') AS attempts_per_done
FROM callbacks c JOIN tickets t ON t.id = c.ticket_id JOIN equipment e ON e.id = t.equipment_id
WHERE c.due_at >= %(start)s AND c.due_at < %(end)s AND {_FILTER}
"""

_COMPLAINTS = f"""
WITH c AS (
    SELECT c.* FROM complaints c JOIN tickets t ON t.id = c.ticket_id JOIN equipment e ON e.id = t.equipment_id
    WHERE c.opened_at >= %(start)s AND c.opened_at < %(end)s AND {_FILTER}
), answers AS (
    SELECT count(*) FILTER (WHERE r.answered_at IS NOT NULL OR r.answer_due <= %(now)s) AS decided,
           count(*) FILTER (WHERE r.answered_at <= r.answer_due) AS on_time
    FROM complaint_rounds r JOIN c ON c.id = r.complaint_id
)
SELECT count(*) AS opened,
       {', '.join(f"count(*) FILTER (WHERE c.state = '{state}') AS state_{state}" for state in COMPLAINT_STATES)},
       count(*) FILTER (WHERE c.closed_at - c.opened_at <= %(week)s) AS closed_within_week,
       count(*) FILTER (WHERE c.closed_at IS NOT NULL OR c.opened_at + %(week)s <= %(now)s) AS week_decided,
       count(*) FILTER (WHERE c.round > 1) AS sent_back,
       count(*) FILTER (WHERE c.state = ANY(%(management)s)) AS escalated_to_management,
       (SELECT decided FROM answers) AS answers_decided, (SELECT on_time FROM answers) AS answers_on_time
FROM c
"""

# Each ticket's first entry into remote diagnosis in the window, the first event after it that took
# the ticket out, and the limit of its customer's tier.
_REMOTE_DIAGNOSIS = f"""
WITH entered AS (
    SELECT DISTINCT ON (ev.ticket_id) ev.ticket_id, ev.id, ev.at, e.customer
    FROM ticket_events ev JOIN tickets t ON t.id = ev.ticket_id JOIN equipment e ON e.id = t.equipment_id
    WHERE ev.event = %(entered)s AND ev.at >= %(start)s AND ev.at < %(end)s AND {_FILTER}
    ORDER BY ev.ticket_id, ev.id
), spells AS (
    SELECT en.at AS started_at, out.at AS left_at,
           make_interval(secs => 60 * coalesce(ct.remote_diagnosis_min, %(default_limit_min)s)) AS limit_
    FROM entered en
    LEFT JOIN LATERAL (SELECT x.at FROM ticket_events x
                       WHERE x.ticket_id = en.ticket_id AND x.id > en.id AND x.event = ANY(%(leaving)s)
                       ORDER BY x.id LIMIT 1) out ON true
    LEFT JOIN customers cu ON cu.id = en.customer
    LEFT JOIN contract_tiers ct ON ct.name = cu.tier
)
SELECT count(*) AS entered,
       count(left_at) AS ended,
       avg(extract(epoch FROM left_at - started_at)) / 60 AS mean_min,
       percentile_cont(0.9) WITHIN GROUP (ORDER BY extract(epoch FROM left_at - started_at)) / 60 AS p90_min,
       count(*) FILTER (WHERE left_at IS NOT NULL OR started_at + limit_ <= %(now)s) AS decided,
       count(*) FILTER (WHERE left_at - started_at <= limit_) AS within_limit
FROM spells
"""

# Per grouping: a ticket's key (over the ticket ``p`` and its engineer ``en``), the join that names the
# key's row ``g``, its name, and its station.
_GROUPING = {
    "engineer": ("p.engineer", "LEFT JOIN engineers g ON g.id = k.key", "coalesce(g.name, k.key)", "g.station_id"),
    "station": ("en.station_id", "LEFT JOIN service_stations g ON g.id = k.key", "coalesce(g.name, k.key)", "k.key"),
}


def _satisfaction_sql(by: str) -> str:
    key, join_names, name, station = _GROUPING[by]
    scores = ", ".join(f"s.{i}" for i in SURVEY_INDICATORS)
    return f"""
WITH p AS ({_POPULATION}), keyed AS (
    SELECT p.id, {key} AS key FROM p LEFT JOIN engineers en ON en.id = p.engineer WHERE {key} IS NOT NULL
), scores AS (
    SELECT keyed.key, count(*) AS surveys,
           {', '.join(f'avg(s.{i})::float8 AS {i}' for i in SURVEY_INDICATORS)},
           avg(({' + '.join(f's.{i}' for i in SURVEY_INDICATORS)})::float8 / {len(SURVEY_INDICATORS)}) AS overall,
           count(*) FILTER (WHERE LEAST({scores}) <= {COMPLAINT_SCORE_MAX}) AS low_surveys
    FROM keyed JOIN ticket_surveys s ON s.ticket_id = keyed.id AND s.round = 1
    GROUP BY keyed.key
), complained AS (
    SELECT keyed.key, count(*) AS complaints FROM keyed JOIN complaints c ON c.ticket_id = keyed.id
    GROUP BY keyed.key
), k AS (SELECT key FROM scores UNION SELECT key FROM complained)
SELECT k.key AS id, {name} AS name, {station} AS station, coalesce(s.surveys, 0) AS surveys,
       {', '.join(f's.{i}' for i in SURVEY_INDICATORS)}, s.overall, coalesce(s.low_surveys, 0) AS low_surveys,
       coalesce(c.complaints, 0) AS complaints
FROM k LEFT JOIN scores s ON s.key = k.key LEFT JOIN complained c ON c.key = k.key
{join_names}
ORDER BY s.overall NULLS LAST, coalesce(c.complaints, 0) DESC, k.key
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
        cb = one(cur.execute(_CALLBACKS, params))
        co = one(cur.execute(_COMPLAINTS, params | {"week": COMPLAINT_WEEK,
                                                     "management": list(COMPLAINT_MANAGEMENT_STATES)}))
        rd = one(cur.execute(_REMOTE_DIAGNOSIS, params | {
            "entered": ENTERED_REMOTE_DIAGNOSIS, "leaving": list(LEAVING_REMOTE_DIAGNOSIS),
            "default_limit_min": DEFAULT_REMOTE_DIAGNOSIS_MIN}))
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
        "callbacks": {
            "due": cb["due"], "done": cb["done"], "done_on_time": cb["done_on_time"], "unreachable": cb["unreachable"],
            "cancelled": cb["cancelled"], "open": cb["open"], "overdue": cb["overdue"], "decided": cb["decided"],
            "on_time_rate": _rate(cb["done_on_time"], cb["decided"]),
            "attempts_per_done": _float(cb["attempts_per_done"]),
        },
        "complaints": {
            "opened": co["opened"], "by_state": {state: co[f"state_{state}"] for state in COMPLAINT_STATES},
            "closed_within_week": co["closed_within_week"], "week_decided": co["week_decided"],
            "closed_within_week_rate": _rate(co["closed_within_week"], co["week_decided"]),
            "sent_back": co["sent_back"], "escalated": co["escalated_to_management"],
            "answers": {"decided": co["answers_decided"], "on_time": co["answers_on_time"],
                        "on_time_rate": _rate(co["answers_on_time"], co["answers_decided"])},
        },
        "remote_diagnosis": {
            "entered": rd["entered"],
            "duration_min": {"count": rd["ended"], "mean": _float(rd["mean_min"]), "p90": _float(rd["p90_min"])},
            "decided": rd["decided"], "within_limit": rd["within_limit"],
            "within_limit_rate": _rate(rd["within_limit"], rd["decided"]),
        },
    }


def satisfaction(conn: psycopg.Connection, start: datetime, end: datetime, *,
                 by: str = "engineer") -> list[dict[str, Any]]:
    """Per engineer (``by="engineer"``) or service station (``"station"``), worst first: the first
    callback surveys of the tickets created in [start, end) that were sent to them — how many, the
    mean of each indicator, the overall mean (of all six), how many had a score low enough for a
    complaint — and the complaints recorded against those tickets (from a survey or raised directly).
    Tickets nobody was sent to (solved remotely) are nobody's here; ``compute_kpis`` counts them.
    Engineers or stations with neither a survey nor a complaint are left out."""
    if by not in SATISFACTION_GROUPINGS:
        raise ValueError(f"by must be one of {', '.join(SATISFACTION_GROUPINGS)}, not {by!r}")
    params = {"start": start, "end": end, "customer": None, "engineer": None, "station": None}
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(_satisfaction_sql(by), params).fetchall()
    return [{"id": r["id"], "name": r["name"], "station": r["station"], "surveys": r["surveys"],
             "means": {i: _float(r[i]) for i in SURVEY_INDICATORS}, "overall": _float(r["overall"]),
             "low_surveys": r["low_surveys"], "complaints": r["complaints"]} for r in rows]
