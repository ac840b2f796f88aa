-- Service vans report their positions as devices of their own: each van's tracker has a broker
-- account (username `vehicle~<vehicle id>`, docs/protocol.md) that may publish only that van's
-- position topic. The devices worker renders active trackers into the broker's password and ACL
-- files (devices.broker_auth) as it does controllers.
--
-- No foreign key to tickets' `vehicles`: devices' migrations run before tickets' (the API checks
-- through tickets.resources that the vehicle exists before issuing a credential). A tracker row of
-- a vehicle that no longer exists is harmless: its positions are counted as unknown and ignored.
CREATE TABLE IF NOT EXISTS vehicle_trackers (
    vehicle_id      text PRIMARY KEY CHECK (vehicle_id ~ '^[A-Za-z0-9_.-]{1,64}$'),
    -- Mosquitto's PBKDF2-SHA512 form ($7$…); the password itself is never stored.
    password_hash   text,
    -- active: the broker accepts the credential; revoked: withdrawn (the broker drops and refuses it).
    state           text NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'revoked')),
    issued_at       timestamptz NOT NULL DEFAULT now(),
    revoked_at      timestamptz,
    CHECK (state <> 'active' OR password_hash IS NOT NULL)
);
