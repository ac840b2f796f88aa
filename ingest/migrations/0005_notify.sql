-- Diagnostics wakes when a batch commits (core's notify_inserted: channel accepted_batches).
DROP TRIGGER IF EXISTS accepted_batches_notify ON accepted_batches;
CREATE TRIGGER accepted_batches_notify AFTER INSERT ON accepted_batches
    FOR EACH STATEMENT EXECUTE FUNCTION notify_inserted();
