-- The resend command: a controller publishes again the messages of the given sequence ranges that
-- its store-and-forward buffer still holds (ingest found them missing; docs/protocol.md).
ALTER TABLE commands DROP CONSTRAINT IF EXISTS commands_kind_check;
ALTER TABLE commands ADD CONSTRAINT commands_kind_check
    CHECK (kind IN ('snapshot', 'set_report_interval', 'lock', 'unlock', 'resend'));
