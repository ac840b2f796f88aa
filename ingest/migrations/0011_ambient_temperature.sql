-- Ambient air temperature (J1939 SPN 171), an optional channel of protocol v1: a column of readings,
-- the machine's latest value, and the hourly sum and count like the other averaged channels. On
-- readings a plain nullable column without default: it rewrites nothing, and it is the form a
-- TimescaleDB hypertable with compression accepts (IF NOT EXISTS failed there before 2.7; a
-- migration runs once anyway). Readings stored before carry none: zero sums and counts are right.
ALTER TABLE readings ADD COLUMN ambient_temp_c real;
ALTER TABLE equipment_state ADD COLUMN ambient_temp_c real;
ALTER TABLE readings_hourly ADD COLUMN ambient_temp_c_sum double precision NOT NULL DEFAULT 0,
    ADD COLUMN ambient_temp_c_n integer NOT NULL DEFAULT 0;
