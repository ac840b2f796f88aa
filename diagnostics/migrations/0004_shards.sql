-- When diagnosis stored the fault (the time of the insert, not of the transaction's start): how
-- long after its cause a fault was known.
ALTER TABLE faults ADD COLUMN IF NOT EXISTS created_at timestamptz;
ALTER TABLE faults ALTER COLUMN created_at SET DEFAULT clock_timestamp();

-- The alarms workers wake when fault events commit (core's notify_inserted: channel fault_events).
DROP TRIGGER IF EXISTS fault_events_notify ON fault_events;
CREATE TRIGGER fault_events_notify AFTER INSERT ON fault_events
    FOR EACH STATEMENT EXECUTE FUNCTION notify_inserted();
