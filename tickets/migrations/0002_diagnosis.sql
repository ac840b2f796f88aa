-- A ticket opened from an alarm carries the diagnosis: ranked causes, remedies, and whether the
-- fault is likely solved remotely (the work order starts with remote diagnosis when it is).
ALTER TABLE tickets ADD COLUMN IF NOT EXISTS diagnosis jsonb;
ALTER TABLE tickets ADD COLUMN IF NOT EXISTS remote_resolvable boolean;

-- Every alarm that led to a ticket: the one that opened it, and those that arrived for the same
-- machine while it was open (one work order per machine incident, not one per symptom).
CREATE TABLE IF NOT EXISTS ticket_alarms (
    alarm_id    bigint PRIMARY KEY,
    ticket_id   bigint NOT NULL REFERENCES tickets (id) ON DELETE CASCADE,
    linked_at   timestamptz NOT NULL DEFAULT now()
);
INSERT INTO ticket_alarms (alarm_id, ticket_id)
SELECT source_alarm_id, id FROM tickets WHERE source_alarm_id IS NOT NULL ON CONFLICT DO NOTHING;
