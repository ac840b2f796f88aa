-- The running totals behind the ISO 15143-3 snapshot are ingest's now: the batch writer keeps them on
-- equipment_state in each batch's transaction, and the snapshot only reads them. ingest's migration
-- 0006 (ingest's migrations run before api's) seeded them from this table, which nothing reads or
-- writes any more.
DROP TABLE IF EXISTS usage_totals;
