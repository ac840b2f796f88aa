-- Fault episodes, the events alarms consume (core.outbox order), and rule state per equipment.
CREATE TABLE IF NOT EXISTS faults (
    id              bigserial PRIMARY KEY,
    equipment_id    text NOT NULL REFERENCES equipment (id) ON DELETE CASCADE,
    fault_code      text NOT NULL,
    severity        text NOT NULL,
    rule            text NOT NULL,
    rule_version    integer NOT NULL,
    started_at      timestamptz NOT NULL,
    ended_at        timestamptz,
    evidence        jsonb NOT NULL,
    clear_evidence  jsonb
);
-- A rule has at most one open episode per equipment and fault.
CREATE UNIQUE INDEX IF NOT EXISTS faults_one_open_idx ON faults (equipment_id, fault_code) WHERE ended_at IS NULL;
CREATE INDEX IF NOT EXISTS faults_equipment_idx ON faults (equipment_id, started_at DESC);

CREATE TABLE IF NOT EXISTS fault_events (
    id              bigserial PRIMARY KEY,
    xid             xid8 NOT NULL DEFAULT pg_current_xact_id(),
    fault_id        bigint NOT NULL REFERENCES faults (id) ON DELETE CASCADE,
    kind            text NOT NULL CHECK (kind IN ('raised', 'cleared')),
    at              timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS fault_events_xid_idx ON fault_events (xid, id);

CREATE TABLE IF NOT EXISTS rule_state (
    equipment_id    text NOT NULL REFERENCES equipment (id) ON DELETE CASCADE,
    rule            text NOT NULL,
    last_ts         timestamptz NOT NULL,
    state           jsonb NOT NULL,
    PRIMARY KEY (equipment_id, rule)
);
