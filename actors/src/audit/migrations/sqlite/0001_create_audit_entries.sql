-- The audit service's own tables (the file audit.db): the entries, a hash
-- chain by seq, and the chain's head. Its idempotency keys are the storage
-- layer's shared table (actors/src/storage/schema.rs).
CREATE TABLE audit_entries (
    seq           INTEGER PRIMARY KEY,          -- 1, 2, 3, … without gaps (from chain_head)
    id            TEXT NOT NULL UNIQUE,         -- UUIDv7; an event's entry has the event's id
    occurred_at   TEXT NOT NULL,                -- RFC 3339, UTC, six fraction digits
    recorded_at   TEXT NOT NULL,
    action        TEXT NOT NULL,
    actor_id      TEXT,
    resource_type TEXT NOT NULL,
    resource_id   TEXT,
    request_id    TEXT,
    data          TEXT NOT NULL,                -- compact JSON, exactly as hashed
    hash          TEXT NOT NULL                 -- SHA-256 hex of the previous hash and this entry
);

-- Searches are newest first (occurred_at, then seq): one index per filter,
-- the filter's column first, so each answers from an index range.
CREATE INDEX audit_entries_by_time ON audit_entries (occurred_at, seq);
CREATE INDEX audit_entries_by_actor ON audit_entries (actor_id, occurred_at, seq);
CREATE INDEX audit_entries_by_action ON audit_entries (action, occurred_at, seq);
CREATE INDEX audit_entries_by_type ON audit_entries (resource_type, occurred_at, seq);
CREATE INDEX audit_entries_by_resource ON audit_entries (resource_id, occurred_at, seq);
CREATE INDEX audit_entries_by_request ON audit_entries (request_id, occurred_at, seq);

-- Entries are never updated (the hash chain would show it anyway).
CREATE TRIGGER audit_entries_are_never_updated BEFORE UPDATE ON audit_entries
BEGIN
    SELECT RAISE(ABORT, 'audit entries are never updated');
END;

-- The chain's head (the last seq and its hash) and its anchor (the last
-- purged entry's seq and hash; zeros before any purge). One row, read and
-- moved in the transaction that appends: appenders take turns on it.
CREATE TABLE chain_head (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    seq         INTEGER NOT NULL,
    hash        TEXT NOT NULL,
    anchor_seq  INTEGER NOT NULL,
    anchor_hash TEXT NOT NULL
);

INSERT INTO chain_head (id, seq, hash, anchor_seq, anchor_hash) VALUES (
    1, 0,
    '0000000000000000000000000000000000000000000000000000000000000000',
    0,
    '0000000000000000000000000000000000000000000000000000000000000000'
);
