//! A service's schema: the migrations it writes for its own tables, plus the
//! shared tables it uses (outbox, processed events, idempotency keys), which
//! are defined once, in `migrations/<backend>/` next to this file, and
//! created by the storage layer for every service that names them.
//!
//! Shared migrations are numbered in blocks far above any service's own
//! (`1001xxxxxx` the outbox, `1002xxxxxx` processed events, `1003xxxxxx`
//! idempotency keys), so both kinds share sqlx's bookkeeping table without
//! colliding, and a shared table can gain a migration later (the outbox's
//! `claimed_by`) that every service using it then gets.
//!
//! Databases made before the shared tables moved here hold the same tables,
//! created by the services' own migrations and recorded under those files'
//! earlier checksums. Each service lists them ([`Migrations::earlier`]);
//! before migrating, a recorded migration whose checksum is listed is brought
//! up to date (its checksum rewritten, or its record dropped where the file is
//! gone), and the shared migrations' `IF NOT EXISTS` leave the tables as they
//! are. A checksum that is neither current nor listed still fails the start:
//! that is a hand-edited migration, not an upgrade.

use futures::future::BoxFuture;
use sqlx::error::BoxDynError;
use sqlx::migrate::{MigrateError, Migration, MigrationSource, Migrator};

static SHARED_SQLITE: Migrator = sqlx::migrate!("src/storage/migrations/sqlite");
static SHARED_POSTGRES: Migrator = sqlx::migrate!("src/storage/migrations/postgres");

/// A table the storage layer defines once and creates for the services that use it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SharedTable {
    /// `outbox`: for a service that publishes events.
    Outbox,
    /// `processed_events`: for a service that consumes events.
    ProcessedEvents,
    /// `idempotency_keys`: for a service with idempotent POST routes.
    IdempotencyKeys,
}

impl SharedTable {
    /// Whether a shared migration belongs to this table (by its version's block).
    fn owns(self, version: i64) -> bool {
        let block = match self {
            SharedTable::Outbox => 1001,
            SharedTable::ProcessedEvents => 1002,
            SharedTable::IdempotencyKeys => 1003,
        };
        version / 1_000_000 == block
    }
}

/// A migration as an earlier release applied it: its version and the hex
/// SHA-384 of its file then (what sqlx recorded as its checksum).
#[derive(Clone, Copy, Debug)]
pub struct Earlier {
    pub version: i64,
    pub checksum: &'static str,
}

/// A service's own migrations on one backend.
#[derive(Clone, Copy, Debug)]
pub struct Migrations {
    pub own: &'static Migrator,
    /// Migrations whose files changed or went away since a release applied them.
    pub earlier: &'static [Earlier],
}

/// Everything a service's database needs, on either backend.
#[derive(Clone, Copy, Debug)]
pub struct Schema {
    pub sqlite: Migrations,
    pub postgres: Migrations,
    pub shared: &'static [SharedTable],
}

/// Which backend a migrator is for.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Backend {
    Sqlite,
    Postgres,
}

/// A recorded migration to bring up to date before migrating.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Fixup {
    pub version: i64,
    /// The checksum an earlier release recorded.
    pub from: Vec<u8>,
    /// The current checksum; `None` where the migration no longer exists.
    pub to: Option<Vec<u8>>,
}

impl Schema {
    /// The service's migrations and its shared tables' in one migrator.
    pub(crate) async fn migrator(&self, backend: Backend) -> Result<Migrator, MigrateError> {
        let (own, shared) = match backend {
            Backend::Sqlite => (self.sqlite.own, &SHARED_SQLITE),
            Backend::Postgres => (self.postgres.own, &SHARED_POSTGRES),
        };
        let mut migrations: Vec<Migration> = own
            .iter()
            .chain(
                shared
                    .iter()
                    .filter(|m| self.shared.iter().any(|table| table.owns(m.version))),
            )
            .cloned()
            .collect();
        migrations.sort_by_key(|m| m.version);
        Migrator::new(Resolved(migrations)).await
    }

    /// What to change in the bookkeeping of a database an earlier release
    /// migrated, before `migrator` runs on it.
    pub(crate) fn fixups(&self, backend: Backend, migrator: &Migrator) -> Vec<Fixup> {
        let earlier = match backend {
            Backend::Sqlite => self.sqlite.earlier,
            Backend::Postgres => self.postgres.earlier,
        };
        earlier
            .iter()
            .filter_map(|e| {
                let from = hex::decode(e.checksum).ok()?;
                let to = migrator
                    .iter()
                    .find(|m| m.version == e.version)
                    .map(|m| m.checksum.to_vec());
                Some(Fixup {
                    version: e.version,
                    from,
                    to,
                })
            })
            .collect()
    }
}

/// Brings a recorded migration's checksum up to date (`$1` the current one,
/// `$2` the version, `$3` the checksum an earlier release recorded).
pub(crate) const REWRITE_CHECKSUM: &str =
    "UPDATE _sqlx_migrations SET checksum = $1 WHERE version = $2 AND checksum = $3";

/// Drops the record of a migration that no longer exists (`$1` the version,
/// `$2` the checksum an earlier release recorded). Its tables stay: they are
/// a shared table's now.
pub(crate) const DROP_RECORD: &str =
    "DELETE FROM _sqlx_migrations WHERE version = $1 AND checksum = $2";

/// Migrations already resolved, for [`Migrator::new`].
#[derive(Debug)]
struct Resolved(Vec<Migration>);

impl<'s> MigrationSource<'s> for Resolved {
    fn resolve(self) -> BoxFuture<'s, Result<Vec<Migration>, BoxDynError>> {
        Box::pin(async move { Ok(self.0) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static NONE: Migrator = Migrator::DEFAULT;

    fn schema(shared: &'static [SharedTable]) -> Schema {
        let none = Migrations {
            own: &NONE,
            earlier: &[],
        };
        Schema {
            sqlite: none,
            postgres: none,
            shared,
        }
    }

    #[tokio::test]
    async fn a_service_gets_the_migrations_of_the_shared_tables_it_names() {
        let migrator = schema(&[SharedTable::Outbox])
            .migrator(Backend::Sqlite)
            .await
            .expect("migrator");
        let versions: Vec<i64> = migrator.iter().map(|m| m.version).collect();
        assert_eq!(versions, vec![1_001_000_001, 1_001_000_002]);
        let all = schema(&[
            SharedTable::IdempotencyKeys,
            SharedTable::Outbox,
            SharedTable::ProcessedEvents,
        ])
        .migrator(Backend::Postgres)
        .await
        .expect("migrator");
        let versions: Vec<i64> = all.iter().map(|m| m.version).collect();
        assert_eq!(
            versions,
            vec![1_001_000_001, 1_001_000_002, 1_002_000_001, 1_003_000_001]
        );
    }
}
