-- The health dashboard reads accepted_batches by arrival time (readings and batches accepted per
-- second). Rows arrive in about that order and are never updated: a BRIN index finds a time range
-- for a few pages of index, where the table would otherwise be read whole.
CREATE INDEX IF NOT EXISTS accepted_batches_accepted_at_brin ON accepted_batches USING brin (accepted_at);
