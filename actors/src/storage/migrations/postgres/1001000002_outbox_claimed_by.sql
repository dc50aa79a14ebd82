-- Which instance holds a row's lease, so a restarted instance takes its own
-- claims back at once instead of waiting for the lease (see
-- actors/src/events/outbox). NULL: never claimed.
ALTER TABLE outbox ADD COLUMN IF NOT EXISTS claimed_by TEXT;
