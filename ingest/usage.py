"""The running usage totals behind the ISO 15143-3 snapshot (docs/iso15143.md): idle seconds and fuel
used per machine, caught up from the stored readings by a job each ingest worker runs; and, in the
same statement, the hourly rollup behind the portal's daily usage (``usage_hourly``: per machine and
UTC hour, readings, lowest and highest engine hours, seconds working and idling, fuel used), which
ingest.queries.daily_usage sums instead of every reading of the period.

Below ENGINE_ON_RPM the engine is off; at WORKING_RPM or more, or moving faster than MOVING_KMH, the
machine works; otherwise it idles. Each reading counts until the next, gaps capped at
USAGE_MAX_GAP_S. Fuel used is the sum of the level's drops between consecutive readings (a refuel is
not subtracted). The job counts, per machine, the readings newer than the last one it counted, up to
SETTLE_S before now (a reading still on its way is not passed over); a reading that arrives later
for a period already counted is not added, to the totals or to the hourly rollup. A reading's span
and the level's drop after it belong to the reading's own hour, and are added when the next reading
is counted. One job runs at a time (an advisory lock), whatever the number of ingest workers, so
nothing is counted twice; the writer never waits for it.
"""

from __future__ import annotations

import logging
import threading

import psycopg

from core.db import keep_running, one
from core.shards import advisory_key
from core.vocabulary import ENGINE_ON_RPM, MOVING_KMH, WORKING_RPM

log = logging.getLogger(__name__)

USAGE_MAX_GAP_S = 300.0
SETTLE_S = 30.0
CATCH_UP_EVERY_S = 10.0
MACHINES_PER_STATEMENT = 2000
RETRY_S = 5.0

_LOCK_KEY = advisory_key("ingest", "usage")

_HOUR_ORIGIN = "TIMESTAMPTZ '2000-01-01 00:00+00'"


def working(alias: str) -> str:
    """SQL: the reading ``alias`` works (until the next reading)."""
    return (f"coalesce({alias}.engine_rpm >= {WORKING_RPM} OR ({alias}.engine_rpm >= {ENGINE_ON_RPM} "
            f"AND {alias}.speed_kmh >= {MOVING_KMH}), false)")


def idling(alias: str) -> str:
    """SQL: the reading ``alias`` idles (until the next reading); no speed reported counts as standing."""
    return (f"coalesce({alias}.engine_rpm >= {ENGINE_ON_RPM} AND {alias}.engine_rpm < {WORKING_RPM} "
            f"AND coalesce({alias}.speed_kmh, 0) < {MOVING_KMH}, false)")


# Machines that may have readings to count: a slice of them in id order.
_DUE = """
SELECT s.equipment_id FROM equipment_state s LEFT JOIN equipment_usage u USING (equipment_id)
WHERE s.equipment_id > %(after)s AND coalesce(u.through_ts, '-infinity') < least(s.last_ts, %(until)s)
ORDER BY s.equipment_id LIMIT %(limit)s
"""

# Their new readings in time order, each adding its predecessor's span (if that idled) and the
# level's drop since it to the totals, and to the predecessor's hour in usage_hourly (its span as
# working or idling, the drop) besides itself to its own hour (a sample, its engine hours). Whether
# the newest reading counted works is read back from it: the totals never needed it.
_CATCH_UP = f"""
WITH due AS (
    SELECT e.equipment_id, u.through_ts, coalesce(u.last_idling, false) AS prev_idling,
           {working("p")} AS prev_working, u.last_fuel_level_pct AS prev_fuel
    FROM unnest(%(ids)s::text[]) AS e (equipment_id) LEFT JOIN equipment_usage u USING (equipment_id)
    LEFT JOIN readings p ON p.equipment_id = u.equipment_id AND p.ts = u.through_ts
), new AS (
    SELECT d.equipment_id, d.through_ts AS prev_ts, d.prev_idling, d.prev_working, d.prev_fuel, x.ts,
           x.engine_hours, x.fuel_level_pct, {idling("x")} AS idling, {working("x")} AS working
    FROM due d CROSS JOIN LATERAL (
        SELECT ts, engine_rpm, speed_kmh, engine_hours, fuel_level_pct FROM readings
        WHERE equipment_id = d.equipment_id AND ts > coalesce(d.through_ts, '-infinity') AND ts <= %(until)s
    ) x
), steps AS (
    SELECT equipment_id, ts, engine_hours, idling, fuel_level_pct,
           lag(ts, 1, prev_ts) OVER w AS prev_ts,
           lag(idling, 1, prev_idling) OVER w AS prev_idling,
           lag(working, 1, prev_working) OVER w AS prev_working,
           -- least() skips NULL: the first reading ever, with none before it, must count nothing.
           CASE WHEN lag(ts, 1, prev_ts) OVER w IS NOT NULL
                THEN least(extract(epoch FROM ts - lag(ts, 1, prev_ts) OVER w)::float8, {USAGE_MAX_GAP_S}) END
               AS span_s,
           greatest(lag(fuel_level_pct::float8, 1, prev_fuel::float8) OVER w - fuel_level_pct, 0) AS fuel_used_pct,
           lead(ts) OVER w IS NULL AS newest
    FROM new WINDOW w AS (PARTITION BY equipment_id ORDER BY ts)
), hourly AS (
    SELECT equipment_id, hour, sum(samples)::integer AS samples, min(engine_hours) AS engine_hours_min,
           max(engine_hours) AS engine_hours_max, sum(working_s) AS working_s, sum(idle_s) AS idle_s,
           sum(fuel_used_pct) AS fuel_used_pct
    FROM (
        SELECT equipment_id, date_bin('1 hour', ts, {_HOUR_ORIGIN}) AS hour, 1 AS samples, engine_hours,
               0::float8 AS working_s, 0::float8 AS idle_s, 0::float8 AS fuel_used_pct
        FROM steps
        UNION ALL
        SELECT equipment_id, date_bin('1 hour', prev_ts, {_HOUR_ORIGIN}), 0, NULL,
               CASE WHEN prev_working THEN span_s ELSE 0 END, CASE WHEN prev_idling THEN span_s ELSE 0 END,
               fuel_used_pct
        FROM steps WHERE prev_ts IS NOT NULL
    ) parts GROUP BY equipment_id, hour
), rolled_up AS (
    INSERT INTO usage_hourly AS h (equipment_id, hour, samples, engine_hours_min, engine_hours_max, working_s,
                                   idle_s, fuel_used_pct)
    SELECT equipment_id, hour, samples, engine_hours_min, engine_hours_max, working_s, idle_s, fuel_used_pct
    FROM hourly
    ON CONFLICT (equipment_id, hour) DO UPDATE SET
        samples = h.samples + EXCLUDED.samples,
        engine_hours_min = least(h.engine_hours_min, EXCLUDED.engine_hours_min),
        engine_hours_max = greatest(h.engine_hours_max, EXCLUDED.engine_hours_max),
        working_s = h.working_s + EXCLUDED.working_s, idle_s = h.idle_s + EXCLUDED.idle_s,
        fuel_used_pct = h.fuel_used_pct + EXCLUDED.fuel_used_pct
), added AS (
    SELECT equipment_id, max(ts) AS through_ts, coalesce(sum(span_s) FILTER (WHERE prev_idling), 0) AS idle_s,
           coalesce(sum(fuel_used_pct), 0) AS fuel_used_pct, bool_or(idling) FILTER (WHERE newest) AS last_idling,
           max(fuel_level_pct) FILTER (WHERE newest) AS last_fuel_level_pct
    FROM steps GROUP BY equipment_id
)
INSERT INTO equipment_usage AS u (equipment_id, through_ts, idle_s, fuel_used_pct, last_idling, last_fuel_level_pct)
SELECT equipment_id, through_ts, idle_s, fuel_used_pct, last_idling, last_fuel_level_pct FROM added
ON CONFLICT (equipment_id) DO UPDATE SET
    through_ts = EXCLUDED.through_ts, idle_s = u.idle_s + EXCLUDED.idle_s,
    fuel_used_pct = u.fuel_used_pct + EXCLUDED.fuel_used_pct, last_idling = EXCLUDED.last_idling,
    last_fuel_level_pct = EXCLUDED.last_fuel_level_pct
"""


def catch_up(conn: psycopg.Connection, *, settle_s: float = SETTLE_S, limit: int = MACHINES_PER_STATEMENT,
             stop: threading.Event | None = None) -> int:
    """Count every machine's readings stored since the last catch-up (up to ``settle_s`` ago); the number
    of machines whose totals moved. Returns 0 at once when another worker's job is running."""
    moved, after = 0, ""
    while stop is None or not stop.is_set():
        with conn.transaction():
            if not one(conn.execute("SELECT pg_try_advisory_xact_lock(%s)", (_LOCK_KEY,)))[0]:
                return moved
            until = one(conn.execute("SELECT now() - make_interval(secs => %s)", (settle_s,)))[0]
            ids = [row[0] for row in conn.execute(_DUE, {"after": after, "until": until, "limit": limit})]
            if not ids:
                break
            moved += conn.execute(_CATCH_UP, {"ids": ids, "until": until}).rowcount
        after = ids[-1]
    return moved


class UsageJob:
    """The catch-up every ``every_s`` on a connection of its own, until ``stop``."""

    def __init__(self, database_url: str, *, name: str, every_s: float = CATCH_UP_EVERY_S) -> None:
        self.database_url = database_url
        self.name = name
        self.every_s = every_s

    def start(self, stop: threading.Event) -> threading.Thread:
        thread = threading.Thread(target=self.run, args=(stop,), name=f"{self.name} usage", daemon=True)
        thread.start()
        return thread

    def run(self, stop: threading.Event) -> None:
        keep_running(lambda conn: catch_up(conn, stop=stop), database_url=self.database_url, every_s=self.every_s,
                     stop=stop, what=f"{self.name}: usage totals", application_name="ironsight-usage",
                     retry_s=RETRY_S)
