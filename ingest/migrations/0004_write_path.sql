-- Cheaper writes per batch. The spans of an accepted batch become three parallel arrays: building a
-- jsonb object per equipment cost more than inserting the readings themselves.
ALTER TABLE accepted_batches ADD COLUMN equipment_ids text[], ADD COLUMN first_ts timestamptz[],
    ADD COLUMN last_ts timestamptz[];
UPDATE accepted_batches b SET equipment_ids = s.ids, first_ts = s.firsts, last_ts = s.lasts
FROM (
    SELECT b0.id, array_agg(e.equipment_id ORDER BY e.equipment_id) AS ids, array_agg(e.first_ts ORDER BY e.equipment_id) AS firsts,
           array_agg(e.last_ts ORDER BY e.equipment_id) AS lasts
    FROM accepted_batches b0
    CROSS JOIN LATERAL jsonb_to_recordset(b0.spans) AS e(equipment_id text, first_ts timestamptz, last_ts timestamptz)
    GROUP BY b0.id
) s
WHERE s.id = b.id;
ALTER TABLE accepted_batches DROP COLUMN spans,
    ALTER COLUMN equipment_ids SET NOT NULL, ALTER COLUMN first_ts SET NOT NULL, ALTER COLUMN last_ts SET NOT NULL;

-- Every batch updates one equipment_state row per machine and one readings_hourly row per machine
-- and hour. Room left in each page lets PostgreSQL update those rows in place (HOT, no index
-- entry), which costs about a third less per row. readings_hourly is a small fraction of readings
-- (one row per machine-hour), so doubling its pages is cheap.
ALTER TABLE equipment_state SET (fillfactor = 50);
ALTER TABLE readings_hourly SET (fillfactor = 50);
