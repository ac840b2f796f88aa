-- The device registry: which controller sits on which machine, its credential, its presence, and
-- the commands sent down to it.
CREATE TABLE IF NOT EXISTS devices (
    equipment_id        text PRIMARY KEY REFERENCES equipment (id) ON DELETE CASCADE,
    -- The controller's own serial (the machine's is equipment.serial); what provisioning asks with.
    serial              text NOT NULL UNIQUE CHECK (serial ~ '^[A-Za-z0-9_.-]{1,64}$'),
    firmware            text,
    commissioned_on     date,
    report_interval_s   double precision NOT NULL DEFAULT 1 CHECK (report_interval_s > 0),
    -- pending: known, no credential yet; active: has a credential; revoked: refused by the broker.
    state               text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'active', 'revoked')),
    -- Mosquitto's PBKDF2-SHA512 form ($7$…); the password itself is never stored.
    password_hash       text,
    credential_issued_at timestamptz,
    revoked_at          timestamptz,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    CHECK (state <> 'active' OR password_hash IS NOT NULL)
);

-- What the controller last said about itself on its retained status topic (or its last will).
CREATE TABLE IF NOT EXISTS device_presence (
    equipment_id        text PRIMARY KEY REFERENCES equipment (id) ON DELETE CASCADE,
    connected           boolean NOT NULL,
    reason              text,
    changed_at          timestamptz NOT NULL,
    status_at           timestamptz NOT NULL,
    firmware            text,
    signal_dbm          real,
    report_interval_s   double precision,
    locked              boolean
);

CREATE TABLE IF NOT EXISTS commands (
    id                  uuid PRIMARY KEY,
    equipment_id        text NOT NULL REFERENCES equipment (id) ON DELETE CASCADE,
    kind                text NOT NULL CHECK (kind IN ('snapshot', 'set_report_interval', 'lock', 'unlock')),
    params              jsonb NOT NULL DEFAULT '{}',
    state               text NOT NULL DEFAULT 'queued'
                        CHECK (state IN ('queued', 'sent', 'acknowledged', 'executed', 'rejected', 'expired')),
    requested_by        text,
    reason              text,
    created_at          timestamptz NOT NULL DEFAULT now(),
    expires_at          timestamptz NOT NULL,
    sent_at             timestamptz,
    send_count          integer NOT NULL DEFAULT 0,
    acknowledged_at     timestamptz,
    finished_at         timestamptz,
    detail              text,
    result              jsonb
);
CREATE INDEX IF NOT EXISTS commands_equipment_idx ON commands (equipment_id, created_at DESC);
CREATE INDEX IF NOT EXISTS commands_open_idx ON commands (expires_at)
    WHERE state IN ('queued', 'sent', 'acknowledged');

-- The audit trail of every command: each state it reached, who asked and why.
CREATE TABLE IF NOT EXISTS command_events (
    id                  bigserial PRIMARY KEY,
    command_id          uuid NOT NULL REFERENCES commands (id) ON DELETE CASCADE,
    at                  timestamptz NOT NULL DEFAULT now(),
    state               text NOT NULL,
    actor               text,
    detail              text
);
CREATE INDEX IF NOT EXISTS command_events_command_idx ON command_events (command_id, id);
