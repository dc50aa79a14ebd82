-- The auth service's own tables: users, their sessions and every refresh
-- token a session was given (by hash only); its outbox and idempotency keys
-- are the storage layer's shared tables (actors/src/storage/schema.rs). Ids are hyphenated UUID text, times RFC 3339 UTC text with six
-- fraction digits (so both sort as text).
CREATE TABLE users (
    id            TEXT PRIMARY KEY NOT NULL,    -- UUIDv7
    email         TEXT NOT NULL UNIQUE,         -- trimmed and lowercased by the service
    name          TEXT NOT NULL,
    password_hash TEXT NOT NULL,                -- argon2id PHC string
    role          TEXT NOT NULL CHECK (role IN ('user', 'admin')),
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL
);

CREATE TABLE sessions (
    id           TEXT PRIMARY KEY NOT NULL,     -- UUIDv7; the `sid` of its access tokens
    user_id      TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    refresh_hash TEXT NOT NULL,                 -- SHA-256 (hex) of the current refresh token
    created_at   TEXT NOT NULL,
    last_used_at TEXT NOT NULL,
    expires_at   TEXT NOT NULL,                 -- moves forward on every refresh
    revoked_at   TEXT,
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
    hash       TEXT PRIMARY KEY NOT NULL,       -- SHA-256 (hex) of the token
    session_id TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    created_at TEXT NOT NULL,
    spent_at   TEXT                             -- NULL while it is the session's current one
);

CREATE INDEX refresh_tokens_by_session ON refresh_tokens (session_id);
