-- Shared table (created by the storage layer for every service with
-- idempotent POST routes, see actors/src/storage/schema.rs): a key per caller
-- and route, its request's fingerprint and, once done, its response
-- (actors/src/idempotency).
CREATE TABLE IF NOT EXISTS idempotency_keys (
    scope        TEXT NOT NULL,                 -- caller and route
    key          TEXT NOT NULL,
    request_hash TEXT NOT NULL,                 -- fingerprint of the body
    status       BIGINT,                        -- NULL while the request is in flight
    response     BYTEA,
    locked_until BIGINT NOT NULL,               -- unix ms: an unfinished claim is abandoned after it
    created_at   BIGINT NOT NULL,               -- unix ms
    PRIMARY KEY (scope, key)
);

CREATE INDEX IF NOT EXISTS idempotency_keys_by_age ON idempotency_keys (created_at);
