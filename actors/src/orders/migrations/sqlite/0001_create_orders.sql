-- The orders service's own table. Its outbox, processed events and
-- idempotency keys are the storage layer's shared tables
-- (actors/src/storage/schema.rs).
CREATE TABLE orders (
    id          TEXT PRIMARY KEY NOT NULL,      -- UUIDv7, hyphenated
    user_id     TEXT NOT NULL,
    amount      INTEGER NOT NULL CHECK (amount > 0),
    currency    TEXT NOT NULL CHECK (length(currency) = 3),
    description TEXT,
    status      TEXT NOT NULL CHECK (status IN ('created', 'cancelled', 'paid')),
    created_at  TEXT NOT NULL,                  -- RFC 3339, UTC, six fraction digits
    updated_at  TEXT NOT NULL
);

-- Lists are newest first by id (UUIDv7 ids sort by creation time).
CREATE INDEX orders_by_user ON orders (user_id, id DESC);
