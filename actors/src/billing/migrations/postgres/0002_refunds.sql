-- Refunds (issue 13): an order cancelled after its invoice was paid has the
-- payment refunded. The invoice becomes 'refunded', and each refund is a
-- row of its own.
ALTER TABLE invoices DROP CONSTRAINT invoices_status_check;
ALTER TABLE invoices ADD CONSTRAINT invoices_status_check
    CHECK (status IN ('open', 'paid', 'void', 'refunded'));
ALTER TABLE invoices ADD COLUMN refunded_at TIMESTAMPTZ;

-- One refund per invoice: the whole amount, back to whoever paid it.
CREATE TABLE refunds (
    id          UUID PRIMARY KEY,
    invoice_id  UUID NOT NULL UNIQUE REFERENCES invoices (id),
    amount      BIGINT NOT NULL CHECK (amount > 0),
    currency    TEXT NOT NULL CHECK (length(currency) = 3),
    reason      TEXT NOT NULL,
    cause_event UUID NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL
);
