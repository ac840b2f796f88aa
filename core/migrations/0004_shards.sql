-- Consumers that spread over processes (diagnostics, alarms) split the fleet into a fixed number of
-- virtual shards by a hash of the equipment id. The same function exists in Python
-- (core.shards.shard_of); both take the first 32 bits of the id's MD5, so any process and any
-- query agree on which shard a machine belongs to.
CREATE OR REPLACE FUNCTION equipment_shard(equipment_id text, shard_count integer) RETURNS integer
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    AS $$ SELECT (('x' || substr(md5(equipment_id), 1, 8))::bit(32)::bigint % shard_count)::integer $$;

-- Per consumer and shard: how far the shard has been consumed (core.outbox order) and, for a
-- consumer with in-memory state, that state as of the same point. The owner of a shard (the
-- session holding its advisory lock, core.shards) writes it; a successor resumes from it.
CREATE TABLE IF NOT EXISTS shard_checkpoints (
    consumer    text NOT NULL,
    shard       integer NOT NULL,
    last_xid    xid8 NOT NULL,
    last_id     bigint NOT NULL,
    state       bytea,
    saved_at    timestamptz NOT NULL DEFAULT now(),
    saved_by    text,
    -- How far the owner has consumed since (written every round, without the state): what
    -- monitoring reads to tell how far behind the consumer is.
    progress_xid xid8,
    progress_id  bigint,
    progress_at  timestamptz,
    PRIMARY KEY (consumer, shard)
);

-- Consumers wake when rows they follow commit instead of polling: a statement trigger on an
-- outbox table sends a notification on a channel named after the table, once per inserting
-- transaction (PostgreSQL folds identical notifications of a transaction into one).
CREATE OR REPLACE FUNCTION notify_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify(TG_TABLE_NAME, '');
    RETURN NULL;
END $$;
