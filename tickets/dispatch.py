"""Dispatch: which engineer, in which vehicle, collecting the spare part where, gets there first.

A *crew* is an active engineer on shift, driving a vehicle, not busy with another visit. A *job* is
a ticket waiting for a visit (``accepted`` or ``remote_diagnosis``) with its machine's position,
model and the spare part its diagnosis names. For a (job, crew) pair the route is direct when the
vehicle carries the part (or none is needed), otherwise through the warehouse holding the part that
makes the whole trip shortest; a crew not qualified for the model cannot take the job.

Travel time is great-circle distance × a road factor ÷ an average speed (``TravelModel``), plus a
stop at the warehouse. Several waiting jobs are assigned *jointly*: the assignment of crews to jobs
that minimises the sum of priority-weighted arrival times (``scipy.optimize.linear_sum_assignment``),
so that the nearest crew is not spent on one job when another job has no one else near.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import psycopg
from psycopg.rows import DictRow, dict_row
from scipy.optimize import linear_sum_assignment

from core.errors import IronSightError
from core.geo import distance_km
from core.settings import Settings

# A critical machine waiting an hour weighs as much as a minor one waiting four.
PRIORITY_WEIGHT = {"critical": 4.0, "major": 2.0, "minor": 1.0, "warning": 0.5}
# A crew that would arrive without the needed part is a last resort: it counts as this much later.
MISSING_PART_PENALTY_H = 24.0
# Cost of a pair that is not allowed at all (not qualified); never chosen.
_FORBIDDEN = 1e9
# Jobs in these states wait for a visit.
DISPATCHABLE_STATES = ("accepted", "remote_diagnosis")
# A crew on one of these tickets is busy.
BUSY_STATES = ("dispatched", "en_route", "on_site")


@dataclass(frozen=True, slots=True)
class TravelModel:
    road_factor: float = 1.3        # road distance ÷ great-circle distance
    speed_kmh: float = 60.0         # average speed door to door
    pickup_min: float = 15.0        # a stop at a warehouse to collect a part
    margin_min: float = 30.0        # promised arrival = now + travel time + this
    # Proposals leave out longer trips: better to wait for a nearer crew to come free (or on shift)
    # than to send one across the country. A dispatcher can still choose one from the options.
    max_travel_h: float = 4.0

    @classmethod
    def from_settings(cls, settings: Settings) -> TravelModel:
        """The ``IRONSIGHT_DISPATCH_*`` settings."""
        return cls(road_factor=settings.dispatch_road_factor, speed_kmh=settings.dispatch_speed_kmh,
                   pickup_min=settings.dispatch_pickup_min, margin_min=settings.dispatch_margin_min,
                   max_travel_h=settings.dispatch_max_travel_h)

    def hours(self, km: float) -> float:
        return km * self.road_factor / self.speed_kmh


@dataclass(frozen=True, slots=True)
class Place:
    id: str
    lat: float
    lon: float


@dataclass(frozen=True, slots=True)
class Crew:
    engineer_id: str
    vehicle_id: str
    lat: float
    lon: float
    skills: frozenset[str]
    carries: frozenset[str] = frozenset()   # parts the vehicle has on board
    station_id: str | None = None


@dataclass(frozen=True, slots=True)
class Job:
    ticket_id: int
    equipment_id: str
    model: str
    lat: float
    lon: float
    part: str | None = None
    priority: str = "major"


@dataclass(frozen=True, slots=True)
class Plan:
    """One crew's trip to one job: the legs, the distance and the time it takes."""

    ticket_id: int
    engineer_id: str
    vehicle_id: str
    warehouse_id: str | None       # the stop to collect the part; None when going straight there
    part: str | None
    part_on_board: bool            # the part will be there: carried, or collected on the way
    distance_km: float             # road distance
    travel_h: float
    legs: tuple[tuple[float, float], ...] = field(default=())   # waypoints after the start, site last

    @property
    def cost_h(self) -> float:
        return self.travel_h + (0.0 if self.part_on_board else MISSING_PART_PENALTY_H)

    def as_dict(self, now: datetime | None = None) -> dict[str, Any]:
        out = {"ticket_id": self.ticket_id, "engineer_id": self.engineer_id, "vehicle_id": self.vehicle_id,
               "warehouse_id": self.warehouse_id, "part": self.part, "part_on_board": self.part_on_board,
               "distance_km": round(self.distance_km, 2), "travel_min": round(self.travel_h * 60, 1)}
        if now is not None:
            out["eta"] = now + timedelta(hours=self.travel_h)
        return out


def plan_trip(job: Job, crew: Crew, stock: Mapping[str, Sequence[Place]], travel: TravelModel) -> Plan | None:
    """The quickest trip of ``crew`` to ``job``, via the best warehouse when the part is not on board;
    None when the engineer is not qualified for the machine's model. ``stock``: part → warehouses holding it."""
    if job.model not in crew.skills:
        return None
    direct_km = distance_km(crew.lat, crew.lon, job.lat, job.lon) * travel.road_factor
    site = ((job.lat, job.lon),)
    if job.part is None or job.part in crew.carries:
        return Plan(job.ticket_id, crew.engineer_id, crew.vehicle_id, None, job.part, True, direct_km,
                    travel.hours(direct_km / travel.road_factor), site)
    best: Plan | None = None
    for warehouse in stock.get(job.part, ()):
        km = (distance_km(crew.lat, crew.lon, warehouse.lat, warehouse.lon)
              + distance_km(warehouse.lat, warehouse.lon, job.lat, job.lon))
        hours = travel.hours(km) + travel.pickup_min / 60
        if best is None or hours < best.travel_h:
            best = Plan(job.ticket_id, crew.engineer_id, crew.vehicle_id, warehouse.id, job.part, True,
                        km * travel.road_factor, hours, ((warehouse.lat, warehouse.lon), *site))
    if best is not None:
        return best
    return Plan(job.ticket_id, crew.engineer_id, crew.vehicle_id, None, job.part, False, direct_km,
                travel.hours(direct_km / travel.road_factor), site)


def options_for(job: Job, crews: Iterable[Crew], stock: Mapping[str, Sequence[Place]],
                travel: TravelModel) -> list[Plan]:
    """Every qualified crew's best trip to ``job``, best first (the part on board, then soonest)."""
    plans = [p for crew in crews if (p := plan_trip(job, crew, stock, travel)) is not None]
    return sorted(plans, key=lambda p: (p.cost_h, p.engineer_id))


def assign_jointly(jobs: Sequence[Job], crews: Sequence[Crew], stock: Mapping[str, Sequence[Place]],
                   travel: TravelModel) -> list[Plan]:
    """One crew per job at most, minimising the sum of priority-weighted costs over all jobs.

    With more jobs than crews the heaviest-weighted jobs win the crews; a job no crew is qualified
    for, or that no crew reaches within ``travel.max_travel_h``, stays unassigned."""
    if not jobs or not crews:
        return []
    plans: dict[tuple[int, int], Plan] = {}
    cost = np.full((len(jobs), len(crews)), _FORBIDDEN)
    for i, job in enumerate(jobs):
        weight = PRIORITY_WEIGHT.get(job.priority, 1.0)
        for j, crew in enumerate(crews):
            plan = plan_trip(job, crew, stock, travel)
            if plan is not None and plan.travel_h <= travel.max_travel_h:
                plans[i, j] = plan
                # Waiting for a crew is worse than any trip: a job left out costs more than one served.
                cost[i, j] = weight * plan.cost_h - weight * 1e4
    rows, cols = linear_sum_assignment(cost)
    return [plans[i, j] for i, j in zip(rows, cols, strict=True) if (i, j) in plans]


def assign_greedily(jobs: Sequence[Job], crews: Sequence[Crew], stock: Mapping[str, Sequence[Place]],
                    travel: TravelModel) -> list[Plan]:
    """The usual dispatcher's rule, for comparison: jobs by priority, each takes its best free crew."""
    free = list(crews)
    chosen = []
    for job in sorted(jobs, key=lambda j: -PRIORITY_WEIGHT.get(j.priority, 1.0)):
        options = [p for p in options_for(job, free, stock, travel) if p.travel_h <= travel.max_travel_h]
        if options:
            chosen.append(options[0])
            free = [c for c in free if c.engineer_id != options[0].engineer_id]
    return chosen


def total_weighted_hours(plans: Iterable[Plan], jobs: Sequence[Job]) -> float:
    weight = {job.ticket_id: PRIORITY_WEIGHT.get(job.priority, 1.0) for job in jobs}
    return sum(weight[p.ticket_id] * p.cost_h for p in plans)


# --- the database side -------------------------------------------------------------------------

def on_shift(shift_start: time, shift_end: time, timezone: str, at: datetime) -> bool:
    """Whether ``at`` falls in the shift, in the station's local time. A shift ending before it starts
    runs over midnight; one ending when it starts is all day."""
    if shift_start == shift_end:
        return True
    local = at.astimezone(ZoneInfo(timezone)).time()
    if shift_start < shift_end:
        return shift_start <= local < shift_end
    return local >= shift_start or local < shift_end


def load_crews(cur: psycopg.Cursor[DictRow], at: datetime, *, available_only: bool = True) -> list[Crew]:
    """Crews that can be sent now: active, on shift, with a vehicle, not on another visit. With
    ``available_only`` False: every active engineer with a vehicle (a dispatcher may override)."""
    rows = cur.execute(
        """SELECT e.id, e.skills, e.shift_start, e.shift_end, e.timezone, e.station_id, v.id AS vehicle_id,
                  COALESCE(v.lat, s.lat) AS lat, COALESCE(v.lon, s.lon) AS lon,
                  EXISTS (SELECT 1 FROM tickets t WHERE t.engineer = e.id AND t.state = ANY(%s)) AS busy,
                  ARRAY(SELECT part FROM part_stock p
                        WHERE p.place_kind = 'vehicle' AND p.place_id = v.id AND p.quantity > 0) AS carries
           FROM engineers e JOIN vehicles v ON v.engineer_id = e.id JOIN service_stations s ON s.id = e.station_id
           WHERE e.active ORDER BY e.id""",
        (list(BUSY_STATES),),
    ).fetchall()
    return [
        Crew(r["id"], r["vehicle_id"], r["lat"], r["lon"], frozenset(r["skills"]), frozenset(r["carries"]),
             r["station_id"])
        for r in rows
        if not available_only or (not r["busy"] and on_shift(r["shift_start"], r["shift_end"], r["timezone"], at))
    ]


def load_stock(cur: psycopg.Cursor[DictRow]) -> dict[str, list[Place]]:
    stock: dict[str, list[Place]] = {}
    for r in cur.execute("""SELECT p.part, w.id, w.lat, w.lon FROM part_stock p
                            JOIN warehouses w ON p.place_kind = 'warehouse' AND w.id = p.place_id
                            WHERE p.quantity > 0 ORDER BY w.id"""):
        stock.setdefault(r["part"], []).append(Place(r["id"], r["lat"], r["lon"]))
    return stock


_JOB_QUERY = """
    SELECT t.id, t.equipment_id, t.priority, e.model, t.diagnosis->>'spare_part' AS part,
           COALESCE(st.lat, s.lat) AS lat, COALESCE(st.lon, s.lon) AS lon
    FROM tickets t JOIN equipment e ON e.id = t.equipment_id
    LEFT JOIN equipment_state st ON st.equipment_id = t.equipment_id
    LEFT JOIN sites s ON s.name = e.site
"""


def _job(r: DictRow) -> Job | None:
    if r["lat"] is None or r["lon"] is None:
        return None
    return Job(r["id"], r["equipment_id"], r["model"], r["lat"], r["lon"], r["part"], r["priority"])


def load_job(cur: psycopg.Cursor[DictRow], ticket_id: int) -> Job | None:
    """The ticket as a job (None when the machine's position is unknown)."""
    row = cur.execute(_JOB_QUERY + " WHERE t.id = %s", (ticket_id,)).fetchone()
    return _job(row) if row else None


# Requests that need someone on site; a question, complaint or suggestion is answered from the
# control centre (a dispatcher may still send a van for one through the dispatch action).
VISIT_KINDS = ("fault", "maintenance")


def load_waiting_jobs(cur: psycopg.Cursor[DictRow]) -> list[Job]:
    rows = cur.execute(_JOB_QUERY + " WHERE t.state = ANY(%s) AND t.kind = ANY(%s) ORDER BY t.id",
                       (list(DISPATCHABLE_STATES), list(VISIT_KINDS)))
    return [job for r in rows.fetchall() if (job := _job(r)) is not None]


def propose(conn: psycopg.Connection, at: datetime, travel: TravelModel) -> dict[str, Any]:
    """The joint proposal for every waiting job, with the greedy rule's total for comparison."""
    with conn.cursor(row_factory=dict_row) as cur:
        jobs = load_waiting_jobs(cur)
        crews = load_crews(cur, at)
        stock = load_stock(cur)
    joint = assign_jointly(jobs, crews, stock, travel)
    greedy = assign_greedily(jobs, crews, stock, travel)
    assigned = {p.ticket_id for p in joint}
    return {
        "at": at,
        "proposals": [p.as_dict(at) for p in joint],
        "unassigned": [job.ticket_id for job in jobs if job.ticket_id not in assigned],
        "waiting": len(jobs), "crews_available": len(crews),
        "weighted_hours": round(total_weighted_hours(joint, jobs), 3),
        "greedy_weighted_hours": round(total_weighted_hours(greedy, jobs), 3),
    }


def ticket_options(conn: psycopg.Connection, ticket_id: int, at: datetime, travel: TravelModel) -> list[Plan]:
    with conn.cursor(row_factory=dict_row) as cur:
        job = load_job(cur, ticket_id)
        if job is None:
            return []
        return options_for(job, load_crews(cur, at), load_stock(cur), travel)


def plan_for_engineer(cur: psycopg.Cursor[DictRow], ticket_id: int, engineer_id: str, at: datetime, travel: TravelModel,
                      warehouse_id: str | None = None) -> Plan | None:
    """The trip of a chosen engineer (the dispatcher's confirmation or override), through
    ``warehouse_id`` when given; None when the machine's position is unknown. Raises DispatchRefused
    when the engineer is unknown, has no vehicle or lacks the model's skill."""
    crew = next((c for c in load_crews(cur, at, available_only=False) if c.engineer_id == engineer_id), None)
    if crew is None:
        raise DispatchRefused(f"no active engineer {engineer_id!r} with a vehicle")
    job = load_job(cur, ticket_id)
    if job is None:
        return None
    if warehouse_id is not None:
        stock = {p: [w for w in places if w.id == warehouse_id] for p, places in load_stock(cur).items()}
    else:
        stock = load_stock(cur)
    plan = plan_trip(job, crew, stock, travel)
    if plan is None:
        raise DispatchRefused(f"engineer {engineer_id!r} is not qualified for model {job.model}")
    return plan


class DispatchRefused(IronSightError):
    """The chosen engineer cannot be sent (HTTP 422)."""
