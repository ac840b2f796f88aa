-- After the repair: callbacks as work, complaints that go to a department and come back, the groups
-- a ticket can be handed to (experts, departments, management, the call centre) with their members,
-- consultations of expert groups, and how engineers are reached.

-- How soon after a resolution the customer is called back.
ALTER TABLE contract_tiers
    ADD COLUMN IF NOT EXISTS callback_h double precision NOT NULL DEFAULT 48 CHECK (callback_h > 0);

ALTER TABLE engineers
    ADD COLUMN IF NOT EXISTS phone             text CHECK (phone ~ '^\+[1-9][0-9]{6,14}$'),
    ADD COLUMN IF NOT EXISTS email             text CHECK (email ~ '^[^@\s]+@[^@\s]+$'),
    ADD COLUMN IF NOT EXISTS language          text NOT NULL DEFAULT 'en' CHECK (language ~ '^[a-z]{2}(-[A-Za-z]{2,4})?$'),
    ADD COLUMN IF NOT EXISTS preferred_channel text NOT NULL DEFAULT 'sms' CHECK (preferred_channel IN ('sms', 'email'));

-- A contact who hears about every work order of the customer's fleet, not only the ones they raised.
ALTER TABLE customer_contacts ADD COLUMN IF NOT EXISTS notify_all boolean NOT NULL DEFAULT false;

CREATE TABLE IF NOT EXISTS service_groups (
    name        text PRIMARY KEY CHECK (length(name) BETWEEN 1 AND 100),
    kind        text NOT NULL CHECK (kind IN ('expert', 'department', 'management', 'call_centre')),
    description text NOT NULL DEFAULT '',
    skills      text[] NOT NULL DEFAULT '{}',
    -- The group's own channel (a chat room, a queue system); set by administrators only.
    webhook_url text CHECK (webhook_url ~ '^https?://'),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS service_group_members (
    group_name        text NOT NULL REFERENCES service_groups (name) ON DELETE CASCADE ON UPDATE CASCADE,
    member            text NOT NULL CHECK (length(member) BETWEEN 1 AND 100),  -- account name or engineer id
    name              text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    email             text CHECK (email ~ '^[^@\s]+@[^@\s]+$'),
    phone             text CHECK (phone ~ '^\+[1-9][0-9]{6,14}$'),
    language          text NOT NULL DEFAULT 'en' CHECK (language ~ '^[a-z]{2}(-[A-Za-z]{2,4})?$'),
    preferred_channel text NOT NULL DEFAULT 'email' CHECK (preferred_channel IN ('email', 'sms')),
    skills            text[] NOT NULL DEFAULT '{}',
    PRIMARY KEY (group_name, member)
);

-- The departments complaints go to (tickets.service.RESPONSIBLE_DEPARTMENT), management, the call
-- centre, and the expert groups tickets were escalated to so far.
INSERT INTO service_groups (name, kind, description) VALUES
    ('quality / R&D', 'department', 'product quality complaints'),
    ('service management', 'department', 'overall service and attitude complaints'),
    ('dispatch', 'department', 'timeliness complaints'),
    ('service engineering', 'department', 'engineer skill complaints'),
    ('parts logistics', 'department', 'parts supply complaints'),
    ('management', 'management', 'complaints sent back too often'),
    ('call centre', 'call_centre', 'callbacks after repairs and complaints'),
    ('R&D', 'expert', 'design and firmware experts'),
    ('supplier', 'expert', 'component suppliers')
ON CONFLICT DO NOTHING;
INSERT INTO service_groups (name, kind, description)
SELECT DISTINCT expert_group, 'expert', 'carried over from escalated tickets' FROM tickets
WHERE expert_group IS NOT NULL AND length(expert_group) BETWEEN 1 AND 100
ON CONFLICT DO NOTHING;
ALTER TABLE tickets ADD CONSTRAINT tickets_expert_group_known
    FOREIGN KEY (expert_group) REFERENCES service_groups (name) ON UPDATE CASCADE;

-- Every time an expert group is asked about a ticket, and what it answered.
CREATE TABLE IF NOT EXISTS ticket_consultations (
    id           bigserial PRIMARY KEY,
    ticket_id    bigint NOT NULL REFERENCES tickets (id) ON DELETE CASCADE,
    group_name   text NOT NULL REFERENCES service_groups (name) ON UPDATE CASCADE,
    question     text NOT NULL DEFAULT '',
    asked_by     text NOT NULL,
    asked_at     timestamptz NOT NULL,
    answered_by  text,
    answered_at  timestamptz,
    outcome      text
);
CREATE INDEX IF NOT EXISTS ticket_consultations_ticket_idx ON ticket_consultations (ticket_id);
CREATE UNIQUE INDEX IF NOT EXISTS ticket_consultations_open_idx ON ticket_consultations (ticket_id)
    WHERE answered_at IS NULL;

-- A complaint goes to one department at a time, with a deadline for its answer; each time it is
-- sent (back) is a round, kept with its answer and the callback that checked it.
CREATE TABLE IF NOT EXISTS complaints (
    id           bigserial PRIMARY KEY,
    ticket_id    bigint NOT NULL REFERENCES tickets (id) ON DELETE CASCADE,
    source       text NOT NULL CHECK (source IN ('survey', 'direct')),
    indicators   text[] NOT NULL DEFAULT '{}',   -- the survey indicators scored low
    description  text NOT NULL DEFAULT '',
    state        text NOT NULL DEFAULT 'with_department'
                 CHECK (state IN ('with_department', 'answered', 'escalated', 'satisfied', 'closed')),
    department   text NOT NULL REFERENCES service_groups (name) ON UPDATE CASCADE,
    round        smallint NOT NULL DEFAULT 1 CHECK (round >= 1),
    answer_due   timestamptz NOT NULL,           -- the current round's deadline
    opened_by    text NOT NULL,
    opened_at    timestamptz NOT NULL,
    closed_at    timestamptz,                    -- satisfied, or closed by management
    closing_note text
);
CREATE UNIQUE INDEX IF NOT EXISTS complaints_open_per_ticket_idx ON complaints (ticket_id)
    WHERE closed_at IS NULL;
CREATE INDEX IF NOT EXISTS complaints_opened_idx ON complaints (opened_at);

CREATE TABLE IF NOT EXISTS complaint_rounds (
    complaint_id  bigint NOT NULL REFERENCES complaints (id) ON DELETE CASCADE,
    round         smallint NOT NULL,
    department    text NOT NULL REFERENCES service_groups (name) ON UPDATE CASCADE,
    sent_at       timestamptz NOT NULL,
    answer_due    timestamptz NOT NULL,
    answer        text,
    answered_by   text,
    answered_at   timestamptz,
    satisfied     boolean,          -- what the checking callback heard
    verified_by   text,
    verified_at   timestamptz,
    verify_note   text,
    warned_at     timestamptz,      -- the SLA scheduler's warning and breach, once each
    breached_at   timestamptz,
    PRIMARY KEY (complaint_id, round)
);

-- Callbacks are work: one after every resolution (the survey), one after every department answer
-- (the check), in the call centre's queue until done or the customer cannot be reached.
CREATE TABLE IF NOT EXISTS callbacks (
    id               bigserial PRIMARY KEY,
    ticket_id        bigint NOT NULL REFERENCES tickets (id) ON DELETE CASCADE,
    purpose          text NOT NULL CHECK (purpose IN ('survey', 'complaint_check')),
    complaint_id     bigint REFERENCES complaints (id) ON DELETE CASCADE,
    complaint_round  smallint,
    contact_id       bigint REFERENCES customer_contacts (id) ON DELETE SET NULL,   -- whom to call
    assigned_to      text NOT NULL DEFAULT 'call centre',   -- the queue, or the agent who took it
    state            text NOT NULL DEFAULT 'open' CHECK (state IN ('open', 'done', 'unreachable', 'cancelled')),
    created_at       timestamptz NOT NULL,
    due_at           timestamptz NOT NULL,
    next_attempt_at  timestamptz NOT NULL,
    attempts         integer NOT NULL DEFAULT 0,
    done_at          timestamptz,
    done_by          text,
    answered_by_contact bigint REFERENCES customer_contacts (id) ON DELETE SET NULL,
    warned_at        timestamptz,
    breached_at      timestamptz,
    CHECK ((purpose = 'complaint_check') = (complaint_id IS NOT NULL AND complaint_round IS NOT NULL))
);
CREATE UNIQUE INDEX IF NOT EXISTS callbacks_survey_idx ON callbacks (ticket_id) WHERE purpose = 'survey';
CREATE UNIQUE INDEX IF NOT EXISTS callbacks_check_idx ON callbacks (complaint_id, complaint_round)
    WHERE purpose = 'complaint_check';
CREATE INDEX IF NOT EXISTS callbacks_open_idx ON callbacks (next_attempt_at) WHERE state = 'open';
CREATE INDEX IF NOT EXISTS callbacks_due_idx ON callbacks (due_at);

CREATE TABLE IF NOT EXISTS callback_attempts (
    id           bigserial PRIMARY KEY,
    callback_id  bigint NOT NULL REFERENCES callbacks (id) ON DELETE CASCADE,
    at           timestamptz NOT NULL,
    agent        text NOT NULL,
    outcome      text NOT NULL CHECK (outcome IN ('answered', 'no_answer', 'busy', 'wrong_number')),
    contact_id   bigint REFERENCES customer_contacts (id) ON DELETE SET NULL,
    note         text NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS callback_attempts_callback_idx ON callback_attempts (callback_id);

-- Resolved tickets waiting for their survey get their callback, due from the resolution.
INSERT INTO callbacks (ticket_id, purpose, contact_id, created_at, due_at, next_attempt_at)
SELECT t.id, 'survey', t.contact_id, t.resolved_at, t.resolved_at + interval '48 hours', t.resolved_at
FROM tickets t WHERE t.state = 'resolved' AND t.resolved_at IS NOT NULL
ON CONFLICT DO NOTHING;

-- Tickets already in complaint follow-up get their complaint record, with the general department.
WITH opened AS (
    INSERT INTO complaints (ticket_id, source, department, answer_due, opened_by, opened_at)
    SELECT t.id, 'survey', 'service management', t.updated_at + interval '7 days', 'migration', t.updated_at
    FROM tickets t WHERE t.state = 'complaint'
      AND NOT EXISTS (SELECT 1 FROM complaints c WHERE c.ticket_id = t.id AND c.closed_at IS NULL)
    RETURNING id, department, opened_at, answer_due
)
INSERT INTO complaint_rounds (complaint_id, round, department, sent_at, answer_due)
SELECT id, 1, department, opened_at, answer_due FROM opened;

-- Every checking callback may record the customer's scores again: round 1 is the survey after the
-- repair, round n + 1 the check after the department's n-th answer.
ALTER TABLE ticket_surveys DROP CONSTRAINT IF EXISTS ticket_surveys_round_check;
ALTER TABLE ticket_surveys ADD CONSTRAINT ticket_surveys_round_check CHECK (round >= 1);
