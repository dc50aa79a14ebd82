//! A database made by an earlier release still opens and migrates. The
//! fixtures are the services' migrations as they were before the shared
//! tables (outbox, processed events, idempotency keys) moved from each
//! service's migrations to the storage layer: each test builds the services'
//! databases with them, starts the current app on those databases and uses
//! every shared table through the API.

mod common;

use std::path::Path;
use std::str::FromStr;

use reqwest::Method;
use serde_json::{json, Value};
use sqlx::migrate::Migrator;
use sqlx::{Connection, Executor};

use common::*;

const FIXTURES: &str = "tests/fixtures/schema-before-shared-tables";
const SERVICES: [&str; 3] = ["auth", "orders", "billing"];

/// What the orders database records once the current version migrated it:
/// its own migration, the retired 0002 gone, the shared tables' in their blocks.
const ORDERS_VERSIONS: [i64; 5] = [
    1,
    1_001_000_001,
    1_001_000_002,
    1_002_000_001,
    1_003_000_001,
];

async fn old_migrator(service: &str, backend: &str) -> Migrator {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(FIXTURES)
        .join(service)
        .join(backend);
    Migrator::new(dir.as_path())
        .await
        .expect("fixture migrations")
}

/// Each service's SQLite file, made by the earlier migrations.
async fn make_old_sqlite(data: &Path) {
    for service in SERVICES {
        let options = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(data.join(format!("{service}.db")))
            .create_if_missing(true)
            .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal);
        let mut conn = sqlx::SqliteConnection::connect_with(&options)
            .await
            .expect("open the old database");
        old_migrator(service, "sqlite")
            .await
            .run_direct(&mut conn)
            .await
            .expect("earlier migrations");
        conn.close().await.expect("close");
    }
}

/// Each service's PostgreSQL schema, made by the earlier migrations.
async fn make_old_postgres(url: &str) {
    for service in SERVICES {
        let options = sqlx::postgres::PgConnectOptions::from_str(url)
            .expect("test URL")
            .options([("search_path", service)]);
        let mut conn = sqlx::PgConnection::connect_with(&options)
            .await
            .expect("connect");
        conn.execute(format!("CREATE SCHEMA \"{service}\"").as_str())
            .await
            .expect("create schema");
        old_migrator(service, "postgres")
            .await
            .run_direct(&mut conn)
            .await
            .expect("earlier migrations");
        conn.close().await.expect("close");
    }
}

async fn recorded_versions(app: &TestApp, service: &str) -> Vec<i64> {
    let query = "SELECT version FROM _sqlx_migrations WHERE success ORDER BY version";
    match &app.database {
        Some(database) => {
            let options = sqlx::postgres::PgConnectOptions::from_str(&database.url)
                .expect("test URL")
                .options([("search_path", service)]);
            let mut conn = sqlx::PgConnection::connect_with(&options)
                .await
                .expect("connect");
            sqlx::query_scalar(query)
                .fetch_all(&mut conn)
                .await
                .expect("versions")
        }
        None => {
            let options = sqlx::sqlite::SqliteConnectOptions::new()
                .filename(app.data.path().join(format!("{service}.db")))
                .read_only(true);
            let mut conn = sqlx::SqliteConnection::connect_with(&options)
                .await
                .expect("open");
            sqlx::query_scalar(query)
                .fetch_all(&mut conn)
                .await
                .expect("versions")
        }
    }
}

#[tokio::test]
async fn a_database_made_by_the_earlier_release_opens_migrates_and_serves() {
    let data = tempfile::tempdir().expect("temp dir");
    let mut config = test_config(&data);
    let database = match test_database_url() {
        Some(admin_url) => {
            let database = TestDatabase::create(&admin_url).await;
            make_old_postgres(&database.url).await;
            config.database.url = database.url.clone();
            Some(database)
        }
        None => {
            make_old_sqlite(data.path()).await;
            None
        }
    };
    if let Some(redis) = test_redis_url() {
        config.redis.url = redis;
    }
    // Starting at all means the earlier checksums were recognised (sqlx
    // refuses a changed migration) and the shared tables were accepted as
    // they are; signing the test users in used auth's outbox.
    let app = spawn_app_in(config, data, database).await;

    // Idempotency keys, the outbox, billing's processed events and outbox,
    // orders' processed events: one order through to paid.
    let create = app
        .as_user(Method::POST, "/api/v1/orders", ALICE)
        .header("idempotency-key", "upgrade-1")
        .json(&json!({"amount": 1500, "currency": "EUR"}))
        .send()
        .await
        .expect("create");
    assert_eq!(create.status(), 201);
    let order: Value = create.json().await.expect("order");
    let replay: Value = app
        .as_user(Method::POST, "/api/v1/orders", ALICE)
        .header("idempotency-key", "upgrade-1")
        .json(&json!({"amount": 1500, "currency": "EUR"}))
        .send()
        .await
        .expect("replay")
        .json()
        .await
        .expect("replayed order");
    assert_eq!(
        replay["id"], order["id"],
        "the key replays the first answer"
    );
    let order_id = order["id"].as_str().expect("order id");
    let invoice = app
        .eventually(
            &format!("/api/v1/invoices/by-order/{order_id}"),
            ALICE,
            |_| true,
        )
        .await;
    let paid = app
        .as_user(
            Method::POST,
            &format!(
                "/api/v1/invoices/{}/pay",
                invoice["id"].as_str().expect("id")
            ),
            ALICE,
        )
        .send()
        .await
        .expect("pay");
    assert_eq!(paid.status(), 200);
    app.eventually(&format!("/api/v1/orders/{order_id}"), ALICE, |o| {
        o["status"] == "paid"
    })
    .await;

    assert_eq!(recorded_versions(&app, "orders").await, ORDERS_VERSIONS);
    assert_eq!(
        recorded_versions(&app, "billing").await,
        [1, 2, 1_001_000_001, 1_001_000_002, 1_002_000_001]
    );
    assert_eq!(
        recorded_versions(&app, "auth").await,
        [1, 1_001_000_001, 1_001_000_002, 1_003_000_001]
    );
}

#[tokio::test]
async fn a_new_database_records_the_same_versions_as_an_upgraded_one() {
    let app = spawn_app().await;
    assert_eq!(recorded_versions(&app, "orders").await, ORDERS_VERSIONS);
}
