//! Storage shared by the services. Each service owns its database (database
//! per service): a SQLite file under the data dir by default, or its own
//! schema in a PostgreSQL database when a URL is configured. [`Database`]
//! opens either, runs the service's migrations for that backend with those
//! of the shared tables it uses ([`schema`]), and reports
//! itself to the probes and metrics as a [`Dependency`].

pub mod group_commit;
pub mod postgres;
pub mod row_cache;
pub mod schema;
pub mod sql;
pub mod sqlite;
pub mod upkeep;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;

use postgres::PgDb;
pub use schema::{Earlier, Migrations, Schema, SharedTable};
use sqlite::SqliteDb;

/// Storage settings from the configuration (`[database]`, and a service's
/// own `database_url`).
#[derive(Clone, Debug)]
pub struct StorageSettings {
    /// `postgres://…` for PostgreSQL; `None` for SQLite under the data dir.
    pub url: Option<String>,
    /// How long a SQLite connection waits on a lock before failing.
    pub busy_timeout: Duration,
    /// Size of each service's SQLite reader pool.
    pub read_connections: u32,
    /// SQLite page cache per connection, in KiB.
    pub sqlite_cache_kib: u32,
    /// Rows a service keeps of what it wrote, to answer reads of them
    /// (SQLite only; 0: none). See [`row_cache`].
    pub row_cache: usize,
    /// Size of each service's PostgreSQL pool.
    pub max_connections: u32,
    /// How long acquiring a connection from a pool may take.
    pub acquire_timeout: Duration,
    /// PostgreSQL `statement_timeout` for every connection.
    pub statement_timeout: Duration,
    /// How writes are grouped into transactions (group commit).
    pub group_commit: group_commit::GroupCommitSettings,
}

impl Default for StorageSettings {
    fn default() -> Self {
        Self {
            url: None,
            busy_timeout: Duration::from_secs(5),
            read_connections: 8,
            sqlite_cache_kib: 512,
            row_cache: 4096,
            max_connections: 10,
            acquire_timeout: Duration::from_secs(3),
            statement_timeout: Duration::from_secs(5),
            group_commit: group_commit::GroupCommitSettings::default(),
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
    /// A time outside the years both backends store and read back alike
    /// (SQLite keeps RFC 3339 text, which has four-digit years). The edge
    /// parses RFC 3339, so only a bug or a clock far off reaches this.
    #[error("time {0} is outside the years 0000..=9999 the store keeps")]
    TimeOutOfRange(time::OffsetDateTime),
    /// Writing panicked (a bug): this write failed, the writer goes on.
    #[error("a write panicked: {0}")]
    Panicked(String),
    /// The service's writer is gone (the process is stopping).
    #[error("the {0} writer has stopped")]
    WriterStopped(&'static str),
}

impl StoreError {
    /// Whether the database is unreachable, restarting or refusing
    /// connections for now (the client should come back), rather than the
    /// statement being wrong: pool timeouts, closed pools, I/O and TLS
    /// errors, and PostgreSQL's connection exceptions (SQLSTATE class 08),
    /// shutdowns (57P01 admin, 57P02 crash, 57P03 cannot connect now) and
    /// too many connections (53300).
    pub fn is_unavailable(&self) -> bool {
        let StoreError::Database(err) = self else {
            return matches!(self, StoreError::WriterStopped(_));
        };
        match err {
            sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::WorkerCrashed => true,
            sqlx::Error::Database(db) => db.code().is_some_and(|code| {
                code.starts_with("08") || matches!(&*code, "57P01" | "57P02" | "57P03" | "53300")
            }),
            _ => false,
        }
    }

    /// Whether the storage refuses to take writes while reads still work:
    /// a disk full (SQLite's `SQLITE_FULL`, PostgreSQL's 53100) or a
    /// database made read-only (`SQLITE_READONLY`, any extended code of it;
    /// PostgreSQL's 25006, a standby), or its files refusing writes under
    /// it (SQLite's `SQLITE_IOERR_WRITE`, `_FSYNC` and `_TRUNCATE`: the
    /// write(2) of a file made immutable, or of a filesystem gone read-only,
    /// fails with EPERM or EROFS). Not the service's failure: a restart
    /// would not bring space or write access back, and its reads go on.
    pub fn is_write_refused(&self) -> bool {
        const SQLITE_READONLY: i64 = 8;
        const SQLITE_FULL: i64 = 13;
        const SQLITE_IOERR_WRITE: i64 = 10 | (3 << 8);
        const SQLITE_IOERR_FSYNC: i64 = 10 | (4 << 8);
        const SQLITE_IOERR_TRUNCATE: i64 = 10 | (6 << 8);
        let StoreError::Database(sqlx::Error::Database(db)) = self else {
            return false;
        };
        let Some(code) = db.code() else {
            return false;
        };
        if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
            return code.parse::<i64>().is_ok_and(|code| {
                matches!(code & 0xff, SQLITE_READONLY | SQLITE_FULL)
                    || matches!(
                        code,
                        SQLITE_IOERR_WRITE | SQLITE_IOERR_FSYNC | SQLITE_IOERR_TRUNCATE
                    )
            });
        }
        matches!(&*code, "53100" | "25006")
    }
}

/// Something a service depends on, checked by `/ready` and `/health`.
pub trait Dependency: Send + Sync + 'static {
    /// How it appears in `/health` (`sqlite:orders`, `postgres:orders`).
    fn name(&self) -> String;
    /// Answers how long a round trip took, or why it failed.
    fn ping(&self) -> BoxFuture<'_, Result<Duration, String>>;
    /// Sets the gauges sampled at scrape time (pool sizes).
    fn publish_gauges(&self) {}
    /// Closes its connections at shutdown, after the services have stopped.
    fn close(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
    /// Whether its service refuses calls while it is down (its database:
    /// see `supervision::outage`), or only leaves rotation through
    /// `/ready` (a notification provider the operator marked `required`).
    fn gates_calls(&self) -> bool {
        true
    }
}

/// A service's dependencies as its supervisor's outage probe
/// ([`supervision::Probe`]): back when every one of them answers.
pub struct DependencyProbe(pub Vec<Arc<dyn Dependency>>);

impl supervision::Probe for DependencyProbe {
    fn probe(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            for dependency in &self.0 {
                dependency.ping().await?;
            }
            Ok(())
        })
    }
}

/// A service's database, on either backend.
#[derive(Clone, Debug)]
pub enum Database {
    Sqlite(SqliteDb),
    Postgres(PgDb),
}

impl Database {
    /// Opens the service's database. SQLite opens and migrates at once (a
    /// failure there is a configuration problem). PostgreSQL connects lazily:
    /// the schema and migrations are set up by [`Database::ensure_ready`],
    /// which workers call when they start, so a database that is down at
    /// boot is a failed start that the supervisor retries, not a dead process.
    pub async fn open(
        service: &'static str,
        data_dir: &Path,
        settings: &StorageSettings,
        schema: &Schema,
    ) -> Result<Self, StoreError> {
        match settings.url.as_deref() {
            Some(url) => Ok(Database::Postgres(PgDb::connect_lazy(
                url, service, settings, *schema,
            )?)),
            None => Ok(Database::Sqlite(
                SqliteDb::open(data_dir, service, settings, schema).await?,
            )),
        }
    }

    /// Ready to serve: PostgreSQL's schema and migrations in place (once per
    /// process), and the database answering.
    pub async fn ensure_ready(&self) -> Result<(), StoreError> {
        match self {
            Database::Sqlite(_) => Ok(()),
            Database::Postgres(db) => db.ensure_ready().await,
        }
    }

    pub fn dependency(&self) -> Arc<dyn Dependency> {
        match self {
            Database::Sqlite(db) => Arc::new(db.clone()),
            Database::Postgres(db) => Arc::new(db.clone()),
        }
    }
}

/// Now, truncated to microseconds (PostgreSQL's precision), so that what a
/// service stores is exactly what it returned.
/// The span of one database operation of `service` when traces are on
/// (none otherwise): a client span named by its statement summary
/// (`INSERT orders`), `db.system` `sqlite` or `postgresql` (sqlx's
/// `Database::NAME`). sqlx makes no spans of its own, so the stores and the
/// group-commit writer make these.
pub fn db_span(
    service: &'static str,
    backend: &'static str,
    summary: &'static str,
) -> tracing::Span {
    if !supervision::trace::enabled() {
        return tracing::Span::none();
    }
    let system = if backend.eq_ignore_ascii_case("postgresql") {
        "postgresql"
    } else {
        "sqlite"
    };
    tracing::info_span!(
        target: supervision::trace::TARGET,
        "db",
        otel.name = summary,
        otel.kind = "client",
        db.system = system,
        db.system.name = system,
        db.namespace = service,
        db.query.summary = summary,
    )
}

impl Database {
    /// [`db_span`] for this database's backend.
    pub fn span(&self, service: &'static str, summary: &'static str) -> tracing::Span {
        match self {
            Database::Sqlite(_) => db_span(service, "sqlite", summary),
            Database::Postgres(_) => db_span(service, "postgresql", summary),
        }
    }
}

pub fn now_micros() -> time::OffsetDateTime {
    let now = time::OffsetDateTime::now_utc();
    now.replace_nanosecond(now.nanosecond() / 1_000 * 1_000)
        .unwrap_or(now)
}

/// Unix milliseconds: how the idempotency and event tables store their times
/// (the same integer on both backends).
pub fn unix_millis(t: time::OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

/// Records how long a pool took to hand out a connection.
pub(crate) fn record_acquire(service: &str, started: Instant) {
    metrics::histogram!("db_pool_acquire_duration_seconds", "service" => service.to_owned())
        .record(started.elapsed().as_secs_f64());
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
    use sqlx::SqlitePool;

    async fn sqlite(path: &Path, read_only: bool) -> SqlitePool {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(!read_only)
            .read_only(read_only);
        SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await
            .unwrap()
    }

    /// Writes until the database refuses (a few pages at most).
    async fn insert(pool: &SqlitePool) -> StoreError {
        for _ in 0..16 {
            if let Err(err) = sqlx::query("INSERT INTO t (v) VALUES (randomblob(4096))")
                .execute(pool)
                .await
            {
                return err.into();
            }
        }
        panic!("16 pages written: the write should have been refused");
    }

    #[tokio::test]
    async fn a_full_or_read_only_sqlite_refuses_writes_and_is_not_an_outage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let writable = sqlite(&path, false).await;
        sqlx::query("CREATE TABLE t (v BLOB)")
            .execute(&writable)
            .await
            .unwrap();

        // A database that may not grow is a full disk as SQLite sees it.
        sqlx::query("PRAGMA max_page_count = 4")
            .execute(&writable)
            .await
            .unwrap();
        let full = insert(&writable).await;
        assert!(full.is_write_refused(), "{full:?}");
        assert!(!full.is_unavailable(), "{full:?}");

        let read_only = sqlite(&path, true).await;
        let refused = insert(&read_only).await;
        assert!(refused.is_write_refused(), "{refused:?}");
        assert!(!refused.is_unavailable(), "{refused:?}");

        // A wrong statement is neither.
        let wrong = sqlx::query("INSERT INTO missing VALUES (1)")
            .execute(&writable)
            .await
            .map_err(StoreError::from)
            .unwrap_err();
        assert!(
            !wrong.is_write_refused() && !wrong.is_unavailable(),
            "{wrong:?}"
        );
    }
}
