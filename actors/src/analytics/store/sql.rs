//! The analytics SQL, written once for both backends ([`per_backend!`]):
//! every column is an integer or text, so not even the [`Dialect`] differs.
//! Upserts (`ON CONFLICT … DO UPDATE`) make each increment one statement;
//! on PostgreSQL they take the counter row's lock, so concurrent batches
//! (workers, replicas) add up instead of overwriting each other.

use std::collections::{BTreeSet, HashSet};

use sqlx::Transaction;
use time::OffsetDateTime;
use uuid::Uuid;

use super::{Apply, Effects, LastRun, Parts};
use crate::analytics::model::{rfc3339, Amount, Grain, UserFigures, ACTIVE, DAY};
use crate::events::inbox::InboxSql;
use crate::events::Event;
use crate::storage::group_commit::Batch;
use crate::storage::sql::per_backend;
use crate::storage::StoreError;

per_backend! {
    impl Batch<DB> for Apply {
        type Output = bool;

        fn summary(&self) -> &'static str {
            "UPSERT counters"
        }

        /// Records the batch's events (one statement) and applies the new
        /// ones, in the same transaction.
        async fn write(
            tx: &mut Transaction<'_, DB>,
            ops: &[Self],
        ) -> Result<Vec<bool>, StoreError> {
            let events: Vec<&Event> = ops.iter().map(|Apply(fact)| &fact.event).collect();
            let fresh = DB::record_all_in(tx, &events).await?;
            // The same event twice in one batch: the second was applied by the first.
            let mut seen = HashSet::new();
            let mut effects = Effects::default();
            let written = ops
                .iter()
                .map(|Apply(fact)| {
                    let new = fresh.contains(&fact.event.id) && seen.insert(fact.event.id);
                    if new {
                        effects.add(fact);
                    }
                    new
                })
                .collect();
            apply_in(tx, &effects).await?;
            Ok(written)
        }
    }

    /// Writes a batch's effects, each table's rows in key order: counters,
    /// activity (a new row in a closed bucket recomputes the bucket's
    /// distinct users: a late event), then the users' totals.
    async fn apply_in(tx: &mut Transaction<'_, DB>, effects: &Effects) -> Result<(), StoreError> {
        for ((grain, bucket, metric), value) in &effects.counters {
            sqlx::query(
                "INSERT INTO counters (grain, bucket, metric, value) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (grain, bucket, metric) DO UPDATE SET value = counters.value + excluded.value",
            )
            .bind(grain.as_str())
            .bind(*bucket)
            .bind(metric)
            .bind(*value)
            .execute(&mut **tx)
            .await?;
        }
        let mut reopened = BTreeSet::new();
        for (grain, bucket, user) in &effects.activity {
            let done = sqlx::query(
                "INSERT INTO activity (grain, bucket, user_id) VALUES ($1, $2, $3)
                 ON CONFLICT (grain, bucket, user_id) DO NOTHING",
            )
            .bind(grain.as_str())
            .bind(*bucket)
            .bind(user)
            .execute(&mut **tx)
            .await?;
            if done.rows_affected() == 1 && is_closed(tx, *grain, *bucket).await? {
                reopened.insert((*grain, *bucket));
            }
        }
        for (grain, bucket) in reopened {
            store_active_in(tx, grain, bucket).await?;
        }
        for (user, delta) in &effects.users {
            sqlx::query(
                "INSERT INTO user_totals (user_id, logins, orders, invoices_paid, last_active_at)
                 VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (user_id) DO UPDATE SET
                     logins = user_totals.logins + excluded.logins,
                     orders = user_totals.orders + excluded.orders,
                     invoices_paid = user_totals.invoices_paid + excluded.invoices_paid,
                     last_active_at = CASE WHEN excluded.last_active_at > user_totals.last_active_at
                                           THEN excluded.last_active_at ELSE user_totals.last_active_at END",
            )
            .bind(user)
            .bind(delta.logins)
            .bind(delta.orders)
            .bind(delta.invoices_paid)
            .bind(delta.last_active_at)
            .execute(&mut **tx)
            .await?;
        }
        for ((user, currency), amount) in &effects.amounts {
            sqlx::query(
                "INSERT INTO user_amounts (user_id, currency, amount) VALUES ($1, $2, $3)
                 ON CONFLICT (user_id, currency) DO UPDATE SET amount = user_amounts.amount + excluded.amount",
            )
            .bind(user)
            .bind(currency)
            .bind(*amount)
            .execute(&mut **tx)
            .await?;
        }
        Ok(())
    }

    async fn is_closed(
        tx: &mut Transaction<'_, DB>,
        grain: Grain,
        bucket: i64,
    ) -> Result<bool, StoreError> {
        let found: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM closed_buckets WHERE grain = $1 AND bucket = $2",
        )
        .bind(grain.as_str())
        .bind(bucket)
        .fetch_one(&mut **tx)
        .await?;
        Ok(found > 0)
    }

    /// Stores the bucket's distinct active users, counted from its activity.
    async fn store_active_in(
        tx: &mut Transaction<'_, DB>,
        grain: Grain,
        bucket: i64,
    ) -> Result<(), StoreError> {
        let active: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM activity WHERE grain = $1 AND bucket = $2",
        )
        .bind(grain.as_str())
        .bind(bucket)
        .fetch_one(&mut **tx)
        .await?;
        sqlx::query(
            "INSERT INTO counters (grain, bucket, metric, value) VALUES ($1, $2, $3, $4)
             ON CONFLICT (grain, bucket, metric) DO UPDATE SET value = excluded.value",
        )
        .bind(grain.as_str())
        .bind(bucket)
        .bind(ACTIVE)
        .bind(active)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    /// The hourly close and the daily roll-up (see `AnalyticsStore::close`).
    pub(in crate::analytics::store) async fn close(
        db: &Db,
        grain: Grain,
        before: i64,
        rollup_from: Option<i64>,
    ) -> Result<u64, StoreError> {
        let mut tx = db.writer().begin().await?;
        let mut buckets: Vec<i64> = sqlx::query_scalar(
            "SELECT DISTINCT a.bucket FROM activity a
             WHERE a.grain = $1 AND a.bucket < $2
               AND NOT EXISTS (SELECT 1 FROM closed_buckets c WHERE c.grain = a.grain AND c.bucket = a.bucket)",
        )
        .bind(grain.as_str())
        .bind(before)
        .fetch_all(&mut *tx)
        .await?;
        let ended = before - grain.seconds();
        if !buckets.contains(&ended) {
            buckets.push(ended);
        }
        let now = OffsetDateTime::now_utc().unix_timestamp();
        for bucket in &buckets {
            // Only days whose hours are all still kept are re-summed.
            if rollup_from.is_some_and(|from| *bucket >= from) {
                rollup_in(&mut tx, *bucket).await?;
            }
            store_active_in(&mut tx, grain, *bucket).await?;
            sqlx::query(
                "INSERT INTO closed_buckets (grain, bucket, closed_at) VALUES ($1, $2, $3)
                 ON CONFLICT (grain, bucket) DO UPDATE SET closed_at = excluded.closed_at",
            )
            .bind(grain.as_str())
            .bind(*bucket)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(buckets.len() as u64)
    }

    /// Rewrites the day's additive counters as the sums of its hours (which
    /// the events also added to the day as they came: the same figures,
    /// unless a write was lost).
    async fn rollup_in(tx: &mut Transaction<'_, DB>, day: i64) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO counters (grain, bucket, metric, value)
             SELECT 'day', $1, metric, CAST(SUM(value) AS BIGINT) FROM counters
             WHERE grain = 'hour' AND bucket >= $1 AND bucket < $2 AND metric <> $3
             GROUP BY metric
             ON CONFLICT (grain, bucket, metric) DO UPDATE SET value = excluded.value",
        )
        .bind(day)
        .bind(day + DAY)
        .bind(ACTIVE)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    pub(in crate::analytics::store) async fn purge(db: &Db, before: i64) -> Result<u64, StoreError> {
        let mut tx = db.writer().begin().await?;
        let mut deleted = 0;
        for table in ["counters", "activity", "closed_buckets"] {
            let done = sqlx::query(&format!("DELETE FROM {table} WHERE grain = 'hour' AND bucket < $1"))
                .bind(before)
                .execute(&mut *tx)
                .await?;
            deleted += done.rows_affected();
        }
        // Job runs are kept as long as hours: enough to see what ran when.
        let done = sqlx::query("DELETE FROM job_runs WHERE tick < $1")
            .bind(before)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(deleted + done.rows_affected())
    }

    pub(in crate::analytics::store) async fn sums(db: &Db, parts: Parts) -> Result<Vec<(String, i64)>, StoreError> {
        let mut conn = db.read().await?;
        Ok(sqlx::query_as(
            "SELECT metric, CAST(SUM(value) AS BIGINT) FROM counters
             WHERE metric <> $1
               AND ((grain = 'hour' AND bucket >= $2 AND bucket < $3)
                 OR (grain = 'day' AND bucket >= $4 AND bucket < $5))
             GROUP BY metric",
        )
        .bind(ACTIVE)
        .bind(parts.hours.0)
        .bind(parts.hours.1)
        .bind(parts.days.0)
        .bind(parts.days.1)
        .fetch_all(&mut *conn)
        .await?)
    }

    pub(in crate::analytics::store) async fn active(db: &Db, parts: Parts) -> Result<i64, StoreError> {
        let mut conn = db.read().await?;
        Ok(sqlx::query_scalar(
            "SELECT COUNT(*) FROM (
                 SELECT user_id FROM activity WHERE grain = 'hour' AND bucket >= $1 AND bucket < $2
                 UNION
                 SELECT user_id FROM activity WHERE grain = 'day' AND bucket >= $3 AND bucket < $4
             ) AS users",
        )
        .bind(parts.hours.0)
        .bind(parts.hours.1)
        .bind(parts.days.0)
        .bind(parts.days.1)
        .fetch_one(&mut *conn)
        .await?)
    }

    pub(in crate::analytics::store) async fn series(
        db: &Db,
        grain: Grain,
        metric: &str,
        from: i64,
        to: i64,
    ) -> Result<Vec<(i64, i64)>, StoreError> {
        let mut conn = db.read().await?;
        Ok(sqlx::query_as(
            "SELECT bucket, value FROM counters
             WHERE grain = $1 AND metric = $2 AND bucket >= $3 AND bucket < $4",
        )
        .bind(grain.as_str())
        .bind(metric)
        .bind(from)
        .bind(to)
        .fetch_all(&mut *conn)
        .await?)
    }

    pub(in crate::analytics::store) async fn active_series(
        db: &Db,
        grain: Grain,
        from: i64,
        to: i64,
    ) -> Result<Vec<(i64, i64)>, StoreError> {
        let mut conn = db.read().await?;
        Ok(sqlx::query_as(
            "SELECT bucket, COUNT(*) FROM activity
             WHERE grain = $1 AND bucket >= $2 AND bucket < $3 GROUP BY bucket",
        )
        .bind(grain.as_str())
        .bind(from)
        .bind(to)
        .fetch_all(&mut *conn)
        .await?)
    }

    pub(in crate::analytics::store) async fn closed_active(
        db: &Db,
        grain: Grain,
        from: i64,
        to: i64,
    ) -> Result<Vec<(i64, i64)>, StoreError> {
        let mut conn = db.read().await?;
        Ok(sqlx::query_as(
            "SELECT c.bucket, c.value FROM counters c
             JOIN closed_buckets k ON k.grain = c.grain AND k.bucket = c.bucket
             WHERE c.grain = $1 AND c.metric = $2 AND c.bucket >= $3 AND c.bucket < $4",
        )
        .bind(grain.as_str())
        .bind(ACTIVE)
        .bind(from)
        .bind(to)
        .fetch_all(&mut *conn)
        .await?)
    }

    pub(in crate::analytics::store) async fn user(db: &Db, user: Uuid) -> Result<UserFigures, StoreError> {
        let mut conn = db.read().await?;
        let id = user.to_string();
        let totals: Option<(i64, i64, i64, i64)> = sqlx::query_as(
            "SELECT logins, orders, invoices_paid, last_active_at FROM user_totals WHERE user_id = $1",
        )
        .bind(&id)
        .fetch_optional(&mut *conn)
        .await?;
        let amounts: Vec<(String, i64)> = sqlx::query_as(
            "SELECT currency, amount FROM user_amounts WHERE user_id = $1 ORDER BY currency",
        )
        .bind(&id)
        .fetch_all(&mut *conn)
        .await?;
        let active_days: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM activity WHERE user_id = $1 AND grain = 'day'",
        )
        .bind(&id)
        .fetch_one(&mut *conn)
        .await?;
        let (logins, orders, invoices_paid, last) = totals.map_or((0, 0, 0, None), |(l, o, p, at)| (l, o, p, Some(at)));
        Ok(UserFigures {
            user_id: user,
            logins,
            orders,
            invoices_paid,
            amount_paid: amounts
                .into_iter()
                .map(|(currency, amount)| Amount { currency, amount })
                .collect(),
            last_active_at: last.map(rfc3339),
            active_days,
        })
    }

    pub(in crate::analytics::store) async fn claim_tick(
        db: &Db,
        job: &str,
        tick: i64,
        holder: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "INSERT INTO job_runs (job, tick, holder, started_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (job, tick) DO NOTHING",
        )
        .bind(job)
        .bind(tick)
        .bind(holder)
        .bind(now)
        .execute(db.writer())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    pub(in crate::analytics::store) async fn finish_tick(
        db: &Db,
        job: &str,
        tick: i64,
        now: i64,
        duration_ms: i64,
        error: Option<&str>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE job_runs SET finished_at = $3, duration_ms = $4, error = $5 WHERE job = $1 AND tick = $2",
        )
        .bind(job)
        .bind(tick)
        .bind(now)
        .bind(duration_ms)
        .bind(error)
        .execute(db.writer())
        .await?;
        Ok(())
    }

    pub(in crate::analytics::store) async fn last_run(db: &Db, job: &str) -> Result<Option<LastRun>, StoreError> {
        let mut conn = db.read().await?;
        let row: Option<(i64, Option<i64>, Option<String>)> = sqlx::query_as(
            "SELECT started_at, duration_ms, error FROM job_runs
             WHERE job = $1 AND finished_at IS NOT NULL ORDER BY tick DESC LIMIT 1",
        )
        .bind(job)
        .fetch_optional(&mut *conn)
        .await?;
        Ok(row.map(|(started_at, duration_ms, error)| LastRun {
            started_at,
            duration_ms,
            error,
        }))
    }

    pub(in crate::analytics::store) async fn runs(db: &Db, job: &str) -> Result<i64, StoreError> {
        let mut conn = db.read().await?;
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM job_runs WHERE job = $1")
            .bind(job)
            .fetch_one(&mut *conn)
            .await?)
    }
}
