-- The ISO 15143-3 running totals leave equipment_state for a table of their own, caught up by the
-- ingest workers' usage job every few seconds (ingest/usage.py) rather than by the batch writer:
-- kept in the batch's transaction they serialised the writers and cost a third of ingest's rate.
CREATE TABLE IF NOT EXISTS equipment_usage (
    equipment_id        text PRIMARY KEY REFERENCES equipment (id) ON DELETE CASCADE,
    through_ts          timestamptz NOT NULL,                 -- the newest reading counted
    idle_s              double precision NOT NULL DEFAULT 0,  -- seconds idling through it
    fuel_used_pct       double precision NOT NULL DEFAULT 0,  -- sum of the level's drops, % of the tank
    last_idling         boolean NOT NULL DEFAULT false,       -- that reading idles (until the next)
    last_fuel_level_pct real                                  -- its own level (NULL: it reported none)
);

INSERT INTO equipment_usage (equipment_id, through_ts, idle_s, fuel_used_pct, last_idling, last_fuel_level_pct)
SELECT equipment_id, last_ts, idle_s, fuel_used_pct, last_idling, last_fuel_level_pct FROM equipment_state
ON CONFLICT (equipment_id) DO NOTHING;

ALTER TABLE equipment_state
    DROP COLUMN IF EXISTS idle_s, DROP COLUMN IF EXISTS fuel_used_pct, DROP COLUMN IF EXISTS last_idling,
    DROP COLUMN IF EXISTS last_fuel_level_pct;
