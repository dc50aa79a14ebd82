-- Events: the outbox of what auth publishes (user.registered,
-- user.logged_in, session.revoked), each written in the transaction of the
-- change it announces. Auth consumes no events, so it has no
-- processed_events table. See actors/src/events.
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
