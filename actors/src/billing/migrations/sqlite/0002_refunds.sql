-- Refunds (issue 13): an order cancelled after its invoice was paid has the
-- payment refunded. The invoice becomes 'refunded' (SQLite cannot change a
-- CHECK constraint in place, so the table is rebuilt with the new status and
-- its refunded_at column), and each refund is a row of its own.
CREATE TABLE invoices_new (
    id          TEXT PRIMARY KEY NOT NULL,
    seq         INTEGER NOT NULL UNIQUE,
    number      TEXT NOT NULL UNIQUE,
    order_id    TEXT NOT NULL UNIQUE,
    user_id     TEXT NOT NULL,
    amount      INTEGER NOT NULL CHECK (amount > 0),
    currency    TEXT NOT NULL CHECK (length(currency) = 3),
    status      TEXT NOT NULL CHECK (status IN ('open', 'paid', 'void', 'refunded')),
    created_at  TEXT NOT NULL,
    paid_at     TEXT,
    voided_at   TEXT,
    refunded_at TEXT
);
INSERT INTO invoices_new (id, seq, number, order_id, user_id, amount, currency, status,
                          created_at, paid_at, voided_at)
    SELECT id, seq, number, order_id, user_id, amount, currency, status,
           created_at, paid_at, voided_at
    FROM invoices;
DROP TABLE invoices;
ALTER TABLE invoices_new RENAME TO invoices;
CREATE INDEX invoices_by_user ON invoices (user_id, id DESC);

-- One refund per invoice: the whole amount, back to whoever paid it.
CREATE TABLE refunds (
    id          TEXT PRIMARY KEY NOT NULL,      -- UUIDv7
    invoice_id  TEXT NOT NULL UNIQUE REFERENCES invoices (id),
    amount      INTEGER NOT NULL CHECK (amount > 0),
    currency    TEXT NOT NULL CHECK (length(currency) = 3),
    reason      TEXT NOT NULL,                  -- 'order_cancelled'
    cause_event TEXT NOT NULL,                  -- the id of the event that caused it
    created_at  TEXT NOT NULL
);
