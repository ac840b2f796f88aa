-- Customers as records: the company behind equipment.customer, its contacts and their phone numbers.
-- The id is the label machines already carry, so nothing that names a customer changes.
CREATE TABLE IF NOT EXISTS customers (
    id              text PRIMARY KEY CHECK (length(id) BETWEEN 1 AND 128),
    name            text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    contract_number text,
    contract_until  date,
    notes           text NOT NULL DEFAULT '',
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
INSERT INTO customers (id, name) SELECT DISTINCT customer, customer FROM equipment ON CONFLICT DO NOTHING;

-- A machine registered for a customer not on record yet brings the record with it (named as its id,
-- to be completed): every way of registering machines keeps working, and no machine names a
-- customer that does not exist.
CREATE OR REPLACE FUNCTION equipment_customer_on_record() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO customers (id, name) VALUES (NEW.customer, NEW.customer) ON CONFLICT DO NOTHING;
    RETURN NEW;
END $$;
DROP TRIGGER IF EXISTS equipment_customer_on_record ON equipment;
CREATE TRIGGER equipment_customer_on_record BEFORE INSERT OR UPDATE OF customer ON equipment
    FOR EACH ROW EXECUTE FUNCTION equipment_customer_on_record();
DO $$ BEGIN
    ALTER TABLE equipment ADD CONSTRAINT equipment_customer_fkey
        FOREIGN KEY (customer) REFERENCES customers (id) ON UPDATE CASCADE;
EXCEPTION WHEN duplicate_object THEN NULL;
END $$;
CREATE INDEX IF NOT EXISTS equipment_customer_idx ON equipment (customer);

CREATE TABLE IF NOT EXISTS customer_contacts (
    id                  bigserial PRIMARY KEY,
    customer_id         text NOT NULL REFERENCES customers (id) ON DELETE CASCADE ON UPDATE CASCADE,
    name                text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    role                text NOT NULL DEFAULT '',
    email               text,
    preferred_channel   text NOT NULL DEFAULT 'phone' CHECK (preferred_channel IN ('phone', 'sms', 'email', 'app')),
    language            text NOT NULL DEFAULT 'en' CHECK (language ~ '^[a-z]{2}(-[A-Za-z]{2,4})?$'),
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS customer_contacts_customer_idx ON customer_contacts (customer_id);

-- Numbers in E.164, whatever spelling they were given in (core.customers normalises them).
CREATE TABLE IF NOT EXISTS contact_phones (
    contact_id  bigint NOT NULL REFERENCES customer_contacts (id) ON DELETE CASCADE,
    e164        text NOT NULL CHECK (e164 ~ '^\+[1-9][0-9]{6,14}$'),
    label       text NOT NULL DEFAULT 'mobile',
    PRIMARY KEY (contact_id, e164)
);
CREATE INDEX IF NOT EXISTS contact_phones_e164_idx ON contact_phones (e164);
-- A partial number (its last digits, or the number without its country code) matches from the end.
CREATE INDEX IF NOT EXISTS contact_phones_reversed_idx ON contact_phones (reverse(e164) text_pattern_ops);
