//! Idempotency keys (API.md conventions): the same key with the same body
//! replays the stored response; with another body it is a 422; while the first
//! request is still in flight it is a 409. Keys are scoped to the caller and
//! the route and kept at least [`RETENTION`].
//!
//! Each service keeps its keys in its own database (table `idempotency_keys`,
//! created by the service's migrations). A request first *claims* its key in a
//! short transaction of its own, so a concurrent duplicate sees it in flight;
//! the service then writes its effect and *completes* the key in one
//! transaction ([`complete_in`]), so an effect never exists without its stored
//! response. A claim whose request died is abandoned after its lease and can
//! be claimed again.

use std::time::Duration;

use sha2::{Digest, Sha256};
use sqlx::{Sqlite, SqlitePool, Transaction};
use time::OffsetDateTime;

use crate::storage::StoreError;
use crate::{FieldError, ServiceError};

/// How long a completed key answers with its stored response.
pub const RETENTION: Duration = Duration::from_secs(24 * 60 * 60);

/// A validated `idempotency-key` header with the request it came with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdempotencyKey {
    /// Caller and route: the same key from another user is another key.
    pub scope: String,
    pub key: String,
    /// SHA-256 of the request body, hex.
    pub request_hash: String,
}

impl IdempotencyKey {
    /// Reads the header, if present: 1 to 255 visible ASCII characters.
    pub fn from_request(
        headers: &http::HeaderMap,
        scope: String,
        body: &[u8],
    ) -> Result<Option<Self>, ServiceError> {
        let Some(value) = headers.get("idempotency-key") else {
            return Ok(None);
        };
        let invalid = || {
            ServiceError::Validation(vec![FieldError::new(
                "idempotency-key",
                "must be 1 to 255 visible ASCII characters",
            )])
        };
        let key = value.to_str().map_err(|_| invalid())?;
        if key.is_empty() || key.len() > 255 || !key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(invalid());
        }
        Ok(Some(Self {
            scope,
            key: key.to_owned(),
            request_hash: hex::encode(Sha256::digest(body)),
        }))
    }
}

/// What a claim found.
#[derive(Debug, PartialEq, Eq)]
pub enum Claim {
    /// The key is ours: go ahead, then complete it.
    Claimed,
    /// Done before with the same body: answer this.
    Replay { status: u16, body: Vec<u8> },
    /// Another request with this key is still running.
    InFlight,
    /// The key was used with another body.
    Mismatch,
}

impl Claim {
    /// The error for the outcomes that stop the request.
    pub fn conflict_error(&self) -> Option<ServiceError> {
        match self {
            Claim::InFlight => Some(ServiceError::Conflict(
                "a request with this idempotency-key is still in progress".into(),
            )),
            Claim::Mismatch => Some(ServiceError::validation(
                "idempotency-key",
                "was already used with a different request body",
            )),
            Claim::Claimed | Claim::Replay { .. } => None,
        }
    }
}

fn millis(t: OffsetDateTime) -> i64 {
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

/// `request_hash, status, response, locked_until, created_at`
type KeyRow = (String, Option<i64>, Option<Vec<u8>>, i64, i64);

/// Claims `key` for `lease` (how long before an unfinished claim is presumed dead).
pub async fn claim(
    writer: &SqlitePool,
    key: &IdempotencyKey,
    lease: Duration,
) -> Result<Claim, StoreError> {
    let now = OffsetDateTime::now_utc();
    let locked_until = millis(now + lease);
    let mut tx = writer.begin().await?;
    let existing: Option<KeyRow> = sqlx::query_as(
        "SELECT request_hash, status, response, locked_until, created_at
         FROM idempotency_keys WHERE scope = ? AND key = ?",
    )
    .bind(&key.scope)
    .bind(&key.key)
    .fetch_optional(&mut *tx)
    .await?;
    let retention_start = millis(now - RETENTION);
    let outcome = match existing {
        Some((_, Some(_), _, _, created_at)) if created_at < retention_start => {
            take_over(&mut tx, key, locked_until, millis(now)).await?
        }
        Some((_, None, _, lease_end, _)) if lease_end <= millis(now) => {
            // The request that claimed it died: the key is free again.
            take_over(&mut tx, key, locked_until, millis(now)).await?
        }
        Some((hash, _, _, _, _)) if hash != key.request_hash => Claim::Mismatch,
        Some((_, Some(status), response, _, _)) => Claim::Replay {
            status: u16::try_from(status)
                .map_err(|_| StoreError::Corrupt(format!("status {status}")))?,
            body: response.unwrap_or_default(),
        },
        Some(_in_flight) => Claim::InFlight,
        None => {
            sqlx::query(
                "INSERT INTO idempotency_keys (scope, key, request_hash, locked_until, created_at)
                 VALUES (?, ?, ?, ?, ?)",
            )
            .bind(&key.scope)
            .bind(&key.key)
            .bind(&key.request_hash)
            .bind(locked_until)
            .bind(millis(now))
            .execute(&mut *tx)
            .await?;
            Claim::Claimed
        }
    };
    tx.commit().await?;
    Ok(outcome)
}

async fn take_over(
    tx: &mut Transaction<'_, Sqlite>,
    key: &IdempotencyKey,
    locked_until: i64,
    now: i64,
) -> Result<Claim, StoreError> {
    sqlx::query(
        "UPDATE idempotency_keys
         SET request_hash = ?, status = NULL, response = NULL, locked_until = ?, created_at = ?
         WHERE scope = ? AND key = ?",
    )
    .bind(&key.request_hash)
    .bind(locked_until)
    .bind(now)
    .bind(&key.scope)
    .bind(&key.key)
    .execute(&mut **tx)
    .await?;
    Ok(Claim::Claimed)
}

/// Stores the response of a claimed key, inside the transaction that writes the effect.
pub async fn complete_in(
    tx: &mut Transaction<'_, Sqlite>,
    key: &IdempotencyKey,
    status: u16,
    body: &[u8],
) -> Result<(), StoreError> {
    sqlx::query("UPDATE idempotency_keys SET status = ?, response = ? WHERE scope = ? AND key = ?")
        .bind(i64::from(status))
        .bind(body)
        .bind(&key.scope)
        .bind(&key.key)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Gives a claim back after the request failed, so a retry can run at once.
pub async fn release(writer: &SqlitePool, key: &IdempotencyKey) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM idempotency_keys WHERE scope = ? AND key = ? AND status IS NULL")
        .bind(&key.scope)
        .bind(&key.key)
        .execute(writer)
        .await?;
    Ok(())
}

/// Deletes keys past their retention (completed ones, and claims whose
/// request died long ago); returns how many.
pub async fn purge_expired(writer: &SqlitePool) -> Result<u64, StoreError> {
    let cutoff = millis(OffsetDateTime::now_utc() - RETENTION);
    let done = sqlx::query(
        "DELETE FROM idempotency_keys
         WHERE created_at < ? AND (status IS NOT NULL OR locked_until < ?)",
    )
    .bind(cutoff)
    .bind(cutoff)
    .execute(writer)
    .await?;
    Ok(done.rows_affected())
}
