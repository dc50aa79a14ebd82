-- The event bus's own table (schema `events`): events a subscriber kept
-- failing on, with the last error, until an operator replays them.
CREATE TABLE dead_letters (
    id          UUID PRIMARY KEY,               -- UUIDv7
    subscriber  TEXT NOT NULL,
    event_id    UUID NOT NULL,
    topic       TEXT NOT NULL,
    event       TEXT NOT NULL,                  -- the event, JSON (API.md)
    attempts    BIGINT NOT NULL,
    last_error  TEXT NOT NULL,
    failed_at   BIGINT NOT NULL,                -- unix ms
    replayed_at BIGINT,                         -- unix ms; NULL while it waits
    UNIQUE (subscriber, event_id)
);

CREATE INDEX dead_letters_waiting ON dead_letters (subscriber) WHERE replayed_at IS NULL;
