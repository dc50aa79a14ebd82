//! A service's SQLite database: one file per service under the data dir, WAL
//! mode with `synchronous = NORMAL` and a busy timeout, every write through a
//! single writer connection (SQLite allows one writer at a time; queueing in
//! the pool is cheaper than lock retries) and reads through a reader pool.

use std::path::Path;
use std::str::FromStr;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use sqlx::pool::PoolConnection;
use sqlx::Sqlite;

use super::schema::{Backend, Fixup, Schema, DROP_RECORD, REWRITE_CHECKSUM};
use super::{record_acquire, Dependency, StorageSettings, StoreError};

#[derive(Clone, Debug)]
pub struct SqliteDb {
    service: String,
    writer: SqlitePool,
    reader: SqlitePool,
    read_connections: u32,
}

impl SqliteDb {
    /// Opens (creating if needed) `<data_dir>/<service>.db` and runs the
    /// service's migrations before any reader connects.
    pub async fn open(
        data_dir: &Path,
        service: &str,
        settings: &StorageSettings,
        schema: &Schema,
    ) -> Result<Self, StoreError> {
        let path = data_dir.join(format!("{service}.db"));
        create_private(data_dir, &path).map_err(|source| StoreError::DataDir {
            path: data_dir.display().to_string(),
            source,
        })?;
        let options = SqliteConnectOptions::from_str("sqlite:")?
            .filename(&path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(settings.busy_timeout)
            .foreign_keys(true)
            // Each connection keeps its own page cache (SQLite's default is
            // 2 MiB): readers × services of them make most of the RSS.
            .pragma(
                "cache_size",
                format!("-{}", settings.sqlite_cache_kib.max(64)),
            );
        // A local file cannot drop a connection the way a network can: skip the
        // ping sqlx sends before every acquire (a round trip to the
        // connection's thread; it halved read throughput in bench/).
        //
        // A connection, once opened, is kept (no idle timeout, no
        // lifetime): an embedded connection holds no server's resources,
        // only its descriptors and page cache, so closing idle ones gives
        // back little and churns descriptors (and opens) at every idle
        // timeout. Readers are opened as load first needs them, not all at
        // start: each costs about 0.7 MiB, 34 MiB of idle RSS for the
        // built-in services' 49 readers beyond the first.
        let writer = SqlitePoolOptions::new()
            .test_before_acquire(false)
            .max_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .acquire_timeout(settings.acquire_timeout)
            .after_release(|conn, _| Box::pin(async move { Ok(consistent(conn).await) }))
            .connect_with(options.clone())
            .await?;
        let migrator = schema.migrator(Backend::Sqlite).await?;
        bring_up_to_date(&writer, &schema.fixups(Backend::Sqlite, &migrator)).await?;
        migrator.run(&writer).await?;
        let reader = SqlitePoolOptions::new()
            .test_before_acquire(false)
            .max_connections(settings.read_connections.max(1))
            .idle_timeout(None)
            .max_lifetime(None)
            .acquire_timeout(settings.acquire_timeout)
            .connect_with(options.read_only(true))
            .await?;
        Ok(Self {
            service: service.to_owned(),
            writer,
            reader,
            read_connections: settings.read_connections.max(1),
        })
    }

    pub fn writer(&self) -> &SqlitePool {
        &self.writer
    }

    pub fn reader(&self) -> &SqlitePool {
        &self.reader
    }

    pub async fn read(&self) -> Result<PoolConnection<Sqlite>, StoreError> {
        let started = Instant::now();
        let conn = self.reader.acquire().await?;
        record_acquire(&self.service, started);
        Ok(conn)
    }

    pub async fn close(&self) {
        self.reader.close().await;
        self.writer.close().await;
    }
}

/// Whether a writer connection coming back to the pool is out of any
/// transaction, as it must be with no `Transaction` left holding it;
/// `false` closes it, and the pool opens a fresh one for the next write.
///
/// On a full disk (`SQLITE_FULL`) or an I/O error SQLite may roll the whole
/// transaction back by itself. sqlx does not know: the `ROLLBACK` it then
/// sends fails ("no transaction is active") and its transaction depth stays
/// at 1, so the next `begin` on this connection sends a `SAVEPOINT` instead
/// of `BEGIN`, and after one more failure a `RELEASE` that commits nothing
/// answers `Ok`: writes answered 201 stayed in a transaction that was never
/// committed, seen by this connection only and gone when it closed
/// (tests/chaos_process.rs, the full-disk case, lost 1,163 of 1,183 orders
/// so). A connection whose depth is not 0 here is in that state.
async fn consistent(conn: &mut sqlx::SqliteConnection) -> bool {
    use sqlx::Connection;
    // A dropped `Transaction` queues its rollback on the connection's
    // thread; the ping waits for it, so the depth read next is the one
    // after it.
    if conn.ping().await.is_err() {
        return false;
    }
    if conn.is_in_transaction() {
        tracing::warn!("a writer connection left a failed transaction open; reopening it");
        return false;
    }
    true
}

/// Creates the data dir (`0700`) and an empty database file (`0600`) if
/// they are missing, so that the database is never readable by others, not
/// even for the moment before a chmod; SQLite gives its `-wal` and `-shm`
/// files the database file's mode. An empty file is an empty database.
#[cfg(unix)]
fn create_private(data_dir: &Path, database: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    if !data_dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(data_dir)?;
    }
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(database)
    {
        Ok(_) => Ok(()),
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(err) => Err(err),
    }
}

#[cfg(not(unix))]
fn create_private(data_dir: &Path, _database: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(data_dir)
}

/// Updates what an earlier release recorded of migrations that changed
/// since (see [`super::schema`]); nothing on a new database.
async fn bring_up_to_date(writer: &SqlitePool, fixups: &[Fixup]) -> Result<(), StoreError> {
    let migrated: bool = sqlx::query_scalar(
        "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'",
    )
    .fetch_one(writer)
    .await?;
    if !migrated {
        return Ok(());
    }
    for fixup in fixups {
        match &fixup.to {
            Some(to) => sqlx::query(REWRITE_CHECKSUM).bind(to.as_slice()),
            None => sqlx::query(DROP_RECORD),
        }
        .bind(fixup.version)
        .bind(fixup.from.as_slice())
        .execute(writer)
        .await?;
    }
    Ok(())
}

impl Dependency for SqliteDb {
    fn name(&self) -> String {
        format!("sqlite:{}", self.service)
    }

    fn ping(&self) -> BoxFuture<'_, Result<Duration, String>> {
        Box::pin(async move {
            let started = Instant::now();
            sqlx::query("SELECT 1")
                .execute(&self.reader)
                .await
                .map_err(|e| e.to_string())?;
            Ok(started.elapsed())
        })
    }

    /// Closing the last connection checkpoints the WAL into the database file.
    fn close(&self) -> BoxFuture<'_, ()> {
        Box::pin(SqliteDb::close(self))
    }

    fn publish_gauges(&self) {
        let service = self.service.clone();
        let size = self.reader.size() + self.writer.size();
        let idle = (self.reader.num_idle() + self.writer.num_idle()) as u32;
        metrics::gauge!("db_pool_connections", "service" => service.clone(), "state" => "in_use")
            .set(f64::from(size.saturating_sub(idle)));
        metrics::gauge!("db_pool_connections", "service" => service.clone(), "state" => "idle")
            .set(f64::from(idle));
        metrics::gauge!("db_pool_max_connections", "service" => service)
            .set(f64::from(self.read_connections + 1));
    }
}
