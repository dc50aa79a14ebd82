-- The audit service's own tables (in its own schema, `audit`): the entries,
-- a hash chain by seq, and the chain's head. Its idempotency keys are the
-- storage layer's shared table (actors/src/storage/schema.rs).
CREATE TABLE audit_entries (
    seq           BIGINT PRIMARY KEY,           -- 1, 2, 3, … without gaps (from chain_head)
    id            UUID NOT NULL UNIQUE,         -- UUIDv7; an event's entry has the event's id
    occurred_at   TIMESTAMPTZ NOT NULL,
    recorded_at   TIMESTAMPTZ NOT NULL,
    action        TEXT COLLATE "C" NOT NULL,  -- byte order: `order.*` is the range [order., order/)
    actor_id      UUID,
    resource_type TEXT NOT NULL,
    resource_id   TEXT,
    request_id    TEXT,
    data          TEXT NOT NULL,                -- compact JSON, exactly as hashed (not JSONB: it reorders keys)
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
CREATE FUNCTION audit_entries_are_never_updated() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'audit entries are never updated';
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER audit_entries_are_never_updated BEFORE UPDATE ON audit_entries
    FOR EACH ROW EXECUTE FUNCTION audit_entries_are_never_updated();

-- The chain's head (the last seq and its hash) and its anchor (the last
-- purged entry's seq and hash; zeros before any purge). One row, locked
-- FOR UPDATE by the transaction that appends: appenders on every replica
-- take turns on it, so seq stays gap-free and total.
CREATE TABLE chain_head (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    seq         BIGINT NOT NULL,
    hash        TEXT NOT NULL,
    anchor_seq  BIGINT NOT NULL,
    anchor_hash TEXT NOT NULL
);

INSERT INTO chain_head (id, seq, hash, anchor_seq, anchor_hash) VALUES (
    1, 0,
    '0000000000000000000000000000000000000000000000000000000000000000',
    0,
    '0000000000000000000000000000000000000000000000000000000000000000'
);
