//! Test support: start the real app on port 0 with a temporary data dir and
//! talk to it over real HTTP.
//!
//! With `STAGEWORKS_TEST_DATABASE_URL` set (e.g.
//! `postgres://postgres@127.0.0.1:5432/test`), every app gets a database of
//! its own on that server, created for it and dropped afterwards, so the same
//! tests run on PostgreSQL; without it they run on SQLite.

#![allow(dead_code)]

pub mod analytics;
pub mod binary;
pub mod notifications;
pub mod own_servers;
pub mod races;
pub mod sigkill;

use std::time::{Duration, Instant};

use sqlx::Connection;

use serde_json::Value;
use stageworks::app::App;
use stageworks::config::{Config, ServiceConfig};
use tempfile::TempDir;

/// Users every test app registers and signs in at start (see [`TestApp::as_user`]).
pub const ALICE: &str = "alice@example.com";
pub const BOB: &str = "bob@example.com";
pub const PASSWORD: &str = "correct horse battery staple";
/// Shared by every test app, so replicas accept each other's tokens.
pub const JWT_SECRET: &str = "test-only-secret-that-is-long-enough-for-hs256";

/// An access token signed with the test secret, for a user no database knows
/// (for apps whose auth service cannot run).
pub fn mint_token(user_id: uuid::Uuid) -> String {
    token_of(user_id, actors::api::Role::User)
}

/// An access token of an admin (signed with the test secret; the edge
/// verifies tokens without the auth service). Always the same admin, so
/// idempotency keys, scoped to the caller, are theirs across requests.
pub fn admin_token() -> String {
    token_of(
        uuid::Uuid::from_u128(0xad_0000_0001),
        actors::api::Role::Admin,
    )
}

fn token_of(user_id: uuid::Uuid, role: actors::api::Role) -> String {
    let keys = actors::auth::TokenKeys::new(
        JWT_SECRET.as_bytes(),
        actors::auth::TokenSettings::default(),
    )
    .expect("test keys");
    keys.issue_access(user_id, role, uuid::Uuid::now_v7())
        .expect("a token")
        .token
}

/// A signed-in test user.
#[derive(Clone, Debug)]
pub struct TestUser {
    pub id: String,
    pub access_token: String,
    pub refresh_token: String,
}

/// The PostgreSQL server tests run against, if any.
pub fn test_database_url() -> Option<String> {
    std::env::var("STAGEWORKS_TEST_DATABASE_URL")
        .ok()
        .filter(|url| !url.is_empty())
}

/// The Redis server tests run against, if any (`STAGEWORKS_TEST_REDIS_URL`).
pub fn test_redis_url() -> Option<String> {
    std::env::var("STAGEWORKS_TEST_REDIS_URL")
        .ok()
        .filter(|url| !url.is_empty())
}

/// A database made for one test, dropped when this is dropped.
pub struct TestDatabase {
    pub url: String,
    admin_url: String,
    name: String,
}

impl TestDatabase {
    pub async fn create(admin_url: &str) -> TestDatabase {
        let name = format!("stageworks_test_{}", uuid::Uuid::now_v7().simple());
        let mut admin = sqlx::postgres::PgConnection::connect(admin_url)
            .await
            .expect("the test PostgreSQL server answers");
        sqlx::query(&format!("CREATE DATABASE \"{name}\""))
            .execute(&mut admin)
            .await
            .expect("create the test database");
        TestDatabase {
            url: with_database(admin_url, &name),
            admin_url: admin_url.to_owned(),
            name,
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        // Drop runs outside any runtime we may block: use a thread of its own.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async {
                let mut admin = sqlx::postgres::PgConnection::connect(&admin_url).await?;
                sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                    .execute(&mut admin)
                    .await?;
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("warning: could not drop test database {}", self.name);
        }
    }
}

/// The same server URL, naming another database.
pub fn with_database(url: &str, database: &str) -> String {
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

pub struct TestApp {
    pub app: Option<App>,
    /// Declared after `app`, so it is dropped after the app stops using it.
    pub database: Option<TestDatabase>,
    pub base: String,
    pub admin: String,
    pub client: reqwest::Client,
    pub admin_token: Option<String>,
    pub users: std::collections::HashMap<&'static str, TestUser>,
    pub data: TempDir,
}

/// The services every test app runs: the built-in ones.
pub fn registered_services() -> &'static [actors::ServiceDefinition] {
    actors::BUILTIN
}

/// An idempotency key claimed by a request that has not finished
/// ([`TestApp::order_key_in_flight`]).
pub struct KeyInFlight {
    store: actors::orders::store::OrdersStore,
    key: actors::idempotency::IdempotencyKey,
}

impl KeyInFlight {
    /// The request is over without an answer to store: the key is free again.
    pub async fn release(self) {
        self.store
            .release(&self.key)
            .await
            .expect("the claim is released");
    }
}

/// A service section whose supervision acts in test time, not production
/// time: few workers, fast restarts, circuits that reclose within a second.
pub fn test_supervision() -> ServiceConfig {
    ServiceConfig {
        workers: 2,
        call_timeout: Duration::from_secs(2),
        backoff_min: Duration::from_millis(10),
        backoff_max: Duration::from_millis(50),
        open_for: Duration::from_secs(1),
        ..Default::default()
    }
}

/// Settings that make supervision observable in a test's time frame.
pub fn test_config(data: &TempDir) -> Config {
    let mut config = Config::default();
    // Apps sharing a Redis in one test run never see each other's keys.
    config.redis.key_prefix = format!("stageworks-test:{}:", uuid::Uuid::now_v7().simple());
    config.server.listen = "127.0.0.1:0".parse().unwrap();
    config.admin.listen = "127.0.0.1:0".parse().unwrap();
    config.data_dir = data.path().to_owned();
    config.tokens.jwt_secret = JWT_SECRET.into();
    // Rate limits have tests of their own; the rest must not trip them.
    config.rate_limit.enabled = false;
    config.server.shutdown_timeout = Duration::from_secs(5);
    for service in registered_services() {
        *config.service_mut(service.name) = test_supervision();
    }
    // Retries and take-overs in test time, not production time.
    config.events.max_attempts = 3;
    config.events.retry_min = Duration::from_millis(20);
    config.events.retry_max = Duration::from_millis(200);
    config.events.relay_interval = Duration::from_millis(100);
    config.events.claim_lease = Duration::from_secs(3);
    config.events.stream_claim_idle = Duration::from_secs(3);
    config
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

pub async fn spawn_app_with(adjust: impl FnOnce(&mut Config)) -> TestApp {
    spawn_app_of(registered_services(), adjust).await
}

/// A test app of the given services (the built-in ones, and any a test defines).
pub async fn spawn_app_of(
    services: &[actors::ServiceDefinition],
    adjust: impl FnOnce(&mut Config),
) -> TestApp {
    let data = tempfile::tempdir().expect("temp dir");
    let mut config = test_config(&data);
    let database = match test_database_url() {
        Some(admin_url) => {
            let database = TestDatabase::create(&admin_url).await;
            config.database.url = database.url.clone();
            Some(database)
        }
        None => None,
    };
    if let Some(redis) = test_redis_url() {
        config.redis.url = redis;
    }
    for service in services {
        *config.service_mut(service.name) = test_supervision();
    }
    adjust(&mut config);
    start_app(config, data, database, services).await
}

pub async fn spawn_app_in(
    config: Config,
    data: TempDir,
    database: Option<TestDatabase>,
) -> TestApp {
    start_app(config, data, database, registered_services()).await
}

async fn start_app(
    config: Config,
    data: TempDir,
    database: Option<TestDatabase>,
    services: &[actors::ServiceDefinition],
) -> TestApp {
    config.validate(services).expect("test config is valid");
    let enabled: Vec<&str> = services
        .iter()
        .map(|s| s.name)
        .filter(|name| config.service(name).enabled)
        .collect();
    let admin_token = config.admin.token.clone();
    let app = App::builder(config)
        .services(services.iter().copied())
        .start()
        .await
        .expect("app starts");
    let mut test_app = TestApp {
        base: format!("http://{}", app.public_addr()),
        admin: format!("http://{}", app.admin_addr()),
        app: Some(app),
        database,
        client: reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(20))
            .build()
            .expect("client"),
        admin_token,
        users: std::collections::HashMap::new(),
        data,
    };
    for service in enabled {
        test_app.wait_for_status(service, "running").await;
    }
    for email in [ALICE, BOB] {
        let user = test_app.sign_in(email).await;
        test_app.users.insert(email, user);
    }
    test_app
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("{}{path}", self.admin)
    }

    /// A request as one of the signed-in test users (their bearer token).
    pub fn as_user(
        &self,
        method: reqwest::Method,
        path: &str,
        user: &str,
    ) -> reqwest::RequestBuilder {
        let token = &self
            .users
            .get(user)
            .unwrap_or_else(|| panic!("{user} is not a test user"))
            .access_token;
        self.client
            .request(method, self.url(path))
            .bearer_auth(token)
    }

    /// A test user's id, as the API shows it.
    pub fn user_id(&self, user: &str) -> &str {
        &self.users[user].id
    }

    /// Registers `email` (an existing account is fine: replicas share one
    /// database) and signs in.
    pub async fn sign_in(&self, email: &str) -> TestUser {
        let registered = self
            .client
            .post(self.url("/api/v1/auth/register"))
            .json(&serde_json::json!({"email": email, "password": PASSWORD, "name": email}))
            .send()
            .await
            .expect("register answers");
        assert!(
            registered.status() == 201 || registered.status() == 409,
            "register {email}: {}",
            registered.status()
        );
        let login: Value = self
            .client
            .post(self.url("/api/v1/auth/login"))
            .json(&serde_json::json!({"email": email, "password": PASSWORD}))
            .send()
            .await
            .expect("login answers")
            .json()
            .await
            .expect("login JSON");
        TestUser {
            id: login["user"]["id"]
                .as_str()
                .unwrap_or_else(|| panic!("login {email}: {login}"))
                .to_owned(),
            access_token: login["access_token"]
                .as_str()
                .expect("access token")
                .to_owned(),
            refresh_token: login["refresh_token"]
                .as_str()
                .expect("refresh token")
                .to_owned(),
        }
    }

    /// A GET as `user`, answered with JSON.
    pub async fn get_json(&self, path: &str, user: &str) -> Value {
        self.as_user(reqwest::Method::GET, path, user)
            .send()
            .await
            .expect("request sent")
            .json()
            .await
            .expect("JSON body")
    }

    pub async fn create_order(&self, user: &str, body: Value) -> reqwest::Response {
        self.as_user(reqwest::Method::POST, "/api/v1/orders", user)
            .json(&body)
            .send()
            .await
            .expect("request sent")
    }

    /// Claims `key` in the orders database as a `POST /api/v1/orders` of
    /// `user` with `body` claims it when its worker takes it, and leaves it
    /// claimed: a request with that key is in flight until [`KeyInFlight::release`].
    /// An injected delay cannot hold a key in flight: the worker strikes it
    /// before it handles the message, so before the claim.
    pub async fn order_key_in_flight(&self, user: &str, key: &str, body: &Value) -> KeyInFlight {
        let settings = actors::storage::StorageSettings {
            url: self.database.as_ref().map(|d| d.url.clone()),
            ..Default::default()
        };
        let store = actors::orders::store::OrdersStore::open(
            self.data.path(),
            &settings,
            Duration::from_secs(60),
        )
        .await
        .expect("the orders database opens");
        store
            .ensure_ready()
            .await
            .expect("the orders database is ready");
        let mut headers = http::HeaderMap::new();
        headers.insert("idempotency-key", key.parse().expect("a valid key"));
        let scope = format!("{}:POST /api/v1/orders", self.user_id(user));
        let body = serde_json::to_vec(body).expect("JSON body");
        let key = actors::idempotency::IdempotencyKey::from_request(&headers, scope, &body)
            .expect("a valid key")
            .expect("a key");
        let claim = store.claim(&key).await.expect("the claim is stored");
        assert_eq!(claim, actors::idempotency::Claim::Claimed);
        KeyInFlight { store, key }
    }

    /// A GET on the admin listener, with the token if one is configured.
    /// A request to the public API as an admin ([`admin_token`]); the
    /// admin *listener* is [`TestApp::admin_request`].
    pub fn as_admin(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.client
            .request(method, self.url(path))
            .bearer_auth(admin_token())
    }

    /// A subscriber's figures on the admin listener's `/admin/events`.
    pub async fn events_subscriber(&self, name: &str) -> Value {
        let overview: Value = self
            .admin_get("/admin/events")
            .send()
            .await
            .expect("admin answers")
            .json()
            .await
            .expect("JSON");
        overview["subscribers"]
            .as_array()
            .and_then(|all| all.iter().find(|s| s["name"] == name))
            .cloned()
            .unwrap_or_else(|| panic!("no {name} subscriber in {overview}"))
    }

    pub fn admin_get(&self, path: &str) -> reqwest::RequestBuilder {
        self.admin_request(reqwest::Method::GET, path)
    }

    pub async fn admin_node(&self, name: &str) -> Value {
        self.admin_get(&format!("/admin/actors/{name}"))
            .send()
            .await
            .expect("admin answers")
            .json()
            .await
            .expect("admin JSON")
    }

    pub async fn metrics(&self) -> String {
        self.admin_get("/metrics")
            .send()
            .await
            .expect("metrics answer")
            .text()
            .await
            .expect("metrics text")
    }

    /// Polls the admin endpoint until the service has this status.
    pub async fn wait_for_status(&self, service: &str, status: &str) {
        self.wait_for(
            &format!("{service} {status}"),
            |node| node["status"] == status,
            service,
        )
        .await;
    }

    pub async fn wait_for_circuit(&self, service: &str, state: &str) {
        self.wait_for(
            &format!("{service} circuit {state}"),
            |node| node["circuit"]["state"] == state,
            service,
        )
        .await;
    }

    async fn wait_for(&self, what: &str, condition: impl Fn(&Value) -> bool, service: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let node = self.admin_node(service).await;
            if condition(&node) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {node}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Polls `path` as `user` until it answers 200 and `ready` holds for its
    /// JSON (events are applied after the request that caused them).
    pub async fn eventually(
        &self,
        path: &str,
        user: &str,
        ready: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let response = self
                .as_user(reqwest::Method::GET, path, user)
                .send()
                .await
                .expect("request sent");
            let status = response.status();
            let body: Value = response.json().await.unwrap_or(Value::Null);
            if status == 200 && ready(&body) {
                return body;
            }
            assert!(
                Instant::now() < deadline,
                "timed out polling {path}: {status} {body}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// A request on the admin listener, with the token if one is configured.
    pub fn admin_request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let request = self.client.request(method, self.admin_url(path));
        match &self.admin_token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    /// Shuts the app down gracefully and waits for it.
    pub async fn stop(&mut self) {
        if let Some(app) = self.app.take() {
            app.shutdown();
            app.stopped().await;
        }
    }
}

/// The status and JSON body of a request (`null` for a body that is not JSON).
pub async fn json_of(request: reqwest::RequestBuilder) -> (u16, Value) {
    let response = request.send().await.expect("request sent");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Asserts the error shape of API.md and returns the body.
pub async fn expect_error(response: reqwest::Response, status: u16, code: &str) -> Value {
    assert_eq!(response.status().as_u16(), status, "unexpected status");
    assert_eq!(
        response.headers()["content-type"],
        "application/json",
        "errors are JSON"
    );
    let body: Value = response.json().await.expect("error body is JSON");
    assert_eq!(body["status"], "error", "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "the error says what was wrong: {body}"
    );
    body
}
