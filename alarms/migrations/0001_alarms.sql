CREATE TABLE IF NOT EXISTS alarms (
    id                  bigserial PRIMARY KEY,
    equipment_id        text NOT NULL REFERENCES equipment (id) ON DELETE CASCADE,
    fault_code          text NOT NULL,
    severity            text NOT NULL CHECK (severity IN ('critical', 'major', 'minor', 'warning')),
    state               text NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'cleared')),
    raised_at           timestamptz NOT NULL,
    cleared_at          timestamptz,
    last_fault_id       bigint NOT NULL,
    occurrences         integer NOT NULL DEFAULT 1,
    ticket_id           bigint,
    ticket_attempts     integer NOT NULL DEFAULT 0,
    ticket_error        text,
    next_ticket_try_at  timestamptz NOT NULL DEFAULT now()
);
-- The database, not the worker, guarantees one active alarm per equipment and fault.
CREATE UNIQUE INDEX IF NOT EXISTS alarms_one_active_idx ON alarms (equipment_id, fault_code) WHERE state = 'active';
CREATE INDEX IF NOT EXISTS alarms_raised_idx ON alarms (raised_at DESC);
CREATE INDEX IF NOT EXISTS alarms_pending_ticket_idx ON alarms (next_ticket_try_at) WHERE ticket_id IS NULL;
