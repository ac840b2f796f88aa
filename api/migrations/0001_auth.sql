-- Accounts and their credentials. Secrets are stored only as hashes: passwords with scrypt (salted,
-- slow), tokens and API keys with SHA-256 (they are random and long, so a fast hash suffices and the
-- per-request lookup stays an index probe).
CREATE TABLE IF NOT EXISTS api_users (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    username text NOT NULL UNIQUE CHECK (username ~ '^[A-Za-z0-9][A-Za-z0-9._@-]{0,99}$'),
    password_hash text,
    role text NOT NULL CHECK (role IN ('admin', 'dispatcher', 'engineer', 'customer', 'service')),
    customer text,
    active boolean NOT NULL DEFAULT true,
    created_at timestamptz NOT NULL DEFAULT now(),
    -- A customer account sees one customer's fleet; no other role is bound to one.
    CHECK ((role = 'customer') = (customer IS NOT NULL))
);

CREATE TABLE IF NOT EXISTS api_tokens (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id bigint NOT NULL REFERENCES api_users (id) ON DELETE CASCADE,
    kind text NOT NULL CHECK (kind IN ('access', 'api_key')),
    token_hash text NOT NULL UNIQUE,
    name text,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz,
    revoked_at timestamptz
);

CREATE INDEX IF NOT EXISTS api_tokens_user ON api_tokens (user_id);
