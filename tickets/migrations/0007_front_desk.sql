-- The front desk: contract tiers with their time limits per kind of request, tickets of every kind
-- and channel, and the calls the control centre answers.

-- A tier's limits hold for faults; contract_tier_limits may set other ones per kind of request.
CREATE TABLE IF NOT EXISTS contract_tiers (
    name                    text PRIMARY KEY CHECK (length(name) BETWEEN 1 AND 100),
    description             text NOT NULL DEFAULT '',
    respond_h               double precision NOT NULL CHECK (respond_h > 0),
    arrive_h                double precision NOT NULL CHECK (arrive_h > 0),
    resolve_h               double precision NOT NULL CHECK (resolve_h > 0),
    remote_diagnosis_min    double precision NOT NULL DEFAULT 30 CHECK (remote_diagnosis_min > 0),
    updated_at              timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS contract_tier_limits (
    tier        text NOT NULL REFERENCES contract_tiers (name) ON DELETE CASCADE ON UPDATE CASCADE,
    kind        text NOT NULL CHECK (kind IN ('fault', 'consultation', 'complaint', 'suggestion', 'maintenance')),
    respond_h   double precision NOT NULL CHECK (respond_h > 0),
    resolve_h   double precision NOT NULL CHECK (resolve_h > 0),
    PRIMARY KEY (tier, kind)
);
ALTER TABLE customers ADD COLUMN IF NOT EXISTS tier text REFERENCES contract_tiers (name) ON UPDATE CASCADE;

-- The former per-customer contracts become a tier each, held by their customer.
DO $$ BEGIN
    IF to_regclass('service_contracts') IS NOT NULL THEN
        INSERT INTO contract_tiers (name, description, respond_h, arrive_h, resolve_h)
        SELECT 'contract of ' || customer, 'carried over from the per-customer contract', respond_h, arrive_h,
               resolve_h
        FROM service_contracts ON CONFLICT DO NOTHING;
        INSERT INTO customers (id, name) SELECT customer, customer FROM service_contracts ON CONFLICT DO NOTHING;
        UPDATE customers c SET tier = 'contract of ' || s.customer FROM service_contracts s WHERE s.customer = c.id;
        DROP TABLE service_contracts;
    END IF;
END $$;

ALTER TABLE tickets
    ADD COLUMN IF NOT EXISTS kind text NOT NULL DEFAULT 'fault'
        CHECK (kind IN ('fault', 'consultation', 'complaint', 'suggestion', 'maintenance')),
    ADD COLUMN IF NOT EXISTS channel text NOT NULL DEFAULT 'phone'
        CHECK (channel IN ('phone', 'portal', 'email', 'sms', 'alarm', 'app')),
    ADD COLUMN IF NOT EXISTS contact_id bigint REFERENCES customer_contacts (id) ON DELETE SET NULL;
UPDATE tickets SET channel = 'alarm' WHERE source_alarm_id IS NOT NULL AND channel <> 'alarm';

CREATE TABLE IF NOT EXISTS calls (
    id              bigserial PRIMARY KEY,
    started_at      timestamptz NOT NULL DEFAULT now(),
    ended_at        timestamptz,
    -- As the caller's line gave it, and normalised where it could be.
    phone           text NOT NULL CHECK (length(phone) <= 64),
    phone_e164      text,
    customer_id     text REFERENCES customers (id) ON DELETE SET NULL ON UPDATE CASCADE,
    contact_id      bigint REFERENCES customer_contacts (id) ON DELETE SET NULL,
    equipment_id    text REFERENCES equipment (id) ON DELETE SET NULL,
    agent           text,
    source          text NOT NULL DEFAULT 'agent' CHECK (source IN ('agent', 'cti')),
    line            text,
    outcome         text CHECK (outcome IN ('solved_on_phone', 'work_order_opened', 'question_answered',
                                            'complaint', 'other')),
    ticket_id       bigint REFERENCES tickets (id) ON DELETE SET NULL,
    notes           text NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS calls_started_idx ON calls (started_at DESC);
CREATE INDEX IF NOT EXISTS calls_customer_idx ON calls (customer_id, started_at DESC);
