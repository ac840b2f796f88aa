-- Running totals behind the ISO 15143-3 cumulative elements (idle hours, fuel used): controllers do
-- not report them, so they are summed from the readings, catching up from where the last sum stopped.
-- The last reading counted is kept so that the span and the fuel drop up to the next one count too.
CREATE TABLE IF NOT EXISTS usage_totals (
    equipment_id    text PRIMARY KEY REFERENCES equipment (id) ON DELETE CASCADE,
    through_ts      timestamptz,  -- the newest reading counted; NULL: none yet
    idle_s          double precision NOT NULL DEFAULT 0,
    fuel_used_pct   double precision NOT NULL DEFAULT 0,
    last_rpm        real,
    last_speed_kmh  real,
    last_fuel_pct   real,
    updated_at      timestamptz NOT NULL DEFAULT now()
);
