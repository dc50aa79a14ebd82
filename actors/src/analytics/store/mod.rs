//! The analytics service's data: its own database, SQLite (`analytics.db`)
//! or PostgreSQL (the schema `analytics`), migrations in `../migrations/`.
//! The SQL, the same on both backends (integers and text only), is in
//! `sql.rs`.
//!
//! An event's effect — its counters in its hour and its day, its user's
//! activity in both, its user's totals — is written in the transaction
//! that records its id in `processed_events`, so a redelivery changes
//! nothing. Events are applied through the group-commit writer: the events
//! of one delivered batch share a transaction.

mod sql;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;

use uuid::Uuid;

use super::model::{Fact, Grain, JobView, Range, SeriesQuery, UserFigures};
use crate::storage::group_commit::Writer;
use crate::storage::{
    Database, Dependency, Migrations, Schema, SharedTable, StorageSettings, StoreError,
};

static SCHEMA: Schema = Schema {
    sqlite: Migrations {
        own: &sqlx::migrate!("src/analytics/migrations/sqlite"),
        earlier: &[],
    },
    postgres: Migrations {
        own: &sqlx::migrate!("src/analytics/migrations/postgres"),
        earlier: &[],
    },
    shared: &[SharedTable::ProcessedEvents],
};

/// One consumed event's write; answers whether it was new.
pub(super) struct Apply(Fact);

/// What a batch's new events change, merged per row and in key order: each
/// row is written once per batch, and concurrent batches (PostgreSQL's
/// write lanes, replicas) take the row locks of a table in the same order,
/// so they queue behind each other instead of deadlocking.
#[derive(Default)]
pub(super) struct Effects {
    counters: BTreeMap<(Grain, i64, String), i64>,
    activity: BTreeSet<(Grain, i64, String)>,
    users: BTreeMap<String, UserDelta>,
    amounts: BTreeMap<(String, String), i64>,
}

/// What a batch adds to one user's totals.
#[derive(Default)]
pub(super) struct UserDelta {
    logins: i64,
    orders: i64,
    invoices_paid: i64,
    last_active_at: i64,
}

impl Effects {
    /// Adds an event's effect: its counters in its hour and its day, its
    /// user's activity there and totals.
    fn add(&mut self, fact: &Fact) {
        let buckets = [
            (Grain::Hour, Grain::Hour.floor(fact.at)),
            (Grain::Day, Grain::Day.floor(fact.at)),
        ];
        for (grain, bucket) in buckets {
            for (metric, value) in &fact.counts {
                *self
                    .counters
                    .entry((grain, bucket, metric.clone()))
                    .or_default() += value;
            }
        }
        let Some(user) = fact.user else { return };
        let user = user.to_string();
        for (grain, bucket) in buckets {
            self.activity.insert((grain, bucket, user.clone()));
        }
        let delta = self.users.entry(user.clone()).or_insert(UserDelta {
            last_active_at: fact.at,
            ..UserDelta::default()
        });
        delta.logins += fact.logins;
        delta.orders += fact.orders;
        delta.invoices_paid += fact.invoices_paid;
        delta.last_active_at = delta.last_active_at.max(fact.at);
        if let Some((currency, amount)) = &fact.paid {
            *self.amounts.entry((user, currency.clone())).or_default() += amount;
        }
    }
}

/// The last finished run of a job.
#[derive(Clone, Debug)]
pub struct LastRun {
    pub started_at: i64,
    pub duration_ms: Option<i64>,
    pub error: Option<String>,
}

#[derive(Clone, Debug)]
pub struct AnalyticsStore {
    db: Database,
    writer: Writer<Apply>,
}

/// Dispatches to the backend's copy of a function of `sql.rs`.
macro_rules! on_backend {
    ($self:expr, $f:ident ( $($arg:expr),* )) => {
        match &$self.db {
            Database::Sqlite(db) => sql::sqlite::$f(db, $($arg),*).await,
            Database::Postgres(db) => sql::postgres::$f(db, $($arg),*).await,
        }
    };
}

impl AnalyticsStore {
    pub async fn open(data_dir: &Path, settings: &StorageSettings) -> Result<Self, StoreError> {
        let db = Database::open("analytics", data_dir, settings, &SCHEMA).await?;
        Ok(Self {
            writer: Writer::start("analytics", &db, settings.group_commit, None),
            db,
        })
    }

    pub async fn ensure_ready(&self) -> Result<(), StoreError> {
        self.db.ensure_ready().await
    }

    pub fn dependency(&self) -> Arc<dyn Dependency> {
        self.db.dependency()
    }

    /// The events this service applied, for the bus's purge.
    pub fn inbox(&self) -> crate::events::inbox::Inbox {
        crate::events::inbox::Inbox::new("analytics", self.db.clone())
    }

    /// Applies an event's fact once; `false`: applied before.
    pub async fn apply(&self, fact: Fact) -> Result<bool, StoreError> {
        self.writer.submit(Apply(fact)).await
    }

    /// Sums of the additive metrics over `range` and its distinct active
    /// users. Hours are read where they are kept (from `boundary`, the
    /// first day the purge keeps, on); the part of the range before it is
    /// read from whole days.
    pub async fn totals(
        &self,
        range: Range,
        boundary: i64,
    ) -> Result<(BTreeMap<String, i64>, i64), StoreError> {
        let parts = Parts::of(range, boundary);
        let sums = on_backend!(self, sums(parts))?;
        let active = on_backend!(self, active(parts))?;
        Ok((sums.into_iter().collect(), active))
    }

    /// The values of the query's buckets that have any (the others are 0).
    pub async fn series(&self, query: &SeriesQuery) -> Result<HashMap<i64, i64>, StoreError> {
        let (grain, from, to) = (
            query.grain,
            query.grain.floor(query.range.from),
            query.range.to,
        );
        if query.metric.is_active() {
            // Open buckets: counted now; closed ones: the value their close stored.
            let mut values: HashMap<i64, i64> = on_backend!(self, active_series(grain, from, to))?
                .into_iter()
                .collect();
            values.extend(on_backend!(self, closed_active(grain, from, to))?);
            Ok(values)
        } else {
            Ok(
                on_backend!(self, series(grain, query.metric.as_str(), from, to))?
                    .into_iter()
                    .collect(),
            )
        }
    }

    pub async fn user(&self, user: Uuid) -> Result<UserFigures, StoreError> {
        on_backend!(self, user(user))
    }

    /// Closes the finished buckets of `grain` before `before` that are not
    /// closed yet (and always the one just ended): stores their distinct
    /// active users. A day at or after `rollup_from` is also rolled up from
    /// its hours. Answers how many were closed.
    pub async fn close(
        &self,
        grain: Grain,
        before: i64,
        rollup_from: Option<i64>,
    ) -> Result<u64, StoreError> {
        on_backend!(self, close(grain, before, rollup_from))
    }

    /// Deletes hourly rows (and job runs) before `before` (a midnight).
    pub async fn purge(&self, before: i64) -> Result<u64, StoreError> {
        on_backend!(self, purge(before))
    }

    /// Takes the lease of `job`'s `tick`: `true` for the one instance that
    /// inserted the row first.
    pub async fn claim_tick(
        &self,
        job: &str,
        tick: i64,
        holder: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        on_backend!(self, claim_tick(job, tick, holder, now))
    }

    pub async fn finish_tick(
        &self,
        job: &str,
        tick: i64,
        now: i64,
        duration_ms: i64,
        error: Option<&str>,
    ) -> Result<(), StoreError> {
        on_backend!(self, finish_tick(job, tick, now, duration_ms, error))
    }

    pub async fn last_run(&self, job: &str) -> Result<Option<LastRun>, StoreError> {
        on_backend!(self, last_run(job))
    }

    /// Runs of `job` recorded (every instance's), for tests and operators.
    pub async fn runs(&self, job: &str) -> Result<i64, StoreError> {
        on_backend!(self, runs(job))
    }
}

/// A range split where hourly rows stop being kept: hours from
/// `max(from, boundary)` to `to`, whole days before `boundary`.
#[derive(Clone, Copy, Debug)]
pub(super) struct Parts {
    hours: (i64, i64),
    days: (i64, i64),
}

impl Parts {
    fn of(range: Range, boundary: i64) -> Parts {
        let from_hour = Grain::Hour.floor(range.from).max(boundary);
        let from_day = Grain::Day.floor(range.from);
        Parts {
            hours: (from_hour, range.to),
            days: (from_day, boundary.min(range.to)),
        }
    }
}

/// The first midnight whose hours are kept, `retention` before `now`.
pub fn boundary(now: i64, retention: std::time::Duration) -> i64 {
    let retention = i64::try_from(retention.as_secs()).unwrap_or(i64::MAX / 2);
    Grain::Day.floor(now - retention)
}

pub(super) fn job_view(
    name: &'static str,
    schedule: String,
    last: Option<LastRun>,
    next: Option<i64>,
) -> JobView {
    use super::model::rfc3339;
    JobView {
        name,
        schedule,
        last_run_at: last.as_ref().map(|l| rfc3339(l.started_at)),
        last_duration_ms: last.as_ref().and_then(|l| l.duration_ms),
        last_error: last.and_then(|l| l.error),
        next_run_at: next.map(rfc3339),
    }
}
