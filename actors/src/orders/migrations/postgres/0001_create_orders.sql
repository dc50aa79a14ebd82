-- The orders service's own tables (in its own schema, `orders`): orders and
-- the idempotency keys of its POST routes.
CREATE TABLE orders (
    id          UUID PRIMARY KEY,               -- UUIDv7
    user_id     UUID NOT NULL,
    amount      BIGINT NOT NULL CHECK (amount > 0),
    currency    TEXT NOT NULL CHECK (length(currency) = 3),
    description TEXT,
    status      TEXT NOT NULL CHECK (status IN ('created', 'cancelled', 'paid')),
    created_at  TIMESTAMPTZ NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL
);

-- Lists are newest first by id (UUIDv7 ids sort by creation time).
CREATE INDEX orders_by_user ON orders (user_id, id DESC);

CREATE TABLE idempotency_keys (
    scope        TEXT NOT NULL,                 -- caller and route
    key          TEXT NOT NULL,
    request_hash TEXT NOT NULL,                 -- SHA-256 of the body, hex
    status       BIGINT,                        -- NULL while the request is in flight
    response     BYTEA,
    locked_until BIGINT NOT NULL,               -- unix ms: an unfinished claim is abandoned after it
    created_at   BIGINT NOT NULL,               -- unix ms
    PRIMARY KEY (scope, key)
);

CREATE INDEX idempotency_keys_by_age ON idempotency_keys (created_at);
