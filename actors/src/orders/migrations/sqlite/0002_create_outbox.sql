-- Events: the outbox of what orders publishes (written in the transaction of
-- the change it announces) and the events it has applied (invoice.paid), so
-- a redelivery changes nothing. See actors/src/events.
CREATE TABLE outbox (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT, -- relay order
    id            TEXT NOT NULL UNIQUE,              -- the event id
    topic         TEXT NOT NULL,
    event         TEXT NOT NULL,                     -- the event, JSON (API.md)
    created_at    INTEGER NOT NULL,                  -- unix ms
    claimed_until INTEGER NOT NULL DEFAULT 0,        -- unix ms: a relay's lease
    published_at  INTEGER                            -- unix ms; NULL until handed on
);

CREATE INDEX outbox_unpublished ON outbox (seq) WHERE published_at IS NULL;

CREATE TABLE processed_events (
    event_id     TEXT PRIMARY KEY NOT NULL,
    topic        TEXT NOT NULL,
    processed_at INTEGER NOT NULL                    -- unix ms
);
