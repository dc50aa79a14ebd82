-- Shared table (created by the storage layer for every service that
-- publishes, see actors/src/storage/schema.rs): the outbox, each event
-- written in the transaction of the change it announces; the relay hands
-- them on (actors/src/events/outbox). `IF NOT EXISTS`: databases made before
-- the storage layer created it have it from the service's own migrations.
CREATE TABLE IF NOT EXISTS outbox (
    seq           BIGSERIAL PRIMARY KEY,             -- relay order
    id            UUID NOT NULL UNIQUE,              -- the event id
    topic         TEXT NOT NULL,
    event         TEXT NOT NULL,                     -- the event, JSON (API.md)
    created_at    BIGINT NOT NULL,                   -- unix ms
    claimed_until BIGINT NOT NULL DEFAULT 0,         -- unix ms: a relay's lease
    published_at  BIGINT                             -- unix ms; NULL until handed on
);

CREATE INDEX IF NOT EXISTS outbox_unpublished ON outbox (seq) WHERE published_at IS NULL;
