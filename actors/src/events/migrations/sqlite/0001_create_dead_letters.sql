-- The event bus's own table: events a subscriber kept failing on, with the
-- last error, until an operator replays them (`/admin/events`).
CREATE TABLE dead_letters (
    id          TEXT PRIMARY KEY NOT NULL,      -- UUIDv7
    subscriber  TEXT NOT NULL,
    event_id    TEXT NOT NULL,
    topic       TEXT NOT NULL,
    event       TEXT NOT NULL,                  -- the event, JSON (API.md)
    attempts    INTEGER NOT NULL,
    last_error  TEXT NOT NULL,
    failed_at   INTEGER NOT NULL,               -- unix ms
    replayed_at INTEGER,                        -- unix ms; NULL while it waits
    UNIQUE (subscriber, event_id)
);

CREATE INDEX dead_letters_waiting ON dead_letters (subscriber) WHERE replayed_at IS NULL;
