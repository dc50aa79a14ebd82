-- The billing service's own tables (in its own schema, `billing`): invoices
-- and the counter their numbers come from. Its outbox and processed events are
-- the storage layer's shared tables (actors/src/storage/schema.rs).
CREATE TABLE invoices (
    id          UUID PRIMARY KEY,               -- UUIDv7
    seq         BIGINT NOT NULL UNIQUE,         -- from invoice_counter: 1, 2, 3, … without gaps
    number      TEXT NOT NULL UNIQUE,           -- prefix + seq, at least six digits (INV-000001)
    order_id    UUID NOT NULL UNIQUE,           -- one invoice per order, whatever the events say
    user_id     UUID NOT NULL,
    amount      BIGINT NOT NULL CHECK (amount > 0),
    currency    TEXT NOT NULL CHECK (length(currency) = 3),
    status      TEXT NOT NULL CHECK (status IN ('open', 'paid', 'void')),
    created_at  TIMESTAMPTZ NOT NULL,
    paid_at     TIMESTAMPTZ,
    voided_at   TIMESTAMPTZ
);

-- Lists are newest first by id (UUIDv7 ids sort by creation time).
CREATE INDEX invoices_by_user ON invoices (user_id, id DESC);

-- The last invoice number handed out: one row, bumped inside the
-- transaction that creates the invoice. Its row lock serializes concurrent
-- creators (replicas included), and a rollback gives the number back.
CREATE TABLE invoice_counter (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    last BIGINT NOT NULL CHECK (last >= 0)
);

INSERT INTO invoice_counter (id, last) VALUES (1, 0);
