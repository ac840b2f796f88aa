-- The portal's daily usage per machine and UTC hour, kept by the ingest workers' usage job
-- (ingest/usage.py) in the statement that moves equipment_usage, so that a year is summed from
-- thousands of rows instead of millions of readings (ingest.queries.daily_usage). A reading's span
-- (until the next reading, capped) and the level's drop to the next one belong to the reading's own
-- hour; both are added when the next reading is counted.
CREATE TABLE IF NOT EXISTS usage_hourly (
    equipment_id     text NOT NULL,
    hour             timestamptz NOT NULL,
    samples          integer NOT NULL DEFAULT 0,           -- readings counted in the hour
    engine_hours_min double precision,
    engine_hours_max double precision,
    working_s        double precision NOT NULL DEFAULT 0,  -- seconds working, spans of the hour's readings
    idle_s           double precision NOT NULL DEFAULT 0,  -- seconds idling, likewise
    fuel_used_pct    double precision NOT NULL DEFAULT 0,  -- drops of the level after the hour's readings
    PRIMARY KEY (equipment_id, hour)
);

-- What the job had counted before this migration (every reading through equipment_usage.through_ts),
-- so that the hourly rows agree with the totals from the first day on. The thresholds are those of
-- core/vocabulary.py (engine on at 300 rpm, working at 1200 rpm or moving at 1 km/h or faster) and the
-- 5-minute cap of ingest/usage.py. equipment_usage comes from migration 0008: a database without it
-- has nothing counted yet, and the job fills this table as it counts.
DO $$
BEGIN
    IF to_regclass('equipment_usage') IS NOT NULL THEN
        WITH counted AS (
            SELECT r.equipment_id, r.ts, r.engine_hours, r.fuel_level_pct,
                   coalesce(r.engine_rpm >= 1200 OR (r.engine_rpm >= 300 AND r.speed_kmh >= 1), false) AS working,
                   coalesce(r.engine_rpm >= 300 AND r.engine_rpm < 1200 AND coalesce(r.speed_kmh, 0) < 1, false)
                       AS idling,
                   -- least() skips NULL: the newest reading counted, with no next one, counts nothing.
                   CASE WHEN lead(r.ts) OVER w IS NOT NULL
                        THEN least(extract(epoch FROM lead(r.ts) OVER w - r.ts)::float8, 300) END AS span_s,
                   greatest(r.fuel_level_pct::float8 - lead(r.fuel_level_pct::float8) OVER w, 0) AS fuel_drop
            FROM equipment_usage u JOIN readings r ON r.equipment_id = u.equipment_id AND r.ts <= u.through_ts
            WINDOW w AS (PARTITION BY r.equipment_id ORDER BY r.ts)
        )
        INSERT INTO usage_hourly (equipment_id, hour, samples, engine_hours_min, engine_hours_max, working_s, idle_s,
                                  fuel_used_pct)
        SELECT equipment_id, date_bin('1 hour', ts, TIMESTAMPTZ '2000-01-01 00:00+00'), count(*), min(engine_hours),
               max(engine_hours), coalesce(sum(span_s) FILTER (WHERE working), 0),
               coalesce(sum(span_s) FILTER (WHERE idling), 0), coalesce(sum(fuel_drop), 0)
        FROM counted GROUP BY 1, 2
        ON CONFLICT (equipment_id, hour) DO NOTHING;
    END IF;
END
$$;
