//! Storage helpers shared by the services: each service opens its own database
//! (database per service) through [`sqlite::SqliteDb`] and reports it to the
//! probes as a [`Dependency`].

pub mod sqlite;

use std::time::Duration;

use futures::future::BoxFuture;

/// Storage settings from the configuration (`[database]`).
#[derive(Clone, Debug)]
pub struct StorageSettings {
    /// How long a SQLite connection waits on a lock before failing.
    pub busy_timeout: Duration,
    /// Size of each service's reader pool.
    pub read_connections: u32,
    /// How long acquiring a connection from a pool may take.
    pub acquire_timeout: Duration,
}

impl Default for StorageSettings {
    fn default() -> Self {
        Self {
            busy_timeout: Duration::from_secs(5),
            read_connections: 8,
            acquire_timeout: Duration::from_secs(5),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("cannot create data directory {path}: {source}")]
    DataDir {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// A row that does not parse back into the model: a bug or a hand edit.
    #[error("corrupt row: {0}")]
    Corrupt(String),
}

/// Something a service depends on, checked by `/ready` and `/health`.
pub trait Dependency: Send + Sync + 'static {
    /// How it appears in `/health` (`sqlite:orders`).
    fn name(&self) -> String;
    /// Answers how long a round trip took, or why it failed.
    fn ping(&self) -> BoxFuture<'_, Result<Duration, String>>;
}
