//! What the store tests share: a temporary SQLite directory or a PostgreSQL
//! database of the test's own, cleaned up when its [`Guard`] is dropped.
//!
//! PostgreSQL is `STAGEWORKS_TEST_DATABASE_URL`, or the machine's server at
//! 127.0.0.1:5432 (database `test`) when that is not set.

use actors::storage::StorageSettings;
use sqlx::Connection;
use tempfile::TempDir;
use uuid::Uuid;

/// What a test's store needs kept alive, and cleaned up after it.
pub enum Guard {
    Sqlite(#[allow(dead_code)] TempDir),
    /// A database made for one test, dropped when this is dropped.
    Postgres {
        admin_url: String,
        name: String,
    },
}

impl Drop for Guard {
    fn drop(&mut self) {
        let Guard::Postgres { admin_url, name } = self else {
            return;
        };
        let (admin_url, database) = (admin_url.clone(), name.clone());
        // Drop runs inside the test's runtime, which must not be blocked on:
        // a thread of its own with a runtime of its own.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async {
                let mut admin = sqlx::postgres::PgConnection::connect(&admin_url).await?;
                sqlx::query(&format!(
                    "DROP DATABASE IF EXISTS \"{database}\" WITH (FORCE)"
                ))
                .execute(&mut admin)
                .await?;
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("warning: could not drop test database {name}");
        }
    }
}

/// A temporary directory for a SQLite store.
pub fn sqlite_dir() -> (std::path::PathBuf, Guard) {
    let dir = tempfile::tempdir().expect("temp dir");
    (dir.path().to_owned(), Guard::Sqlite(dir))
}

/// Creates a database for one test and answers the storage settings that
/// point at it.
pub async fn postgres_database() -> (StorageSettings, Guard) {
    let admin_url = std::env::var("STAGEWORKS_TEST_DATABASE_URL")
        .ok()
        .filter(|url| !url.is_empty())
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let name = format!("stageworks_test_{}", Uuid::now_v7().simple());
    let mut admin = sqlx::postgres::PgConnection::connect(&admin_url)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "the PostgreSQL store tests need a server at {admin_url} (set \
                 STAGEWORKS_TEST_DATABASE_URL to point elsewhere), and connecting failed: {e}"
            )
        });
    sqlx::query(&format!("CREATE DATABASE \"{name}\""))
        .execute(&mut admin)
        .await
        .expect("create the test database");
    let _ = admin.close().await;
    let settings = StorageSettings {
        url: Some(with_database(&admin_url, &name)),
        max_connections: 4,
        ..StorageSettings::default()
    };
    (settings, Guard::Postgres { admin_url, name })
}

/// The same server URL, naming another database.
fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let server = match base[scheme_end..].find('/') {
        Some(slash) => &base[..scheme_end + slash],
        None => base,
    };
    match query {
        Some(query) => format!("{server}/{database}?{query}"),
        None => format!("{server}/{database}"),
    }
}
