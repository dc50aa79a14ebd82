-- Analytics: counters per hour and per day, the activity that distinct
-- active users are counted from, the buckets the jobs closed, each user's
-- totals, and the scheduled jobs' runs (one row per job and tick: the lease).
-- Buckets and times are unix seconds; ids are text (the same SQL on both backends).
CREATE TABLE counters (
    grain TEXT NOT NULL,          -- 'hour' | 'day'
    bucket BIGINT NOT NULL,       -- the bucket's start
    metric TEXT NOT NULL,
    value BIGINT NOT NULL,
    PRIMARY KEY (grain, bucket, metric)
);
CREATE TABLE activity (
    grain TEXT NOT NULL,
    bucket BIGINT NOT NULL,
    user_id TEXT NOT NULL,
    PRIMARY KEY (grain, bucket, user_id)
);
CREATE INDEX activity_by_user ON activity (user_id, grain);
CREATE TABLE closed_buckets (
    grain TEXT NOT NULL,
    bucket BIGINT NOT NULL,
    closed_at BIGINT NOT NULL,
    PRIMARY KEY (grain, bucket)
);
CREATE TABLE user_totals (
    user_id TEXT PRIMARY KEY,
    logins BIGINT NOT NULL,
    orders BIGINT NOT NULL,
    invoices_paid BIGINT NOT NULL,
    last_active_at BIGINT NOT NULL
);
CREATE TABLE user_amounts (
    user_id TEXT NOT NULL,
    currency TEXT NOT NULL,
    amount BIGINT NOT NULL,
    PRIMARY KEY (user_id, currency)
);
CREATE TABLE job_runs (
    job TEXT NOT NULL,
    tick BIGINT NOT NULL,         -- the scheduled time this run is for
    holder TEXT NOT NULL,         -- the instance that won the tick
    started_at BIGINT NOT NULL,
    finished_at BIGINT,
    duration_ms BIGINT,
    error TEXT,
    PRIMARY KEY (job, tick)
);
