-- The work-order loop: states, who holds the ticket, the resolution, SLA deadlines and the moments
-- that stop them, per-customer contracts, SLA warnings/breaches (once each), callback surveys.
ALTER TABLE tickets
    ADD COLUMN IF NOT EXISTS engineer        text,          -- dispatched to (a name until dispatch has its tables)
    ADD COLUMN IF NOT EXISTS expert_group    text,          -- escalated to (R&D, supplier …)
    ADD COLUMN IF NOT EXISTS escalated_from  text,          -- the state `reassign` returns to
    ADD COLUMN IF NOT EXISTS resolution      text CHECK (resolution IN ('remote', 'on_site')),
    ADD COLUMN IF NOT EXISTS first_time_fix  boolean,
    ADD COLUMN IF NOT EXISTS work_done       text,
    ADD COLUMN IF NOT EXISTS parts_used      jsonb,
    ADD COLUMN IF NOT EXISTS respond_by      timestamptz,
    ADD COLUMN IF NOT EXISTS arrive_by       timestamptz,
    ADD COLUMN IF NOT EXISTS resolve_by      timestamptz,
    ADD COLUMN IF NOT EXISTS responded_at    timestamptz,   -- first step out of 'created'
    ADD COLUMN IF NOT EXISTS dispatched_at   timestamptz,   -- latest dispatch (starts the arrival timer)
    ADD COLUMN IF NOT EXISTS arrived_at      timestamptz,
    ADD COLUMN IF NOT EXISTS resolved_at     timestamptz,
    ADD COLUMN IF NOT EXISTS ended_at        timestamptz;   -- closed, rejected or cancelled

ALTER TABLE tickets ADD CONSTRAINT tickets_state_known CHECK (state IN (
    'created', 'accepted', 'remote_diagnosis', 'escalated', 'dispatched', 'en_route', 'on_site',
    'resolved', 'complaint', 'closed', 'rejected', 'cancelled'));

UPDATE tickets SET respond_by = created_at + interval '4 hours' WHERE respond_by IS NULL;
UPDATE tickets SET resolve_by = created_at + interval '24 hours' WHERE resolve_by IS NULL;

CREATE INDEX IF NOT EXISTS tickets_created_idx ON tickets (created_at);
CREATE INDEX IF NOT EXISTS tickets_open_idx ON tickets (id) WHERE ended_at IS NULL;

-- Service promises per customer (equipment.customer); customers without a row get the defaults.
CREATE TABLE IF NOT EXISTS service_contracts (
    customer    text PRIMARY KEY,
    respond_h   double precision NOT NULL DEFAULT 4 CHECK (respond_h > 0),
    -- Arrival promised after the response deadline when dispatch gives no distance-based time.
    arrive_h    double precision NOT NULL DEFAULT 4 CHECK (arrive_h > 0),
    resolve_h   double precision NOT NULL DEFAULT 24 CHECK (resolve_h > 0),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- One warning and one breach per ticket and timer, ever: the primary key makes the scheduler's
-- work idempotent across restarts and concurrent schedulers.
CREATE TABLE IF NOT EXISTS ticket_sla_alerts (
    ticket_id   bigint NOT NULL REFERENCES tickets (id) ON DELETE CASCADE,
    timer       text NOT NULL CHECK (timer IN ('respond', 'arrive', 'resolve')),
    kind        text NOT NULL CHECK (kind IN ('warning', 'breach')),
    due         timestamptz NOT NULL,
    at          timestamptz NOT NULL,
    PRIMARY KEY (ticket_id, timer, kind)
);

-- Callback surveys: round 1 after resolution, round 2 the callback after a complaint.
CREATE TABLE IF NOT EXISTS ticket_surveys (
    ticket_id        bigint NOT NULL REFERENCES tickets (id) ON DELETE CASCADE,
    round            smallint NOT NULL CHECK (round IN (1, 2)),
    product_quality  smallint NOT NULL CHECK (product_quality BETWEEN 1 AND 5),
    overall_service  smallint NOT NULL CHECK (overall_service BETWEEN 1 AND 5),
    timeliness       smallint NOT NULL CHECK (timeliness BETWEEN 1 AND 5),
    attitude         smallint NOT NULL CHECK (attitude BETWEEN 1 AND 5),
    engineer_skill   smallint NOT NULL CHECK (engineer_skill BETWEEN 1 AND 5),
    parts_supply     smallint NOT NULL CHECK (parts_supply BETWEEN 1 AND 5),
    comment          text NOT NULL DEFAULT '',
    actor            text NOT NULL,
    at               timestamptz NOT NULL,
    PRIMARY KEY (ticket_id, round)
);
