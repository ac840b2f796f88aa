-- Plain PostgreSQL: the readings table on native range partitioning by day. Partitions are
-- created ahead by ingest.partitions; anything outside them lands in the default partition.
CREATE TABLE IF NOT EXISTS readings (
    equipment_id            text NOT NULL,
    ts                      timestamptz NOT NULL,
    oil_temp_c              real,
    engine_rpm              real,
    hydraulic_pressure_bar  real,
    coolant_temp_c          real,
    fuel_level_pct          real,
    engine_hours            double precision,
    lat                     double precision,
    lon                     double precision,
    speed_kmh               real,
    fault_codes             jsonb,
    PRIMARY KEY (equipment_id, ts)
) PARTITION BY RANGE (ts);
CREATE TABLE IF NOT EXISTS readings_default PARTITION OF readings DEFAULT;
