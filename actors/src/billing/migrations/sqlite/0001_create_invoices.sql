-- The billing service's own tables: invoices and the counter their numbers come
-- from. Its outbox and processed events are the storage layer's shared
-- tables (actors/src/storage/schema.rs).
CREATE TABLE invoices (
    id          TEXT PRIMARY KEY NOT NULL,      -- UUIDv7, hyphenated
    seq         INTEGER NOT NULL UNIQUE,        -- from invoice_counter: 1, 2, 3, … without gaps
    number      TEXT NOT NULL UNIQUE,           -- prefix + seq, at least six digits (INV-000001)
    order_id    TEXT NOT NULL UNIQUE,           -- one invoice per order, whatever the events say
    user_id     TEXT NOT NULL,
    amount      INTEGER NOT NULL CHECK (amount > 0),
    currency    TEXT NOT NULL CHECK (length(currency) = 3),
    status      TEXT NOT NULL CHECK (status IN ('open', 'paid', 'void')),
    created_at  TEXT NOT NULL,                  -- RFC 3339, UTC, six fraction digits
    paid_at     TEXT,
    voided_at   TEXT
);

-- Lists are newest first by id (UUIDv7 ids sort by creation time).
CREATE INDEX invoices_by_user ON invoices (user_id, id DESC);

-- The last invoice number handed out: one row, bumped inside the
-- transaction that creates the invoice, so a rollback gives the number back.
CREATE TABLE invoice_counter (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    last INTEGER NOT NULL CHECK (last >= 0)
);

INSERT INTO invoice_counter (id, last) VALUES (1, 0);
