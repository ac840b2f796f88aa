-- Key lineage: the credential (access token or API key) that created an API key. Revoking a credential
-- revokes everything it created, recursively; a key never outlives its parent (its expiry is capped at
-- the parent's when it is created). SET NULL: the login's clean-up deletes long-expired access tokens,
-- and the keys they made expired with them.
ALTER TABLE api_tokens ADD COLUMN IF NOT EXISTS parent_id bigint REFERENCES api_tokens (id) ON DELETE SET NULL;
CREATE INDEX IF NOT EXISTS api_tokens_parent ON api_tokens (parent_id) WHERE parent_id IS NOT NULL;

-- Failed logins per username as given (known or not, so that a lockout says nothing about which
-- usernames exist), keyed by the SHA-256 of the username: whatever was typed there, it is not stored.
-- In the database so that every API process counts the same failures.
CREATE TABLE IF NOT EXISTS api_login_throttle (
    username_key    text PRIMARY KEY,
    failures        integer NOT NULL DEFAULT 0,
    locked_until    timestamptz,
    last_attempt_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS api_login_throttle_last ON api_login_throttle (last_attempt_at);
