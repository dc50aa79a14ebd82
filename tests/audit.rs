//! The audit service over real HTTP, on SQLite or PostgreSQL: what the
//! other services do becomes entries (action, actor, resource, request id),
//! searched by every filter, exported as CSV, hash-chained and verified,
//! purged past the retention; admin actions are recorded; a redelivered
//! event is one entry; an export runs in bounded memory and stops when its
//! client leaves; replicas on one PostgreSQL keep one gap-free chain.

mod common;

use std::time::{Duration, Instant};

use actors::audit::model::NewEntry;
use actors::audit::store::AuditStore;
use common::{
    admin_token, expect_error, json_of, spawn_app_in, spawn_app_with, test_config, TestApp, ALICE,
};
use reqwest::Method;
use serde_json::{json, Value};

/// The admin every `as_admin` request is (see `common::admin_token`).
const ADMIN_ID: &str = "00000000-0000-0000-0000-00ad00000001";

fn request_id(what: &str) -> String {
    format!("{what}-{}", uuid::Uuid::now_v7().simple())
}

/// Searches as the admin; panics unless 200.
async fn search(app: &TestApp, query: &str) -> Value {
    let (status, body) =
        json_of(app.as_admin(Method::GET, &format!("/api/v1/audit/search?{query}"))).await;
    assert_eq!(status, 200, "{query}: {body}");
    body
}

/// Polls a search until it has at least `n` entries.
async fn search_until(app: &TestApp, query: &str, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let found = search(app, query).await;
        let data = found["data"].as_array().unwrap().clone();
        if data.len() >= n {
            return data;
        }
        assert!(Instant::now() < deadline, "{query}: only {found}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn post(app: &TestApp, body: Value) -> Value {
    let (status, entry) = json_of(app.as_admin(Method::POST, "/api/v1/audit").json(&body)).await;
    assert_eq!(status, 201, "{entry}");
    entry
}

async fn verify(app: &TestApp) -> Value {
    let (status, verified) = json_of(app.as_admin(Method::GET, "/api/v1/audit/verify")).await;
    assert_eq!(status, 200, "{verified}");
    verified
}

/// The one entry of `action` caused by `request`.
async fn entry_of(app: &TestApp, request: &str, action: &str) -> Value {
    let found = search_until(app, &format!("request_id={request}&action={action}"), 1).await;
    assert_eq!(found.len(), 1, "{found:?}");
    found[0].clone()
}

#[tokio::test]
async fn orders_payments_logins_and_cancellations_become_entries() {
    let app = spawn_app_with(|_| {}).await;
    let alice = app.user_id(ALICE).to_owned();

    let create = request_id("create");
    let (status, order) = json_of(
        app.as_user(Method::POST, "/api/v1/orders", ALICE)
            .header("x-request-id", &create)
            .json(&json!({"amount": 1200})),
    )
    .await;
    assert_eq!(status, 201, "{order}");
    let order_id = order["id"].as_str().unwrap();
    let created = entry_of(&app, &create, "order.created").await;
    assert_eq!(created["actor_id"], alice);
    assert_eq!(created["resource_type"], "order");
    assert_eq!(created["resource_id"], order_id);
    assert_eq!(created["data"]["amount"], 1200);
    // Billing's invoice follows from the same request.
    let invoiced = entry_of(&app, &create, "invoice.created").await;
    assert_eq!(invoiced["resource_type"], "invoice");
    assert_eq!(invoiced["actor_id"], alice);
    let invoice_id = invoiced["resource_id"].as_str().unwrap().to_owned();

    let pay = request_id("pay");
    let (status, paid) = json_of(
        app.as_user(
            Method::POST,
            &format!("/api/v1/invoices/{invoice_id}/pay"),
            ALICE,
        )
        .header("x-request-id", &pay),
    )
    .await;
    assert_eq!(status, 200, "{paid}");
    let paid = entry_of(&app, &pay, "invoice.paid").await;
    assert_eq!(paid["resource_id"], invoice_id);
    assert_eq!(paid["actor_id"], alice);

    // A paid order cannot be cancelled: another one is.
    let (status, other) = json_of(
        app.as_user(Method::POST, "/api/v1/orders", ALICE)
            .json(&json!({"amount": 300})),
    )
    .await;
    assert_eq!(status, 201, "{other}");
    let order_id = other["id"].as_str().unwrap();
    let cancel = request_id("cancel");
    let (status, cancelled) = json_of(
        app.as_user(
            Method::POST,
            &format!("/api/v1/orders/{order_id}/cancel"),
            ALICE,
        )
        .header("x-request-id", &cancel),
    )
    .await;
    assert_eq!(status, 200, "{cancelled}");
    let cancelled = entry_of(&app, &cancel, "order.cancelled").await;
    assert_eq!(cancelled["resource_id"], order_id);
    assert_eq!(cancelled["actor_id"], alice);

    let login = request_id("login");
    let (status, _) = json_of(
        app.client
            .post(app.url("/api/v1/auth/login"))
            .header("x-request-id", &login)
            .json(&json!({"email": ALICE, "password": common::PASSWORD})),
    )
    .await;
    assert_eq!(status, 200);
    let logged_in = entry_of(&app, &login, "user.logged_in").await;
    assert_eq!(logged_in["resource_type"], "user");
    assert_eq!(logged_in["resource_id"], alice);
    assert_eq!(logged_in["actor_id"], alice);

    // Each entry is read back by its id; an unknown id is a 404 naming it.
    let id = created["id"].as_str().unwrap();
    let (status, got) = json_of(app.as_admin(Method::GET, &format!("/api/v1/audit/{id}"))).await;
    assert_eq!((status, &got), (200, &created));
    let unknown = uuid::Uuid::now_v7();
    let missing = app
        .as_admin(Method::GET, &format!("/api/v1/audit/{unknown}"))
        .send()
        .await
        .unwrap();
    let body = expect_error(missing, 404, "NOT_FOUND").await;
    assert!(body.to_string().contains(&unknown.to_string()), "{body}");
    // Only admins read the log.
    let forbidden = app
        .as_user(Method::GET, "/api/v1/audit/search", ALICE)
        .send()
        .await
        .unwrap();
    expect_error(forbidden, 403, "FORBIDDEN").await;
    assert_eq!(verify(&app).await["valid"], true);
}

#[tokio::test]
async fn every_filter_and_pagination_answer_and_malformed_filters_are_named() {
    let app = spawn_app_with(|_| {}).await;
    let kind = format!("widget{}", uuid::Uuid::now_v7().simple());
    let request = request_id("filters");
    let mut posted = Vec::new();
    for (n, action) in ["widget.made", "widget.sold", "gadget.made"]
        .iter()
        .enumerate()
    {
        let entry = app
            .as_admin(Method::POST, "/api/v1/audit")
            .header("x-request-id", &request)
            .json(
                &json!({"action": action, "resource_type": kind, "resource_id": format!("w-{n}"),
                          "data": {"note": format!("Colour BLUE number {n}")}}),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(entry.status(), 201);
        posted.push(entry.json::<Value>().await.unwrap());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let ids = |found: &Value| -> Vec<String> {
        found["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let id = |n: usize| posted[n]["id"].as_str().unwrap().to_owned();
    let of_kind = format!("resource_type={kind}");

    // Newest first; the posted entry names the admin and the request.
    let all = search(&app, &of_kind).await;
    assert_eq!(ids(&all), [id(2), id(1), id(0)]);
    assert_eq!(all["pagination"]["total"], 3);
    assert_eq!(posted[0]["actor_id"], ADMIN_ID);
    assert_eq!(posted[0]["request_id"], request);
    for (query, expected) in [
        (format!("{of_kind}&action=widget.sold"), vec![id(1)]),
        (format!("{of_kind}&action=widget.*"), vec![id(1), id(0)]),
        (format!("{of_kind}&resource_id=w-2"), vec![id(2)]),
        (
            format!("{of_kind}&actor_id={ADMIN_ID}"),
            vec![id(2), id(1), id(0)],
        ),
        (
            format!("{of_kind}&actor_id={}", uuid::Uuid::now_v7()),
            vec![],
        ),
        (format!("request_id={request}"), vec![id(2), id(1), id(0)]),
        (
            format!("{of_kind}&q=colour%20blue%20number%201"),
            vec![id(1)],
        ),
        (format!("{of_kind}&q=%25"), vec![]),
        (
            format!(
                "{of_kind}&from={}&to={}",
                posted[1]["occurred_at"]
                    .as_str()
                    .unwrap()
                    .replace('+', "%2B"),
                posted[2]["occurred_at"]
                    .as_str()
                    .unwrap()
                    .replace('+', "%2B")
            ),
            vec![id(1)],
        ),
        (format!("{of_kind}&limit=2"), vec![id(2), id(1)]),
        (format!("{of_kind}&limit=2&page=2"), vec![id(0)]),
    ] {
        assert_eq!(ids(&search(&app, &query).await), expected, "{query}");
    }
    let paged = search(&app, &format!("{of_kind}&limit=2&page=2")).await;
    assert_eq!(
        paged["pagination"],
        json!({"page": 2, "limit": 2, "total": 3, "pages": 2})
    );

    for (query, field) in [
        ("action=Order", "action"),
        ("action=*", "action"),
        ("actor_id=nobody", "actor_id"),
        ("resource_type=Not%20A%20Word", "resource_type"),
        ("from=yesterday", "from"),
        ("to=2026-13-01", "to"),
        ("limit=0", "limit"),
        ("page=0", "page"),
    ] {
        let response = app
            .as_admin(Method::GET, &format!("/api/v1/audit/search?{query}"))
            .send()
            .await
            .unwrap();
        let body = expect_error(response, 422, "VALIDATION_ERROR").await;
        assert_eq!(
            body["error"]["errors"][0]["field"], field,
            "{query}: {body}"
        );
    }
    // The export names them too.
    let response = app
        .as_admin(Method::GET, "/api/v1/audit/export.csv?from=soon")
        .send()
        .await
        .unwrap();
    let body = expect_error(response, 422, "VALIDATION_ERROR").await;
    assert_eq!(body["error"]["errors"][0]["field"], "from");
}

#[tokio::test]
async fn a_post_is_validated_and_honours_its_idempotency_key() {
    let app = spawn_app_with(|_| {}).await;
    let response = app
        .as_admin(Method::POST, "/api/v1/audit")
        .json(&json!({"action": "nodot", "resource_type": "x"}))
        .send()
        .await
        .unwrap();
    let body = expect_error(response, 422, "VALIDATION_ERROR").await;
    assert_eq!(body["error"]["errors"][0]["field"], "action");

    let key = request_id("key");
    let body =
        json!({"action": "report.exported", "resource_type": "report", "resource_id": "r-1"});
    let send = |body: Value| {
        app.as_admin(Method::POST, "/api/v1/audit")
            .header("idempotency-key", &key)
            .json(&body)
            .send()
    };
    let first = send(body.clone()).await.unwrap();
    assert_eq!(first.status(), 201);
    let first: Value = first.json().await.unwrap();
    let again = send(body.clone()).await.unwrap();
    assert_eq!(again.status(), 201);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(again.json::<Value>().await.unwrap(), first);
    let found = search(&app, "resource_type=report&resource_id=r-1").await;
    assert_eq!(found["pagination"]["total"], 1, "one entry: {found}");
    let other = send(json!({"action": "report.deleted", "resource_type": "report"}))
        .await
        .unwrap();
    let error = expect_error(other, 422, "VALIDATION_ERROR").await;
    assert_eq!(error["error"]["errors"][0]["field"], "idempotency-key");
}

#[tokio::test]
async fn the_csv_export_round_trips_to_the_search_and_defuses_formulas() {
    let app = spawn_app_with(|_| {}).await;
    let kind = format!("sheet{}", uuid::Uuid::now_v7().simple());
    for (n, resource) in ["=HYPERLINK(\"x\")", "plain, \"quoted\"\nline", "-1", "@me"]
        .iter()
        .enumerate()
    {
        post(
            &app,
            json!({"action": "sheet.cell", "resource_type": kind, "resource_id": resource,
                   "data": {"n": n, "text": "a,b \"c\""}}),
        )
        .await;
    }
    let response = app
        .as_admin(
            Method::GET,
            &format!("/api/v1/audit/export.csv?resource_type={kind}"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "text/csv; charset=utf-8"
    );
    let text = response.text().await.unwrap();
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    assert_eq!(
        reader.headers().unwrap(),
        vec![
            "id",
            "seq",
            "occurred_at",
            "action",
            "actor_id",
            "resource_type",
            "resource_id",
            "request_id",
            "data"
        ]
    );
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    let mut searched = search(&app, &format!("resource_type={kind}")).await["data"]
        .as_array()
        .unwrap()
        .clone();
    // The export is oldest first (by seq), the search newest first.
    searched.reverse();
    assert_eq!(rows.len(), 4);
    let defuse = |s: &str| {
        if s.starts_with(['=', '+', '-', '@']) {
            format!("'{s}")
        } else {
            s.to_owned()
        }
    };
    for (row, entry) in rows.iter().zip(&searched) {
        let text = |v: &Value| v.as_str().unwrap_or("").to_owned();
        assert_eq!(&row[0], entry["id"].as_str().unwrap());
        assert_eq!(row[1], entry["seq"].to_string());
        assert_eq!(&row[2], entry["occurred_at"].as_str().unwrap());
        assert_eq!(&row[3], "sheet.cell");
        assert_eq!(row[4], text(&entry["actor_id"]));
        assert_eq!(&row[5], kind);
        assert_eq!(row[6], defuse(&text(&entry["resource_id"])));
        assert_eq!(row[7], text(&entry["request_id"]));
        let data: Value = serde_json::from_str(&row[8]).unwrap();
        assert_eq!(data, entry["data"]);
        assert!(
            !row[8].contains(' ') || row[8].contains("a,b"),
            "compact JSON: {}",
            &row[8]
        );
    }
    assert_eq!(&rows[0][6], "'=HYPERLINK(\"x\")");
    assert_eq!(&rows[2][6], "'-1");
    assert_eq!(&rows[3][6], "'@me");
}

/// A connection to the audit database: its SQLite file, or the schema
/// `audit` of the test database.
enum AuditDb {
    Sqlite(sqlx::SqliteConnection),
    Postgres(sqlx::PgConnection),
}

impl AuditDb {
    async fn open(app: &TestApp, service: &str) -> Self {
        use sqlx::Connection as _;
        match &app.database {
            Some(database) => {
                let mut conn = sqlx::PgConnection::connect(&database.url).await.unwrap();
                sqlx::query(&format!("SET search_path TO {service}"))
                    .execute(&mut conn)
                    .await
                    .unwrap();
                AuditDb::Postgres(conn)
            }
            None => {
                let options = sqlx::sqlite::SqliteConnectOptions::new()
                    .filename(app.data.path().join(format!("{service}.db")))
                    .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
                    .busy_timeout(Duration::from_secs(5));
                AuditDb::Sqlite(
                    sqlx::SqliteConnection::connect_with(&options)
                        .await
                        .unwrap(),
                )
            }
        }
    }

    async fn execute(&mut self, statement: &str) -> u64 {
        self.try_execute(statement).await.unwrap()
    }

    async fn try_execute(&mut self, statement: &str) -> Result<u64, sqlx::Error> {
        Ok(match self {
            AuditDb::Sqlite(conn) => sqlx::raw_sql(statement)
                .execute(conn)
                .await?
                .rows_affected(),
            AuditDb::Postgres(conn) => sqlx::raw_sql(statement)
                .execute(conn)
                .await?
                .rows_affected(),
        })
    }

    async fn count(&mut self, statement: &str) -> i64 {
        match self {
            AuditDb::Sqlite(conn) => sqlx::query_scalar(statement).fetch_one(conn).await.unwrap(),
            AuditDb::Postgres(conn) => sqlx::query_scalar(statement).fetch_one(conn).await.unwrap(),
        }
    }
}

#[tokio::test]
async fn a_row_changed_in_the_database_is_found_by_verify_at_its_seq() {
    let app = spawn_app_with(|_| {}).await;
    let kind = format!("ledger{}", uuid::Uuid::now_v7().simple());
    let mut seqs = Vec::new();
    for n in 0..4 {
        let entry = post(
            &app,
            json!({"action": "ledger.line", "resource_type": kind, "data": {"amount": n}}),
        )
        .await;
        seqs.push(entry["seq"].as_i64().unwrap());
    }
    let before = verify(&app).await;
    assert_eq!(before["valid"], true, "{before}");
    assert!(before["entries"].as_u64().unwrap() >= 4, "{before}");

    // Entries are never updated: the database refuses it...
    let target = seqs[2];
    let mut db = AuditDb::open(&app, "audit").await;
    let tamper =
        format!("UPDATE audit_entries SET data = '{{\"amount\":1000}}' WHERE seq = {target}");
    assert!(
        db.try_execute(&tamper).await.is_err(),
        "the trigger refuses updates"
    );
    // ...and one who gets past it (dropping the trigger) is found out.
    let drop_trigger = match db {
        AuditDb::Sqlite(_) => "DROP TRIGGER audit_entries_are_never_updated",
        AuditDb::Postgres(_) => "DROP TRIGGER audit_entries_are_never_updated ON audit_entries",
    };
    db.execute(drop_trigger).await;
    let changed = db.execute(&tamper).await;
    assert_eq!(changed, 1);
    let after = verify(&app).await;
    assert_eq!(after["valid"], false, "{after}");
    assert_eq!(after["first_bad_seq"], target, "{after}");
}

#[tokio::test]
async fn a_redelivered_event_is_one_entry() {
    let mut app = spawn_app_with(|_| {}).await;
    let registered = search_until(&app, "action=user.registered", 2).await;
    assert_eq!(registered.len(), 2, "{registered:?}");
    // The process stops; auth's outbox is made to hand its registrations
    // on again (as if it died before marking them published); the next
    // start delivers them again, with their ids.
    app.stop().await;
    let republished = AuditDb::open(&app, "auth")
        .await
        .execute(
            "UPDATE outbox SET published_at = NULL, claimed_until = 0 \
             WHERE topic = 'user.registered'",
        )
        .await;
    assert_eq!(republished, 2);
    let data = std::mem::replace(&mut app.data, tempfile::tempdir().unwrap());
    let database = app.database.take();
    let mut config = test_config(&data);
    if let Some(database) = &database {
        config.database.url = database.url.clone();
    }
    let app = spawn_app_in(config, data, database).await;
    // Published again, then applied: audit has nothing pending.
    let mut auth = AuditDb::open(&app, "auth").await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let unpublished = auth
            .count("SELECT COUNT(*) FROM outbox WHERE published_at IS NULL")
            .await;
        let audit = app.events_subscriber("audit").await;
        if unpublished == 0 && audit["pending"].as_u64().unwrap_or(0) == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the registrations were never delivered again: {audit}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let found = search(&app, "action=user.registered").await;
    assert_eq!(found["pagination"]["total"], 2, "{found}");
    assert_eq!(verify(&app).await["valid"], true);
}

#[tokio::test]
async fn entries_past_the_retention_are_purged_and_the_chain_still_verifies() {
    let app = spawn_app_with(|config| {
        let section = config.service_mut("audit");
        section.set("retention", "1s").unwrap();
        section.set("purge_every", "100ms").unwrap();
    })
    .await;
    let old = post(
        &app,
        json!({"action": "old.thing", "resource_type": "thing"}),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let young = post(
        &app,
        json!({"action": "young.thing", "resource_type": "thing"}),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let old_id = old["id"].as_str().unwrap();
    loop {
        let response = app
            .as_admin(Method::GET, &format!("/api/v1/audit/{old_id}"))
            .send()
            .await
            .unwrap();
        if response.status() == 404 {
            break;
        }
        assert!(Instant::now() < deadline, "the old entry was never purged");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let young_id = young["id"].as_str().unwrap();
    let (status, _) =
        json_of(app.as_admin(Method::GET, &format!("/api/v1/audit/{young_id}"))).await;
    assert_eq!(status, 200, "the young entry is kept (for now)");
    let verified = verify(&app).await;
    assert_eq!(verified["valid"], true, "{verified}");
}

#[tokio::test]
async fn admin_actions_are_recorded_with_the_admins_request_id() {
    let app = spawn_app_with(|_| {}).await;
    let opened = request_id("open");
    let response = app
        .admin_request(Method::POST, "/admin/circuits/billing/open")
        .header("x-request-id", &opened)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let closed = request_id("close");
    let response = app
        .admin_request(Method::POST, "/admin/circuits/billing/close")
        .header("x-request-id", &closed)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let restarted = request_id("restart");
    let response = app
        .admin_request(Method::POST, "/admin/actors/orders/restart")
        .header("x-request-id", &restarted)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);

    // A dead letter (billing poisoned for Alice), then its replay.
    let poison = format!("/admin/faults/poison/billing/{}", app.user_id(ALICE));
    let marked = app
        .admin_request(Method::PUT, &poison)
        .send()
        .await
        .unwrap();
    assert_eq!(marked.status(), 204);
    let order: Value = app
        .create_order(ALICE, json!({"amount": 4321}))
        .await
        .json()
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let letter = loop {
        let letters: Value = app
            .admin_get("/admin/events/dead-letters")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let found = letters["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["event"]["data"]["id"] == order["id"])
            .cloned();
        if let Some(letter) = found {
            break letter;
        }
        assert!(Instant::now() < deadline, "no dead letter: {letters}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let cured = app
        .admin_request(Method::DELETE, &poison)
        .send()
        .await
        .unwrap();
    assert_eq!(cured.status(), 204);
    let letter_id = letter["id"].as_str().unwrap();
    let replayed = request_id("replay");
    let response = app
        .admin_request(
            Method::POST,
            &format!("/admin/events/dead-letters/{letter_id}/replay"),
        )
        .header("x-request-id", &replayed)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    let replay = entry_of(&app, &replayed, "admin.dead_letter_replayed").await;
    assert_eq!(replay["resource_type"], "dead_letter");
    assert_eq!(replay["resource_id"], letter_id);
    assert!(replay["actor_id"].is_null(), "{replay}");
    let open = entry_of(&app, &opened, "admin.circuit_opened").await;
    assert_eq!(open["resource_type"], "circuit");
    assert_eq!(open["resource_id"], "billing");
    let close = entry_of(&app, &closed, "admin.circuit_closed").await;
    assert_eq!(close["resource_id"], "billing");
    let restart = entry_of(&app, &restarted, "admin.actor_restarted").await;
    assert_eq!(restart["resource_type"], "actor");
    assert_eq!(restart["resource_id"], "orders");
    let all = search(&app, "action=admin.*").await;
    assert_eq!(all["pagination"]["total"], 4, "{all}");
}

/// Appends `n` entries of `kind` straight through the audit store (one
/// transaction per 5,000: the batched path events take), so a test has a
/// large log in seconds.
async fn seed(data: &std::path::Path, database_url: Option<String>, kind: &str, n: usize) {
    let settings = actors::storage::StorageSettings {
        url: database_url,
        ..Default::default()
    };
    let store = AuditStore::open(data, &settings, Duration::from_secs(60))
        .await
        .expect("the audit database opens");
    store
        .ensure_ready()
        .await
        .expect("the audit database is ready");
    let mut written = 0;
    while written < n {
        let chunk = (written..n.min(written + 5_000))
            .map(|i| NewEntry {
                id: uuid::Uuid::now_v7(),
                occurred_at: actors::storage::now_micros(),
                action: "seed.entry".into(),
                actor_id: None,
                resource_type: kind.into(),
                resource_id: Some(format!("r-{i}")),
                request_id: None,
                data: format!("{{\"n\":{i},\"pad\":\"{}\"}}", "x".repeat(100)),
            })
            .collect::<Vec<_>>();
        written += chunk.len();
        // On SQLite this is a second writer beside the app's: a chunk whose
        // snapshot the app's commit overtook is refused whole (busy), and
        // written again.
        let mut attempts = 0;
        while let Err(err) = store.record(chunk.clone()).await {
            attempts += 1;
            assert!(attempts < 20, "the seed is not written: {err}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test]
async fn a_client_leaving_mid_export_stops_it() {
    let app = spawn_app_with(|_| {}).await;
    let kind = format!("bulk{}", uuid::Uuid::now_v7().simple());
    seed(
        app.data.path(),
        app.database.as_ref().map(|d| d.url.clone()),
        &kind,
        60_000,
    )
    .await;
    let gone = |metrics: &str| {
        metrics
            .lines()
            .find(|l| l.starts_with("audit_exports_total{outcome=\"client_gone\"}"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let before = gone(&app.metrics().await);
    let started = Instant::now();
    let mut response = app
        .as_admin(
            Method::GET,
            &format!("/api/v1/audit/export.csv?resource_type={kind}"),
        )
        .send()
        .await
        .unwrap();
    let first = response.chunk().await.unwrap().expect("a first chunk");
    assert!(first.starts_with(b"id,seq,occurred_at"), "{first:?}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    drop(response);
    let deadline = Instant::now() + Duration::from_secs(15);
    while gone(&app.metrics().await) <= before {
        assert!(
            Instant::now() < deadline,
            "the export never noticed its client left"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The resident set of a process, in bytes.
fn rss_of(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

/// Sequential scans of `audit_entries` so far, as PostgreSQL's statistics
/// have them. A backend sends its counts at most once a second and, once
/// idle, within 10 s (`PGSTAT_IDLE_INTERVAL`): read after waiting that out,
/// the count includes every statement already run.
async fn settled_seq_scans(db: &mut AuditDb) -> i64 {
    tokio::time::sleep(Duration::from_secs(11)).await;
    db.count("SELECT seq_scan FROM pg_stat_user_tables WHERE relname = 'audit_entries'")
        .await
}

/// Appends, searches and exports keep to the indexes however the log grew
/// (`storage::postgres`, "Statements whose plan depends on the data are not
/// prepared"): prepared while the log was small, PostgreSQL kept generic
/// plans that scanned the whole table, and every append (its duplicate
/// check) took longer as the log grew.
#[tokio::test]
async fn appends_searches_and_exports_keep_to_the_indexes_as_the_log_grows() {
    let app = spawn_app_with(|_| {}).await;
    let Some(database) = &app.database else {
        eprintln!("skipped: plans cached by PostgreSQL (STAGEWORKS_TEST_DATABASE_URL)");
        return;
    };
    let kind = format!("growing{}", uuid::Uuid::now_v7().simple());
    let append = |n: usize| {
        post(
            &app,
            json!({"action": "ledger.line", "resource_type": kind, "data": {"n": n}}),
        )
    };
    let export_all = || async {
        let response = app
            .as_admin(Method::GET, "/api/v1/audit/export.csv")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        response.bytes().await.unwrap().len()
    };
    // On a small log, each statement runs past the five after which
    // PostgreSQL may settle on a plan, on every connection that runs it.
    for n in 0..60 {
        append(n).await;
        search(&app, &format!("resource_id=r-{n}")).await;
    }
    for _ in 0..12 {
        export_all().await;
    }
    seed(app.data.path(), Some(database.url.clone()), &kind, 60_000).await;
    let mut db = AuditDb::open(&app, "audit").await;
    let before = settled_seq_scans(&mut db).await;
    for n in 0..40 {
        append(n).await;
        let found = search(&app, &format!("resource_id=r-{n}")).await;
        assert_eq!(found["pagination"]["total"], 1, "{found}");
    }
    let bytes = export_all().await;
    let scans = settled_seq_scans(&mut db).await - before;
    assert_eq!(
        scans, 0,
        "40 appends, 40 searches and an export ({bytes} bytes) on a log of 60,000 entries \
         scanned it {scans} times"
    );
}

#[tokio::test]
async fn an_export_of_200_000_entries_streams_in_bounded_memory() {
    use common::binary;
    let data = tempfile::tempdir().unwrap();
    let database = match common::test_database_url() {
        Some(admin) => Some(common::TestDatabase::create(&admin).await),
        None => None,
    };
    let mut command = binary::command(data.path());
    command.env("STAGEWORKS__TOKENS__JWT_SECRET", common::JWT_SECRET);
    let server = binary::spawn(command, database.as_ref());
    binary::wait_ready(&server.addr).await;
    let kind = "bulk";
    seed(
        data.path(),
        database.as_ref().map(|d| d.url.clone()),
        kind,
        200_000,
    )
    .await;
    let pid = server.child.id();
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let url = format!(
        "http://{}/api/v1/audit/export.csv?resource_type={kind}",
        server.addr
    );
    // A first small export warms what any request allocates once.
    let warm = client
        .get(format!("{url}&resource_id=r-1"))
        .bearer_auth(admin_token())
        .send()
        .await
        .unwrap();
    assert_eq!(warm.status(), 200);
    warm.text().await.unwrap();
    let baseline = rss_of(pid);
    let started = Instant::now();
    let mut response = client
        .get(&url)
        .bearer_auth(admin_token())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let (mut lines, mut peak, mut first) = (0u64, baseline, None);
    while let Some(chunk) = response.chunk().await.unwrap() {
        first.get_or_insert_with(|| started.elapsed());
        lines += chunk.iter().filter(|b| **b == b'\n').count() as u64;
        peak = peak.max(rss_of(pid));
    }
    assert_eq!(lines, 200_001, "a header and every row");
    let growth = peak.saturating_sub(baseline);
    assert!(
        growth < 64 * 1024 * 1024,
        "RSS grew {} MiB exporting 200,000 rows",
        growth / (1024 * 1024)
    );
    let first = first.unwrap();
    assert!(
        first < Duration::from_millis(100),
        "first bytes after {first:?}"
    );
    eprintln!(
        "exported 200,000 rows in {:?}; first bytes after {first:?}; RSS {} MiB → peak {} MiB",
        started.elapsed(),
        baseline / (1024 * 1024),
        peak / (1024 * 1024)
    );
    drop(server);
}

#[tokio::test]
async fn replicas_posting_concurrently_keep_one_gap_free_chain() {
    use common::binary;
    let Some(admin) = common::test_database_url() else {
        eprintln!("skipped: replicas share a PostgreSQL database (STAGEWORKS_TEST_DATABASE_URL)");
        return;
    };
    let database = common::TestDatabase::create(&admin).await;
    let (one_dir, two_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let start = |dir: &std::path::Path| {
        let mut command = binary::command(dir);
        command
            .env("STAGEWORKS__TOKENS__JWT_SECRET", common::JWT_SECRET)
            // 200 posts from one address are a test, not a flood.
            .env("STAGEWORKS__RATE_LIMIT__ENABLED", "false");
        binary::spawn(command, Some(&database))
    };
    let one = start(one_dir.path());
    binary::wait_ready(&one.addr).await;
    let two = start(two_dir.path());
    binary::wait_ready(&two.addr).await;
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let kind = format!("race{}", uuid::Uuid::now_v7().simple());
    let posts = (0..200).map(|n| {
        let addr = if n % 2 == 0 { &one.addr } else { &two.addr };
        let request = client
            .post(format!("http://{addr}/api/v1/audit"))
            .bearer_auth(admin_token())
            .json(&json!({"action": "race.step", "resource_type": kind, "data": {"n": n}}));
        async move {
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), 201);
            response.json::<Value>().await.unwrap()["seq"]
                .as_i64()
                .unwrap()
        }
    });
    let mut seqs = futures::future::join_all(posts).await;
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!(seqs.len(), 200, "every seq is unique");
    let (status, verified) = json_of(
        client
            .get(format!("http://{}/api/v1/audit/verify", two.addr))
            .bearer_auth(admin_token()),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(verified["valid"], true, "{verified}");
    // Gap-free: the posts took seq 1 to 200, each once, and the chain
    // verified every one of them.
    assert_eq!(seqs, (1..=200).collect::<Vec<i64>>());
    assert_eq!(verified["entries"], 200, "{verified}");
}
