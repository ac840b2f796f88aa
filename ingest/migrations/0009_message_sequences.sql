-- Loss detection from the controllers' message sequence numbers (docs/protocol.md, "seq").
--
-- Each committed batch writes one row: per machine, the ranges of sequence numbers its messages
-- carried (with the number of messages in each range, so a repeat is counted). The ingest workers'
-- sequence job folds these rows into equipment_sequence once they have settled (a message of one
-- controller may be committed by another worker a moment later) and deletes them.
CREATE TABLE IF NOT EXISTS message_sequences (
    id              bigserial PRIMARY KEY,
    received_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    equipment_ids   text[] NOT NULL,
    first_seqs      bigint[] NOT NULL,
    last_seqs       bigint[] NOT NULL,
    messages        integer[] NOT NULL
);
CREATE INDEX IF NOT EXISTS message_sequences_received_at_idx ON message_sequences (received_at);

-- Per machine: the sequence numbers seen so far and what is missing. ``high_seq`` is the highest
-- since the controller's counter last started again (``restarts``); ``missing`` holds the holes as
-- [first, last, found at (Unix seconds), confirmed]: a hole is a gap once it is still open a settle
-- time after it was found; ``missing_now`` and ``missing_since`` count confirmed gaps only.
CREATE TABLE IF NOT EXISTS equipment_sequence (
    equipment_id        text PRIMARY KEY REFERENCES equipment (id) ON DELETE CASCADE,
    high_seq            bigint NOT NULL,
    missing             jsonb NOT NULL DEFAULT '[]',
    missing_now         bigint NOT NULL DEFAULT 0,
    missing_since       timestamptz,
    messages            bigint NOT NULL DEFAULT 0,
    duplicates          bigint NOT NULL DEFAULT 0,
    gaps                bigint NOT NULL DEFAULT 0,
    missed              bigint NOT NULL DEFAULT 0,
    healed              bigint NOT NULL DEFAULT 0,
    lost                bigint NOT NULL DEFAULT 0,
    restarts            integer NOT NULL DEFAULT 0,
    updated_at          timestamptz NOT NULL DEFAULT now(),
    CHECK ((missing_now = 0) = (missing_since IS NULL))
);
CREATE INDEX IF NOT EXISTS equipment_sequence_missing_idx ON equipment_sequence (missing_since)
    WHERE missing_now > 0;

-- When the machine's engine_hours (a counter) was last taken: the writer holds each new reading's
-- counter to it (it never runs backwards, nor faster than time between two readings).
ALTER TABLE equipment_state ADD COLUMN IF NOT EXISTS engine_hours_at timestamptz;
UPDATE equipment_state SET engine_hours_at = last_ts WHERE engine_hours IS NOT NULL AND engine_hours_at IS NULL;
