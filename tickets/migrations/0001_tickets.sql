CREATE TABLE IF NOT EXISTS tickets (
    id                  bigserial PRIMARY KEY,
    equipment_id        text NOT NULL REFERENCES equipment (id) ON DELETE CASCADE,
    title               text NOT NULL,
    description         text NOT NULL DEFAULT '',
    priority            text NOT NULL CHECK (priority IN ('critical', 'major', 'minor', 'warning')),
    state               text NOT NULL DEFAULT 'created',
    fault_code          text,
    source_alarm_id     bigint UNIQUE,
    idempotency_key     text UNIQUE,
    created_by          text NOT NULL,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS tickets_equipment_idx ON tickets (equipment_id, created_at DESC);
CREATE INDEX IF NOT EXISTS tickets_state_idx ON tickets (state, created_at DESC);

CREATE TABLE IF NOT EXISTS ticket_events (
    id          bigserial PRIMARY KEY,
    ticket_id   bigint NOT NULL REFERENCES tickets (id) ON DELETE CASCADE,
    at          timestamptz NOT NULL DEFAULT now(),
    actor       text NOT NULL,
    event       text NOT NULL,
    detail      jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS ticket_events_ticket_idx ON ticket_events (ticket_id, at);
