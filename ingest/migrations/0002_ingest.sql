-- Latest known state per equipment, what could not be accepted, and the batches handed on.
CREATE TABLE IF NOT EXISTS equipment_state (
    equipment_id        text PRIMARY KEY REFERENCES equipment (id) ON DELETE CASCADE,
    last_ts             timestamptz NOT NULL,
    last_received_at    timestamptz NOT NULL,
    last_seq            bigint,
    oil_temp_c          real,
    engine_rpm          real,
    hydraulic_pressure_bar real,
    coolant_temp_c      real,
    fuel_level_pct      real,
    engine_hours        double precision,
    lat                 double precision,
    lon                 double precision,
    speed_kmh           real
);

CREATE TABLE IF NOT EXISTS dead_letters (
    id              bigserial PRIMARY KEY,
    received_at     timestamptz NOT NULL DEFAULT now(),
    topic           text NOT NULL,
    equipment_id    text,
    reason          text NOT NULL,
    detail          text,
    payload         bytea NOT NULL,
    payload_bytes   integer NOT NULL
);
CREATE INDEX IF NOT EXISTS dead_letters_received_idx ON dead_letters (received_at);
CREATE INDEX IF NOT EXISTS dead_letters_reason_idx ON dead_letters (reason, received_at);

-- One row per committed write: which equipment got new readings, over which time span.
-- Diagnostics reads these in commit-safe order (core.outbox).
CREATE TABLE IF NOT EXISTS accepted_batches (
    id          bigserial PRIMARY KEY,
    xid         xid8 NOT NULL DEFAULT pg_current_xact_id(),
    accepted_at timestamptz NOT NULL DEFAULT now(),
    readings    integer NOT NULL,
    spans       jsonb NOT NULL
);
CREATE INDEX IF NOT EXISTS accepted_batches_xid_idx ON accepted_batches (xid, id);

CREATE TABLE IF NOT EXISTS ingest_stats (
    worker              text PRIMARY KEY,
    started_at          timestamptz NOT NULL,
    updated_at          timestamptz NOT NULL,
    messages            bigint NOT NULL DEFAULT 0,
    readings_stored     bigint NOT NULL DEFAULT 0,
    readings_duplicate  bigint NOT NULL DEFAULT 0,
    dead_letters        bigint NOT NULL DEFAULT 0
);
