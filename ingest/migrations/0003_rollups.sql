-- Hourly rollups of readings, kept by the writer in the transaction that stores the readings, so a
-- history of months is read from a few thousand rows instead of millions. Sums and counts (not
-- averages) so that any coarser bucket averages exactly like the raw readings would.
CREATE TABLE IF NOT EXISTS readings_hourly (
    equipment_id                text NOT NULL,
    hour                        timestamptz NOT NULL,
    samples                     integer NOT NULL,
    oil_temp_c_sum              double precision NOT NULL DEFAULT 0,
    oil_temp_c_n                integer NOT NULL DEFAULT 0,
    engine_rpm_sum              double precision NOT NULL DEFAULT 0,
    engine_rpm_n                integer NOT NULL DEFAULT 0,
    hydraulic_pressure_bar_sum  double precision NOT NULL DEFAULT 0,
    hydraulic_pressure_bar_n    integer NOT NULL DEFAULT 0,
    coolant_temp_c_sum          double precision NOT NULL DEFAULT 0,
    coolant_temp_c_n            integer NOT NULL DEFAULT 0,
    fuel_level_pct_sum          double precision NOT NULL DEFAULT 0,
    fuel_level_pct_n            integer NOT NULL DEFAULT 0,
    speed_kmh_sum               double precision NOT NULL DEFAULT 0,
    speed_kmh_n                 integer NOT NULL DEFAULT 0,
    engine_hours_max            double precision,
    position_ts                 timestamptz,
    lat                         double precision,
    lon                         double precision,
    PRIMARY KEY (equipment_id, hour)
);

-- What was stored before this migration.
INSERT INTO readings_hourly
SELECT equipment_id, date_bin('1 hour', ts, TIMESTAMPTZ '2000-01-01 00:00+00') AS hour, count(*),
       coalesce(sum(oil_temp_c::float8), 0), count(oil_temp_c), coalesce(sum(engine_rpm::float8), 0), count(engine_rpm),
       coalesce(sum(hydraulic_pressure_bar::float8), 0), count(hydraulic_pressure_bar),
       coalesce(sum(coolant_temp_c::float8), 0), count(coolant_temp_c), coalesce(sum(fuel_level_pct::float8), 0), count(fuel_level_pct),
       coalesce(sum(speed_kmh::float8), 0), count(speed_kmh), max(engine_hours),
       max(ts) FILTER (WHERE lat IS NOT NULL AND lon IS NOT NULL),
       (array_agg(lat ORDER BY ts DESC) FILTER (WHERE lat IS NOT NULL AND lon IS NOT NULL))[1],
       (array_agg(lon ORDER BY ts DESC) FILTER (WHERE lat IS NOT NULL AND lon IS NOT NULL))[1]
FROM readings GROUP BY 1, 2
ON CONFLICT DO NOTHING;
