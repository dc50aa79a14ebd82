//! A service's PostgreSQL database: its own schema (named after the service)
//! in a shared database, every connection's `search_path` set to it, its
//! migrations (and sqlx's bookkeeping table) living there too.
//!
//! **Statements whose plan depends on the data are not prepared.** sqlx
//! prepares every statement once per connection, and after five runs
//! PostgreSQL may keep a *generic* plan for it, costed against the table as
//! it was then. A statement first run while its table is nearly empty, where
//! a sequential scan is cheapest, keeps that plan as the table grows
//! (nothing invalidates it where autovacuum's `ANALYZE` does not run). Two
//! did, in audit: the append's duplicate check (`… IN (SELECT unnest($1))`,
//! 48 ms a batch at 290,000 entries: appends fell from 1,779/s to ~470/s
//! as the log grew) and the export's keyset page (every page of an export a
//! scan of the whole log). Lookups by a batch's keys (audit's, billing's,
//! the outbox's) and audit's searches, export and `/verify` pages run
//! `persistent(false)`: planned with their values each time (a fraction of
//! a millisecond, once a batch or a page), they keep to the indexes
//! whatever the table's history.

use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{Connection, Postgres};
use tokio::sync::OnceCell;

use super::schema::{Backend, Fixup, Schema, DROP_RECORD, REWRITE_CHECKSUM};
use super::{record_acquire, Dependency, StorageSettings, StoreError};

/// How long a connection may sit idle before it is pinged on its way out of the pool.
const IDLE_BEFORE_PING: Duration = Duration::from_secs(1);

#[derive(Clone, Debug)]
pub struct PgDb {
    service: &'static str,
    pool: PgPool,
    schema: Schema,
    max_connections: u32,
    /// Set once the schema and migrations are in place.
    ready: Arc<OnceCell<()>>,
}

impl PgDb {
    /// Builds the pool without connecting: nothing is tried until first use.
    pub fn connect_lazy(
        url: &str,
        service: &'static str,
        settings: &StorageSettings,
        schema: Schema,
    ) -> Result<Self, StoreError> {
        let statement_timeout = settings.statement_timeout.as_millis().to_string();
        let options = PgConnectOptions::from_str(url)?
            .application_name(&format!("stageworks-{service}"))
            .options([
                ("search_path", service),
                ("statement_timeout", statement_timeout.as_str()),
            ]);
        let pool = PgPoolOptions::new()
            // sqlx pings every connection before handing it out: a round trip
            // per query, which cost a third of create throughput in bench/.
            // Only a connection that sat idle (through an outage, a restart of
            // the server) is checked; a busy one proves itself on every query.
            .test_before_acquire(false)
            .before_acquire(|conn, meta| {
                Box::pin(async move {
                    if meta.idle_for >= IDLE_BEFORE_PING {
                        conn.ping().await?;
                    }
                    Ok(true)
                })
            })
            .max_connections(settings.max_connections)
            .acquire_timeout(settings.acquire_timeout)
            .connect_lazy_with(options);
        Ok(Self {
            service,
            pool,
            schema,
            max_connections: settings.max_connections,
            ready: Arc::new(OnceCell::new()),
        })
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The pool writes go through (named as SQLite's writer, so statements
    /// written once for both read the same: see [`super::sql`]).
    pub fn writer(&self) -> &PgPool {
        &self.pool
    }

    /// A connection for reads (as SQLite's `read`), timed like [`PgDb::acquire`].
    pub async fn read(&self) -> Result<PoolConnection<Postgres>, StoreError> {
        self.acquire().await
    }

    pub async fn acquire(&self) -> Result<PoolConnection<Postgres>, StoreError> {
        let started = Instant::now();
        let conn = self.pool.acquire().await?;
        record_acquire(self.service, started);
        Ok(conn)
    }

    /// Creates the schema and runs the migrations, once; until that succeeds,
    /// every call tries again.
    pub async fn ensure_ready(&self) -> Result<(), StoreError> {
        self.ready
            .get_or_try_init(|| async {
                let mut tx = self.pool.begin().await?;
                // Replicas starting together: one creates the schema, the others wait.
                sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))")
                    .bind(format!("stageworks:schema:{}", self.service))
                    .execute(&mut *tx)
                    .await?;
                sqlx::query(&format!("CREATE SCHEMA IF NOT EXISTS \"{}\"", self.service))
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                // Migrations may rightly take longer than a request's statement.
                let mut conn = self.pool.acquire().await?;
                sqlx::query("SET statement_timeout = 0")
                    .execute(&mut *conn)
                    .await?;
                let migrator = self.schema.migrator(Backend::Postgres).await?;
                let fixups = self.schema.fixups(Backend::Postgres, &migrator);
                let migrated = match bring_up_to_date(&mut conn, &fixups).await {
                    Ok(()) => migrator
                        .run_direct(&mut *conn)
                        .await
                        .map_err(StoreError::from),
                    Err(e) => Err(e),
                };
                // Back to the connection's start-up value before it returns to the pool.
                sqlx::query("RESET statement_timeout")
                    .execute(&mut *conn)
                    .await?;
                migrated?;
                Ok::<(), StoreError>(())
            })
            .await?;
        Ok(())
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Updates what an earlier release recorded of migrations that changed
/// since (see [`super::schema`]); nothing on a new schema.
async fn bring_up_to_date(
    conn: &mut PoolConnection<Postgres>,
    fixups: &[Fixup],
) -> Result<(), StoreError> {
    let migrated: bool = sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
        .fetch_one(&mut **conn)
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
        .execute(&mut **conn)
        .await?;
    }
    Ok(())
}

/// How long a health check waits for a connection (the pool's own acquire
/// timeout is longer, and would make `/ready` slow while the database is down).
const PING_ACQUIRE: Duration = Duration::from_secs(1);

impl Dependency for PgDb {
    fn name(&self) -> String {
        format!("postgres:{}", self.service)
    }

    fn ping(&self) -> BoxFuture<'_, Result<Duration, String>> {
        Box::pin(async move {
            let started = Instant::now();
            let mut conn = tokio::time::timeout(PING_ACQUIRE, self.pool.acquire())
                .await
                .map_err(|_| "no connection within 1s".to_owned())?
                .map_err(|e| e.to_string())?;
            sqlx::query("SELECT 1")
                .execute(&mut *conn)
                .await
                .map_err(|e| e.to_string())?;
            Ok(started.elapsed())
        })
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        Box::pin(self.pool.close())
    }

    fn publish_gauges(&self) {
        let service = self.service.to_owned();
        let size = self.pool.size();
        let idle = self.pool.num_idle() as u32;
        metrics::gauge!("db_pool_connections", "service" => service.clone(), "state" => "in_use")
            .set(f64::from(size.saturating_sub(idle)));
        metrics::gauge!("db_pool_connections", "service" => service.clone(), "state" => "idle")
            .set(f64::from(idle));
        metrics::gauge!("db_pool_max_connections", "service" => service)
            .set(f64::from(self.max_connections));
    }
}
