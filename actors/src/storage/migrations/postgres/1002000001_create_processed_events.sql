-- Shared table (created by the storage layer for every service that
-- consumes events, see actors/src/storage/schema.rs): the ids of the events
-- a service applied, recorded in the transaction of their effect, so a
-- redelivered event changes nothing (actors/src/events/inbox.rs).
CREATE TABLE IF NOT EXISTS processed_events (
    event_id     UUID PRIMARY KEY,
    topic        TEXT NOT NULL,
    processed_at BIGINT NOT NULL                     -- unix ms
);
