//! The idempotency SQL, written once for both backends ([`per_backend!`]).
//! On SQLite every statement goes through the service's single writer
//! connection, so claims are serialised by it. On PostgreSQL, safe across
//! replicas, a concurrent claim of the same key waits on the first one's row
//! (`ON CONFLICT`, then `FOR UPDATE`) and then sees it in flight,
//! replayable, or free.

use std::time::Duration;

use sqlx::{Pool, Transaction};
use time::OffsetDateTime;

use super::{judge, retention_cutoff, Claim, IdempotencyKey, IdempotencySql, Judgement, KeyRow};
use crate::storage::sql::per_backend;
use crate::storage::{unix_millis, StoreError};

per_backend! {
    /// Claims `key` for `lease` (how long before an unfinished claim is presumed dead).
    pub async fn claim(
        writer: &Pool<DB>,
        key: &IdempotencyKey,
        lease: Duration,
    ) -> Result<Claim, StoreError> {
        let now = OffsetDateTime::now_utc();
        let locked_until = unix_millis(now + lease);
        let mut tx = writer.begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO idempotency_keys (scope, key, request_hash, locked_until, created_at)
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (scope, key) DO NOTHING",
        )
        .bind(&key.scope)
        .bind(&key.key)
        .bind(&key.request_hash)
        .bind(locked_until)
        .bind(unix_millis(now))
        .execute(&mut *tx)
        .await?;
        let outcome = if inserted.rows_affected() == 1 {
            Claim::Claimed
        } else {
            let row: KeyRow = sqlx::query_as(&format!(
                "SELECT request_hash, status, response, locked_until, created_at
                 FROM idempotency_keys WHERE scope = $1 AND key = $2{}",
                DB::FOR_UPDATE
            ))
            .bind(&key.scope)
            .bind(&key.key)
            .fetch_one(&mut *tx)
            .await?;
            match judge(row, key, now)? {
                Judgement::Final(claim) => claim,
                Judgement::TakeOver => {
                    take_over(&mut tx, key, locked_until, unix_millis(now)).await?;
                    Claim::Claimed
                }
            }
        };
        tx.commit().await?;
        Ok(outcome)
    }

    async fn take_over(
        tx: &mut Transaction<'_, DB>,
        key: &IdempotencyKey,
        locked_until: i64,
        now: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE idempotency_keys
             SET request_hash = $1, status = NULL, response = NULL, locked_until = $2, created_at = $3
             WHERE scope = $4 AND key = $5",
        )
        .bind(&key.request_hash)
        .bind(locked_until)
        .bind(now)
        .bind(&key.scope)
        .bind(&key.key)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    impl IdempotencySql for DB {
        async fn complete_in(
            tx: &mut Transaction<'_, DB>,
            key: &IdempotencyKey,
            status: u16,
            body: &[u8],
        ) -> Result<(), StoreError> {
            sqlx::query(
                "UPDATE idempotency_keys SET status = $1, response = $2
                 WHERE scope = $3 AND key = $4",
            )
            .bind(i64::from(status))
            .bind(body)
            .bind(&key.scope)
            .bind(&key.key)
            .execute(&mut **tx)
            .await?;
            Ok(())
        }
    }

    /// Gives a claim back after the request failed, so a retry can run at once.
    pub async fn release(writer: &Pool<DB>, key: &IdempotencyKey) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM idempotency_keys WHERE scope = $1 AND key = $2 AND status IS NULL")
            .bind(&key.scope)
            .bind(&key.key)
            .execute(writer)
            .await?;
        Ok(())
    }

    /// Deletes keys past their retention; returns how many.
    pub async fn purge_expired(writer: &Pool<DB>) -> Result<u64, StoreError> {
        let cutoff = retention_cutoff();
        let done = sqlx::query(
            "DELETE FROM idempotency_keys
             WHERE created_at < $1 AND (status IS NOT NULL OR locked_until < $1)",
        )
        .bind(cutoff)
        .execute(writer)
        .await?;
        Ok(done.rows_affected())
    }
}
