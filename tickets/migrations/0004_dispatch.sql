-- Dispatch: who can be sent (engineers with skills and shifts, driving service vehicles), where
-- spare parts are (warehouses and vehicles), and the plan of each dispatched ticket.
CREATE TABLE IF NOT EXISTS service_stations (
    id          text PRIMARY KEY,
    name        text NOT NULL,
    lat         double precision NOT NULL CHECK (lat BETWEEN -90 AND 90),
    lon         double precision NOT NULL CHECK (lon BETWEEN -180 AND 180)
);

CREATE TABLE IF NOT EXISTS engineers (
    id           text PRIMARY KEY,
    name         text NOT NULL,
    station_id   text NOT NULL REFERENCES service_stations (id),
    skills       text[] NOT NULL DEFAULT '{}',   -- equipment models the engineer is qualified for
    shift_start  time NOT NULL DEFAULT '00:00',  -- local time at the station
    shift_end    time NOT NULL DEFAULT '00:00',  -- before shift_start: over midnight; equal: all day
    timezone     text NOT NULL DEFAULT 'UTC',
    active       boolean NOT NULL DEFAULT true
);

CREATE TABLE IF NOT EXISTS vehicles (
    id           text PRIMARY KEY,
    station_id   text NOT NULL REFERENCES service_stations (id),
    engineer_id  text UNIQUE REFERENCES engineers (id),  -- who drives it; one vehicle per engineer
    lat          double precision,                       -- last reported position (the station until then)
    lon          double precision,
    speed_kmh    double precision,
    reported_at  timestamptz
);

CREATE TABLE IF NOT EXISTS vehicle_positions (
    vehicle_id   text NOT NULL REFERENCES vehicles (id) ON DELETE CASCADE,
    at           timestamptz NOT NULL,
    lat          double precision NOT NULL,
    lon          double precision NOT NULL,
    speed_kmh    double precision,
    PRIMARY KEY (vehicle_id, at)
);

CREATE TABLE IF NOT EXISTS warehouses (
    id          text PRIMARY KEY,
    name        text NOT NULL,
    lat         double precision NOT NULL CHECK (lat BETWEEN -90 AND 90),
    lon         double precision NOT NULL CHECK (lon BETWEEN -180 AND 180)
);

-- Stock per place: a warehouse's shelves or a vehicle's load. Never negative.
CREATE TABLE IF NOT EXISTS part_stock (
    place_kind  text NOT NULL CHECK (place_kind IN ('warehouse', 'vehicle')),
    place_id    text NOT NULL,
    part        text NOT NULL,
    quantity    integer NOT NULL CHECK (quantity >= 0),
    PRIMARY KEY (place_kind, place_id, part)
);

-- Every change of stock, with the ticket that caused it.
CREATE TABLE IF NOT EXISTS stock_movements (
    id          bigserial PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT now(),
    part        text NOT NULL,
    quantity    integer NOT NULL,
    from_kind   text, from_id text,
    to_kind     text, to_id text,
    ticket_id   bigint REFERENCES tickets (id) ON DELETE SET NULL,
    reason      text NOT NULL
);

ALTER TABLE tickets
    ADD COLUMN IF NOT EXISTS vehicle_id          text,
    ADD COLUMN IF NOT EXISTS pickup_warehouse_id text,          -- where the part is collected on the way
    ADD COLUMN IF NOT EXISTS required_part       text,          -- from the diagnosis when dispatched
    ADD COLUMN IF NOT EXISTS part_picked_up_at   timestamptz,
    ADD COLUMN IF NOT EXISTS eta                 timestamptz,   -- updated from the vehicle's position
    ADD COLUMN IF NOT EXISTS eta_updated_at      timestamptz,
    ADD COLUMN IF NOT EXISTS late_warned_at      timestamptz;   -- the ETA passed arrive_by (once)

CREATE INDEX IF NOT EXISTS tickets_vehicle_active_idx ON tickets (vehicle_id)
    WHERE state IN ('dispatched', 'en_route');
