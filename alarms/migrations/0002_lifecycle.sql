-- Alarm lifecycle: acknowledgement, assignee, shelving, flapping, escalation, and the history of each alarm.

ALTER TABLE alarms
    -- When the system created the alarm (raised_at is the fault's own time, which may be late data).
    ADD COLUMN IF NOT EXISTS created_at       timestamptz NOT NULL DEFAULT now(),
    -- Fault time of the latest raise (first raise, occurrence while active, or reopening after a clear).
    ADD COLUMN IF NOT EXISTS last_raised_at   timestamptz,
    ADD COLUMN IF NOT EXISTS acknowledged_at  timestamptz,
    ADD COLUMN IF NOT EXISTS acknowledged_by  text,
    ADD COLUMN IF NOT EXISTS assignee         text,
    ADD COLUMN IF NOT EXISTS shelved_until    timestamptz,
    ADD COLUMN IF NOT EXISTS shelved_by       text,
    -- Times a cleared alarm came back within the flap window and was reopened instead of a new alarm.
    ADD COLUMN IF NOT EXISTS flap_count       integer NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS flapping         boolean NOT NULL DEFAULT false,
    -- Highest escalation level reached (0: none); each level at most once (alarm_escalations' key).
    ADD COLUMN IF NOT EXISTS escalation_level integer NOT NULL DEFAULT 0;

UPDATE alarms SET last_raised_at = raised_at WHERE last_raised_at IS NULL;

ALTER TABLE alarms ADD CONSTRAINT alarms_ack_pair_chk CHECK ((acknowledged_at IS NULL) = (acknowledged_by IS NULL));

-- Finding a recently cleared alarm of the same equipment and fault (flapping), and the escalation scan.
CREATE INDEX IF NOT EXISTS alarms_equipment_fault_idx ON alarms (equipment_id, fault_code, cleared_at DESC);
CREATE INDEX IF NOT EXISTS alarms_unacked_active_idx ON alarms (created_at)
    WHERE state = 'active' AND acknowledged_at IS NULL;
CREATE INDEX IF NOT EXISTS alarms_shelved_idx ON alarms (shelved_until) WHERE shelved_until IS NOT NULL;

-- Every event in an alarm's life, in order. Truncating or deleting alarms takes their history along.
CREATE TABLE IF NOT EXISTS alarm_events (
    id        bigserial PRIMARY KEY,
    alarm_id  bigint NOT NULL REFERENCES alarms (id) ON DELETE CASCADE,
    at        timestamptz NOT NULL,
    kind      text NOT NULL CHECK (kind IN ('raised', 'occurrence', 'reopened', 'flapping', 'acknowledged',
                                            'commented', 'assigned', 'shelved', 'unshelved', 'escalated',
                                            'escalation_sent', 'ticket_opened', 'cleared')),
    actor     text NOT NULL,
    detail    jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX IF NOT EXISTS alarm_events_alarm_idx ON alarm_events (alarm_id, id);
CREATE INDEX IF NOT EXISTS alarm_events_reopened_idx ON alarm_events (alarm_id, at) WHERE kind = 'reopened';

-- One row per alarm and escalation level: the primary key makes each level happen at most once, and
-- the delivery state (attempts, next try) survives restarts of the alarms worker.
CREATE TABLE IF NOT EXISTS alarm_escalations (
    alarm_id     bigint NOT NULL REFERENCES alarms (id) ON DELETE CASCADE,
    level        integer NOT NULL CHECK (level >= 1),
    created_at   timestamptz NOT NULL,
    -- pending: to be delivered to the webhook; sent: delivered; unsent: no webhook configured, recorded only.
    status       text NOT NULL CHECK (status IN ('pending', 'sent', 'unsent')),
    attempts     integer NOT NULL DEFAULT 0,
    next_try_at  timestamptz NOT NULL,
    last_error   text,
    sent_at      timestamptz,
    PRIMARY KEY (alarm_id, level)
);
CREATE INDEX IF NOT EXISTS alarm_escalations_pending_idx ON alarm_escalations (next_try_at) WHERE status = 'pending';
