//! Periodic upkeep of a service's database — purging expired idempotency
//! keys, sessions, old rows — as tasks that run every period until the
//! store closes at shutdown. One loop for every service, so each says only
//! what it deletes and how often.

use std::future::Future;
use std::time::Duration;

use super::StoreError;

/// Runs `purge` every `every` (the first time one period after start,
/// when the service's database has been migrated), logging how many
/// rows it deleted as `purged <what>`, until the store's pool is closed.
/// A failure is logged and tried again at the next tick.
pub fn spawn_purge<F, Fut>(what: &'static str, every: Duration, mut purge: F)
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = Result<u64, StoreError>> + Send,
{
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            match purge().await {
                Ok(0) => {}
                Ok(deleted) => tracing::info!(deleted, what, "purged expired rows"),
                Err(err) if is_closed(&err) => return,
                Err(err) => tracing::warn!(error = %err, what, "could not purge expired rows"),
            }
        }
    });
}

/// The store was closed: the process is stopping.
pub fn is_closed(err: &StoreError) -> bool {
    matches!(err, StoreError::Database(sqlx::Error::PoolClosed))
}
