//! Idempotency keys (API.md conventions): the same key with the same body
//! replays the stored response; with another body it is a 422; while the first
//! request is still in flight it is a 409. Keys are scoped to the caller and
//! the route and kept at least [`RETENTION`].
//!
//! Each service keeps its keys in its own database (table `idempotency_keys`,
//! a shared table the storage layer creates for every service whose schema
//! names [`crate::storage::SharedTable::IdempotencyKeys`]); `sql.rs` holds
//! its SQL, written once for both backends, this module the rules.
//!
//! A request first *claims* its key in a short transaction of its own, so a
//! concurrent duplicate sees it in flight; the service then writes its effect
//! and *completes* the key in one transaction (`complete_in`), so an effect
//! never exists without its stored response. A claim whose request died is
//! abandoned after its lease and can be claimed again.

mod sql;

pub use sql::{postgres, sqlite};

use std::time::Duration;

use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::storage::{unix_millis, Database, StoreError};
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

/// What a store runs on its idempotency keys inside its own transactions, on
/// either backend (see [`crate::storage::sql`]).
pub trait IdempotencySql: sqlx::Database {
    /// Stores the response of a claimed key, inside the transaction that
    /// writes the effect.
    fn complete_in(
        tx: &mut sqlx::Transaction<'_, Self>,
        key: &IdempotencyKey,
        status: u16,
        body: &[u8],
    ) -> impl std::future::Future<Output = Result<(), StoreError>> + Send;
}

/// Claims `key` in the service's database `db` for `lease` (how long before
/// an unfinished claim is presumed dead).
pub async fn claim(
    db: &Database,
    key: &IdempotencyKey,
    lease: Duration,
) -> Result<Claim, StoreError> {
    match db {
        Database::Sqlite(db) => sqlite::claim(db.writer(), key, lease).await,
        Database::Postgres(db) => postgres::claim(db.writer(), key, lease).await,
    }
}

/// Gives a claim back after its request failed, so a retry can run at once.
pub async fn release(db: &Database, key: &IdempotencyKey) -> Result<(), StoreError> {
    match db {
        Database::Sqlite(db) => sqlite::release(db.writer(), key).await,
        Database::Postgres(db) => postgres::release(db.writer(), key).await,
    }
}

/// Deletes the keys past their retention; returns how many.
pub async fn purge_expired(db: &Database) -> Result<u64, StoreError> {
    match db {
        Database::Sqlite(db) => sqlite::purge_expired(db.writer()).await,
        Database::Postgres(db) => postgres::purge_expired(db.writer()).await,
    }
}

/// `request_hash, status, response, locked_until, created_at`
pub(crate) type KeyRow = (String, Option<i64>, Option<Vec<u8>>, i64, i64);

/// What an existing row means for a request presenting its key.
pub(crate) enum Judgement {
    /// The row is stale (past retention, or a claim whose request died): claim it.
    TakeOver,
    /// Any other outcome, final.
    Final(Claim),
}

/// The rules, in order: a claim whose lease ran out is free whatever the
/// body; a completed key past retention is free; another body is a mismatch;
/// a completed key replays; otherwise its request is still in flight.
pub(crate) fn judge(
    row: KeyRow,
    key: &IdempotencyKey,
    now: OffsetDateTime,
) -> Result<Judgement, StoreError> {
    let (hash, status, response, locked_until, created_at) = row;
    let now = unix_millis(now);
    let past_retention = created_at < now - millis_of(RETENTION);
    Ok(match status {
        None if locked_until <= now => Judgement::TakeOver,
        Some(_) if past_retention => Judgement::TakeOver,
        _ if hash != key.request_hash => Judgement::Final(Claim::Mismatch),
        Some(status) => Judgement::Final(Claim::Replay {
            status: u16::try_from(status)
                .map_err(|_| StoreError::Corrupt(format!("idempotency status {status}")))?,
            body: response.unwrap_or_default(),
        }),
        None => Judgement::Final(Claim::InFlight),
    })
}

fn millis_of(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// The cut-off before which completed keys (and long-dead claims) are purged.
pub(crate) fn retention_cutoff() -> i64 {
    unix_millis(OffsetDateTime::now_utc()) - millis_of(RETENTION)
}
