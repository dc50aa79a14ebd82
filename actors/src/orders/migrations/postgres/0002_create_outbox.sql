-- Events: the outbox of what orders publishes (written in the transaction of
-- the change it announces) and the events it has applied (invoice.paid), so
-- a redelivery changes nothing. See actors/src/events.
CREATE TABLE outbox (
    seq           BIGSERIAL PRIMARY KEY,             -- relay order
    id            UUID NOT NULL UNIQUE,              -- the event id
    topic         TEXT NOT NULL,
    event         TEXT NOT NULL,                     -- the event, JSON (API.md)
    created_at    BIGINT NOT NULL,                   -- unix ms
    claimed_until BIGINT NOT NULL DEFAULT 0,         -- unix ms: a relay's lease
    published_at  BIGINT                             -- unix ms; NULL until handed on
);

CREATE INDEX outbox_unpublished ON outbox (seq) WHERE published_at IS NULL;

CREATE TABLE processed_events (
    event_id     UUID PRIMARY KEY,
    topic        TEXT NOT NULL,
    processed_at BIGINT NOT NULL                     -- unix ms
);
