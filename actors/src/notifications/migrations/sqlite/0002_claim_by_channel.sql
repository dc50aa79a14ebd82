-- Each channel's senders claim their own due rows, oldest first: with the
-- channel first, a claim walks its channel's due rows in order and stops
-- at its LIMIT.
CREATE INDEX notifications_due_by_channel ON notifications (channel, next_attempt_at, id)
    WHERE status IN ('queued', 'retrying', 'sending');
DROP INDEX notifications_due;
