-- The toy notes service's own tables. Its outbox and processed events are
-- the storage layer's shared tables.
CREATE TABLE notes (
    id         UUID PRIMARY KEY,
    user_id    UUID NOT NULL,
    text       TEXT NOT NULL,
    -- Set when the service's own `note.created` came back through the bus.
    announced  BOOLEAN NOT NULL DEFAULT FALSE
);

-- Orders seen per user, counted from `order.created` events.
CREATE TABLE orders_seen (
    user_id  UUID PRIMARY KEY,
    orders   BIGINT NOT NULL
);
