-- Where each machine may be and when (geofence, curfew), and its last recorded service.
CREATE TABLE IF NOT EXISTS sites (
    name                text PRIMARY KEY,
    lat                 double precision NOT NULL CHECK (lat BETWEEN -90 AND 90),
    lon                 double precision NOT NULL CHECK (lon BETWEEN -180 AND 180),
    radius_m            double precision NOT NULL CHECK (radius_m > 0),
    timezone            text NOT NULL DEFAULT 'UTC',
    -- Permitted operating hours in local time, [from, to); both NULL means at any time.
    permitted_from_hour integer CHECK (permitted_from_hour BETWEEN 0 AND 23),
    permitted_to_hour   integer CHECK (permitted_to_hour BETWEEN 0 AND 24),
    CHECK ((permitted_from_hour IS NULL) = (permitted_to_hour IS NULL))
);
ALTER TABLE equipment ADD COLUMN IF NOT EXISTS last_service_hours double precision;
