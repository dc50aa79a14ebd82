-- The auth service's own tables (in its own schema, `auth`): users, their
-- sessions and every refresh token a session was given (by hash only). Its
-- outbox and idempotency keys are the storage layer's shared tables
-- (actors/src/storage/schema.rs).
CREATE TABLE users (
    id            UUID PRIMARY KEY,             -- UUIDv7
    email         TEXT NOT NULL,                -- trimmed and lowercased by the service
    name          TEXT NOT NULL,
    password_hash TEXT NOT NULL,                -- argon2id PHC string
    role          TEXT NOT NULL CHECK (role IN ('user', 'admin')),
    created_at    TIMESTAMPTZ NOT NULL,
    updated_at    TIMESTAMPTZ NOT NULL,
    CONSTRAINT users_email_key UNIQUE (email)
);

CREATE TABLE sessions (
    id           UUID PRIMARY KEY,              -- UUIDv7; the `sid` of its access tokens
    user_id      UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    refresh_hash TEXT NOT NULL,                 -- SHA-256 (hex) of the current refresh token
    created_at   TIMESTAMPTZ NOT NULL,
    last_used_at TIMESTAMPTZ NOT NULL,
    expires_at   TIMESTAMPTZ NOT NULL,          -- moves forward on every refresh
    revoked_at   TIMESTAMPTZ,
    user_agent   TEXT,
    ip           TEXT
);

-- A user's sessions, newest first (UUIDv7 ids sort by creation time).
CREATE INDEX sessions_by_user ON sessions (user_id, id DESC);
CREATE INDEX sessions_by_expiry ON sessions (expires_at);
-- Recent revocations are copied into the key-value store at start-up.
CREATE INDEX sessions_by_revocation ON sessions (revoked_at) WHERE revoked_at IS NOT NULL;

-- Every refresh token issued, current or spent: presenting a spent one is
-- how a stolen token is detected, so they are kept as long as their session.
CREATE TABLE refresh_tokens (
    hash       TEXT PRIMARY KEY,                -- SHA-256 (hex) of the token
    session_id UUID NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    created_at TIMESTAMPTZ NOT NULL,
    spent_at   TIMESTAMPTZ                      -- NULL while it is the session's current one
);

CREATE INDEX refresh_tokens_by_session ON refresh_tokens (session_id);
