-- Notifications that reach people: an outbox written in the transaction of the event that causes
-- it (notifications.outbox.notify), delivered by the notify workers (notifications.worker), every
-- attempt recorded. Subject and body are rendered when the row is written, so what is delivered
-- never depends on the code that runs the delivery.
CREATE TABLE IF NOT EXISTS notifications (
    id              bigserial PRIMARY KEY,
    -- Stable per row: the Idempotency-Key of a webhook or SMS, the Message-ID of an e-mail, so that
    -- a receiver can drop the repeat that follows a crash between sending and recording.
    key             uuid NOT NULL UNIQUE DEFAULT gen_random_uuid(),
    event           text NOT NULL,
    ticket_id       bigint REFERENCES tickets (id) ON DELETE SET NULL,
    audience        text NOT NULL CHECK (audience IN ('customer', 'engineer', 'group', 'integration')),
    recipient       text NOT NULL,               -- contact:<id>, engineer:<id>, member:<group>/<member>, group:<name>, integration
    recipient_name  text NOT NULL DEFAULT '',
    channel         text NOT NULL CHECK (channel IN ('email', 'sms', 'webhook')),
    address         text,                        -- e-mail address, E.164 number or URL; NULL when unsendable
    language        text NOT NULL,
    subject         text NOT NULL,
    body            text NOT NULL,
    facts           jsonb NOT NULL,
    state           text NOT NULL DEFAULT 'pending'
                    CHECK (state IN ('pending', 'sent', 'failed', 'unsendable', 'unsent')),
    reason          text,                        -- why unsendable, unsent or failed
    created_at      timestamptz NOT NULL,        -- the event's time
    queued_at       timestamptz NOT NULL DEFAULT now(),
    -- When a worker may take the row: now for a new one, the backoff for a retry, the end of the lease
    -- while a worker holds it (a worker that dies mid-send leaves the row due again after the lease).
    next_try_at     timestamptz NOT NULL,
    attempts        integer NOT NULL DEFAULT 0,
    lease_token     uuid,                        -- the claim that may record the outcome
    leased_by       text,
    sent_at         timestamptz,
    finished_at     timestamptz,                 -- sent, failed or unsent
    CHECK ((state = 'unsendable') = (address IS NULL))
);
CREATE INDEX IF NOT EXISTS notifications_due_idx ON notifications (next_try_at) WHERE state = 'pending';
CREATE INDEX IF NOT EXISTS notifications_ticket_idx ON notifications (ticket_id);
CREATE INDEX IF NOT EXISTS notifications_queued_idx ON notifications (queued_at);

-- The notify workers wake when rows commit (core's notify_inserted: channel notifications).
DROP TRIGGER IF EXISTS notifications_notify ON notifications;
CREATE TRIGGER notifications_notify AFTER INSERT ON notifications
    FOR EACH STATEMENT EXECUTE FUNCTION notify_inserted();

-- Every delivery attempt, successful or not: the HTTP status or the SMTP reply, or the error.
CREATE TABLE IF NOT EXISTS notification_attempts (
    id               bigserial PRIMARY KEY,
    notification_id  bigint NOT NULL REFERENCES notifications (id) ON DELETE CASCADE,
    at               timestamptz NOT NULL,
    worker           text NOT NULL,
    channel          text NOT NULL,
    ok               boolean NOT NULL,
    status_code      integer,                     -- HTTP status, or SMTP reply code
    reply            text,                        -- SMTP reply text, or the start of the HTTP answer
    error            text,                        -- what went wrong (connection refused, timeout …)
    duration_ms      double precision NOT NULL
);
CREATE INDEX IF NOT EXISTS notification_attempts_notification_idx ON notification_attempts (notification_id);
