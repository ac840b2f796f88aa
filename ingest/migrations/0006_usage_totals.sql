-- The running totals behind the ISO 15143-3 cumulative elements (CumulativeIdleHours, FuelUsed) move
-- from api's usage_totals, which the snapshot caught up on request, to equipment_state, where the
-- batch writer adds each batch's new readings in the batch's own transaction (ingest/writer.py;
-- definitions in docs/iso15143.md). Each reading counts until the next one, so the newest reading's
-- share is added with the next batch: the row keeps what that needs.
ALTER TABLE equipment_state
    ADD COLUMN idle_s double precision NOT NULL DEFAULT 0,         -- seconds idling, through last_ts
    ADD COLUMN fuel_used_pct double precision NOT NULL DEFAULT 0,  -- sum of the level's drops, % of the tank
    ADD COLUMN last_idling boolean NOT NULL DEFAULT false,         -- the newest reading idles (until the next)
    ADD COLUMN last_fuel_level_pct real;                           -- its own level (NULL: it reported none)

-- Seeded so that an upgraded database keeps its totals: what usage_totals had counted, through its
-- newest reading counted, plus every reading stored since, through the machine's newest reading (a
-- machine no snapshot had counted: its whole history). ingest's migrations run before api's, so a new
-- database has no usage_totals yet, and an upgraded one still has it here. The thresholds are those
-- of core/vocabulary.py (engine on at 300 rpm, working at 1200 rpm or moving faster than 1 km/h) and
-- the 5-minute gap of ingest/writer.py.
CREATE TEMP TABLE usage_seed (
    equipment_id text PRIMARY KEY, through_ts timestamptz NOT NULL, idle_s double precision NOT NULL,
    fuel_used_pct double precision NOT NULL, engine_rpm real, speed_kmh real, fuel_level_pct real
) ON COMMIT DROP;
DO $$
BEGIN
    IF to_regclass('usage_totals') IS NOT NULL THEN
        INSERT INTO usage_seed
        SELECT equipment_id, through_ts, idle_s, fuel_used_pct, last_rpm, last_speed_kmh, last_fuel_pct
        FROM usage_totals WHERE through_ts IS NOT NULL;
    END IF;
END
$$;

WITH counted AS (
    -- The newest reading usage_totals counted (its values kept there), then the readings after it.
    SELECT equipment_id, through_ts AS ts, engine_rpm, speed_kmh, fuel_level_pct FROM usage_seed
    UNION ALL
    SELECT r.equipment_id, r.ts, r.engine_rpm, r.speed_kmh, r.fuel_level_pct
    FROM equipment_state s
    JOIN readings r ON r.equipment_id = s.equipment_id AND r.ts <= s.last_ts
    LEFT JOIN usage_seed u ON u.equipment_id = s.equipment_id
    WHERE r.ts > coalesce(u.through_ts, '-infinity')
), steps AS (
    SELECT equipment_id, fuel_level_pct,
           coalesce(engine_rpm >= 300 AND engine_rpm < 1200 AND coalesce(speed_kmh, 0) < 1, false) AS idling,
           -- least() skips NULL: the newest reading, with no next one, must count nothing.
           CASE WHEN lead(ts) OVER w IS NOT NULL THEN least(extract(epoch FROM lead(ts) OVER w - ts)::float8, 300) END
               AS span_s,
           greatest(fuel_level_pct::float8 - lead(fuel_level_pct) OVER w, 0) AS fuel_drop,
           lead(ts) OVER w IS NULL AS newest
    FROM counted WINDOW w AS (PARTITION BY equipment_id ORDER BY ts)
), totals AS (
    SELECT equipment_id, coalesce(sum(span_s) FILTER (WHERE idling), 0) AS idle_s,
           coalesce(sum(fuel_drop), 0) AS fuel_used_pct,
           bool_or(idling) FILTER (WHERE newest) AS last_idling,
           max(fuel_level_pct) FILTER (WHERE newest) AS last_fuel_level_pct
    FROM steps GROUP BY equipment_id
)
UPDATE equipment_state s
SET idle_s = coalesce(u.idle_s, 0) + t.idle_s, fuel_used_pct = coalesce(u.fuel_used_pct, 0) + t.fuel_used_pct,
    last_idling = t.last_idling, last_fuel_level_pct = t.last_fuel_level_pct
FROM totals t LEFT JOIN usage_seed u USING (equipment_id)
WHERE s.equipment_id = t.equipment_id;
