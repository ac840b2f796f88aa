-- The fleet register every package refers to, and the cursors of outbox consumers.
CREATE TABLE IF NOT EXISTS equipment (
    id          text PRIMARY KEY CHECK (id ~ '^[A-Za-z0-9_.-]{1,64}$'),
    serial      text NOT NULL UNIQUE,
    model       text NOT NULL,
    kind        text NOT NULL,
    customer    text NOT NULL,
    site        text,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS equipment_customer_idx ON equipment (customer);

CREATE TABLE IF NOT EXISTS consumer_cursors (
    consumer    text PRIMARY KEY,
    last_xid    xid8 NOT NULL,
    last_id     bigint NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
