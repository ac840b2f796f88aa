-- The rules engine keeps one state document per machine (all rules, evidence, clocks), and a
-- raised fault carries its diagnosis: ranked probable causes with remedies.
DROP TABLE IF EXISTS rule_state;
CREATE TABLE IF NOT EXISTS diagnostic_state (
    equipment_id    text PRIMARY KEY REFERENCES equipment (id) ON DELETE CASCADE,
    last_ts         timestamptz,
    last_arrival    timestamptz,
    rulebook_version integer NOT NULL,
    state           jsonb NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE faults ADD COLUMN IF NOT EXISTS title text;
ALTER TABLE faults ADD COLUMN IF NOT EXISTS diagnosis jsonb;
ALTER TABLE faults ADD COLUMN IF NOT EXISTS remote_resolvable boolean;
ALTER TABLE faults ADD COLUMN IF NOT EXISTS backfilled boolean NOT NULL DEFAULT false;
CREATE INDEX IF NOT EXISTS faults_open_code_idx ON faults (fault_code) WHERE ended_at IS NULL;

-- A fault is open once per rule: two rules may report the same code (two stuck sensors).
DROP INDEX IF EXISTS faults_one_open_idx;
CREATE UNIQUE INDEX IF NOT EXISTS faults_one_open_per_rule_idx ON faults (equipment_id, fault_code, rule)
    WHERE ended_at IS NULL;
