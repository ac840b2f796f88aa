-- TimescaleDB 2.x: the same readings table as a hypertable with daily chunks, compressed after a
-- week (segmented by equipment so one machine's history decompresses alone), kept for 400 days.
CREATE EXTENSION IF NOT EXISTS timescaledb;
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
);
SELECT create_hypertable('readings', 'ts', chunk_time_interval => INTERVAL '1 day', if_not_exists => TRUE);
ALTER TABLE readings SET (
    timescaledb.compress,
    timescaledb.compress_segmentby = 'equipment_id',
    timescaledb.compress_orderby = 'ts DESC'
);
SELECT add_compression_policy('readings', INTERVAL '7 days', if_not_exists => TRUE);
SELECT add_retention_policy('readings', INTERVAL '400 days', if_not_exists => TRUE);
