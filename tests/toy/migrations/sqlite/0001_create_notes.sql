-- The toy notes service's own tables. Its outbox and processed events are
-- the storage layer's shared tables.
CREATE TABLE notes (
    id         TEXT PRIMARY KEY NOT NULL,
    user_id    TEXT NOT NULL,
    text       TEXT NOT NULL,
    -- Set when the service's own `note.created` came back through the bus.
    announced  INTEGER NOT NULL DEFAULT 0
);

-- Orders seen per user, counted from `order.created` events.
CREATE TABLE orders_seen (
    user_id  TEXT PRIMARY KEY NOT NULL,
    orders   INTEGER NOT NULL
);
