-- Diagnostics wakes when a batch commits instead of polling: one notification per inserting
-- transaction (PostgreSQL folds identical notifications of a transaction into one).
CREATE OR REPLACE FUNCTION notify_accepted_batches() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('accepted_batches', '');
    RETURN NULL;
END $$;
DROP TRIGGER IF EXISTS accepted_batches_notify ON accepted_batches;
CREATE TRIGGER accepted_batches_notify AFTER INSERT ON accepted_batches
    FOR EACH STATEMENT EXECUTE FUNCTION notify_accepted_batches();
