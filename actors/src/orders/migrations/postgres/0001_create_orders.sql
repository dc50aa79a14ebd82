-- The orders service's own table (in its own schema, `orders`). Its outbox,
-- processed events and idempotency keys are the storage layer's shared
-- tables (actors/src/storage/schema.rs).
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
