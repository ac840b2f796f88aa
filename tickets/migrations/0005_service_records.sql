-- Services done on a machine: the scheduled services of its hour-meter schedule, as the engineer
-- recorded them. Recording one also raises equipment.last_service_hours (tickets.service_records),
-- which is what the service-due rule reads: without these rows a service-due reminder never clears.
CREATE TABLE IF NOT EXISTS service_records (
    id            bigserial PRIMARY KEY,
    equipment_id  text NOT NULL REFERENCES equipment (id) ON DELETE CASCADE,
    performed_at  timestamptz NOT NULL,
    engine_hours  double precision NOT NULL CHECK (engine_hours >= 0),   -- the hour meter at the service
    -- Which scheduled service: its interval in engine hours (the rulebook's service interval or one
    -- of its major services); the API checks it against the machine's schedule.
    interval_h    double precision NOT NULL CHECK (interval_h > 0),
    work_done     text NOT NULL,
    parts_used    jsonb NOT NULL DEFAULT '[]',                           -- [{"part": …, "quantity": …}]
    -- The work order it was done under; the same machine's (tickets.service_records checks it).
    ticket_id     bigint REFERENCES tickets (id) ON DELETE SET NULL,
    recorded_by   text NOT NULL,                                         -- the signed-in account
    recorded_at   timestamptz NOT NULL DEFAULT now()
);

-- A machine's services newest first: the portal's service record and the listing.
CREATE INDEX IF NOT EXISTS service_records_equipment_idx ON service_records (equipment_id, performed_at DESC, id DESC);
