-- The notifications service's own tables. Its outbox, processed events and
-- idempotency keys are the storage layer's shared tables
-- (actors/src/storage/schema.rs).

-- The durable queue: one row per notification, rendered when accepted.
-- queued → sending → sent | retrying → … → dead; skipped when the user
-- opted out of the channel.
CREATE TABLE notifications (
    id              UUID PRIMARY KEY,
    channel         TEXT NOT NULL CHECK (channel IN ('email', 'sms', 'push', 'webhook')),
    recipient       TEXT,                        -- the address (null: a user's push subscriptions)
    user_id         UUID,
    -- What orders deliveries per recipient: the address, or the user for push.
    recipient_key   TEXT NOT NULL,
    template        TEXT,
    subject         TEXT,
    body            TEXT NOT NULL,
    html            TEXT,
    status          TEXT NOT NULL CHECK (status IN ('queued', 'sending', 'sent', 'retrying', 'skipped', 'dead')),
    attempts        BIGINT NOT NULL DEFAULT 0,
    last_error      TEXT,
    batch_id        UUID,
    created_at      TIMESTAMPTZ NOT NULL,
    sent_at         TIMESTAMPTZ,
    next_attempt_at BIGINT NOT NULL,             -- unix ms: due from then
    lease_until     BIGINT,                      -- unix ms: held by a sender until then
    lease_holder    TEXT
);

-- What the senders claim: due rows, oldest first.
CREATE INDEX notifications_due ON notifications (next_attempt_at, id)
    WHERE status IN ('queued', 'retrying', 'sending');
-- In order per recipient: an older unfinished row holds the newer back.
CREATE INDEX notifications_pending_by_recipient ON notifications (recipient_key, id)
    WHERE status IN ('queued', 'retrying', 'sending');
CREATE INDEX notifications_by_user ON notifications (user_id, id DESC);
CREATE INDEX notifications_by_status ON notifications (status, id DESC);
CREATE INDEX notifications_by_batch ON notifications (batch_id, status);

CREATE TABLE batches (
    id         UUID PRIMARY KEY,
    total      BIGINT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL
);

CREATE TABLE templates (
    name       TEXT PRIMARY KEY NOT NULL,
    channel    TEXT NOT NULL CHECK (channel IN ('email', 'sms', 'push', 'webhook')),
    subject    TEXT,
    body       TEXT NOT NULL,
    html       TEXT,
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);

-- The defaults created once: an admin's edit or deletion is never undone.
CREATE TABLE template_seeds (
    name TEXT PRIMARY KEY NOT NULL
);

CREATE TABLE preferences (
    user_id UUID PRIMARY KEY,
    email   BOOLEAN NOT NULL,
    sms     BOOLEAN NOT NULL,
    push    BOOLEAN NOT NULL,
    webhook BOOLEAN NOT NULL
);

CREATE TABLE push_subscriptions (
    id         UUID PRIMARY KEY,
    user_id    UUID NOT NULL,
    endpoint   TEXT NOT NULL,
    p256dh     TEXT NOT NULL,
    auth       TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    UNIQUE (user_id, endpoint)
);

-- Its own copy of the users it has heard of (user.registered): the
-- address of a notification sent to a user_id.
CREATE TABLE users (
    id    UUID PRIMARY KEY,
    email TEXT NOT NULL,
    name  TEXT NOT NULL
);
