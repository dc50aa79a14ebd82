//! The auth service as the front-end will drive it: started with
//! [`super::Auth`] under a real root supervisor (SQLite in a temporary
//! directory, the in-memory key-value store), its routes called with
//! [`ApiRequest`]s. HTTP itself, and the front-end's own token checks, are
//! the end-to-end tests' business.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use ractor::{Actor, ActorRef};
use serde_json::{json, Value};
use supervision::{RootSupervisor, ServiceStatus, SupervisionPolicy};
use tempfile::TempDir;
use uuid::Uuid;

use super::revocation::is_session_revoked;
use super::tokens::{TokenKeys, TokenSettings};
use crate::api::{ApiRequest, ApiResponse, Caller, RequestContext, Role, Route};
use crate::events::Outbox;
use crate::kv::{KvStore, MemoryKv};
use crate::service::{RateLimiting, Resources, Service as _, ServiceContext};
use crate::storage::StorageSettings;
use crate::ServiceError;

const PASSWORD: &str = "correct horse battery staple";

struct Service {
    routes: Vec<Route>,
    /// Where its events wait (no relay runs here: they stay unclaimed).
    outbox: Outbox,
    keys: Arc<TokenKeys>,
    kv: Arc<dyn KvStore>,
    root: ActorRef<<RootSupervisor as Actor>::Msg>,
    _data: TempDir,
}

impl Drop for Service {
    fn drop(&mut self) {
        self.root.stop(None);
    }
}

async fn start() -> Service {
    let data = tempfile::tempdir().expect("temp dir");
    let kv: Arc<dyn KvStore> = Arc::new(MemoryKv::new(10_000, "test:"));
    let keys = Arc::new(TokenKeys::new(&[42u8; 32], TokenSettings::default()).expect("valid keys"));
    let mut resources = Resources::new();
    resources.insert(kv.clone());
    resources.insert(keys.clone());
    resources.insert(RateLimiting { enabled: false });
    let ctx = ServiceContext {
        name: "auth",
        policy: SupervisionPolicy::default(),
        workers: 2,
        // Unoptimised argon2 is slow; the default would do in a release build.
        call_timeout: Duration::from_secs(30),
        data_dir: data.path().to_owned(),
        storage: StorageSettings::default(),
        resources,
    };
    let started = super::Auth::start(ctx, Default::default())
        .await
        .expect("starts");
    let outbox = started.outbox.clone().expect("auth publishes events");
    let shared = started.starter.shared().clone();
    let (root, _) = Actor::spawn(None, RootSupervisor, vec![started.starter])
        .await
        .expect("root spawns");
    let deadline = Instant::now() + Duration::from_secs(10);
    while shared.status() != ServiceStatus::Running {
        assert!(Instant::now() < deadline, "auth service did not start");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Service {
        routes: started.routes,
        outbox,
        keys,
        kv,
        root,
        _data: data,
    }
}

/// A request as the front-end builds it.
struct Req {
    method: Method,
    path: &'static str,
    /// A fresh UUID unless set.
    request_id: Option<&'static str>,
    params: Vec<(String, String)>,
    query: Option<String>,
    caller: Option<Caller>,
    headers: HeaderMap,
    body: Bytes,
}

impl Req {
    fn new(method: Method, path: &'static str) -> Self {
        Self {
            method,
            path,
            request_id: None,
            params: Vec::new(),
            query: None,
            caller: None,
            headers: HeaderMap::new(),
            body: Bytes::new(),
        }
    }

    fn post(path: &'static str, body: Value) -> Self {
        let mut req = Self::new(Method::POST, path);
        req.headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        req.body = Bytes::from(body.to_string());
        req
    }

    fn header(mut self, name: &'static str, value: &str) -> Self {
        self.headers
            .insert(name, HeaderValue::from_str(value).expect("valid header"));
        self
    }

    /// Authenticated as the front-end will: the caller from the verified
    /// token, the token itself still in the headers.
    fn authenticated(mut self, keys: &TokenKeys, access_token: &str) -> Self {
        let claims = keys.verify_access(access_token).expect("a valid token");
        self.caller = Some(Caller {
            user_id: claims.user_id,
            role: claims.role,
            session_id: Some(claims.session_id),
        });
        self.header("authorization", &format!("Bearer {access_token}"))
    }

    fn request_id(mut self, id: &'static str) -> Self {
        self.request_id = Some(id);
        self
    }

    fn param(mut self, name: &str, value: &str) -> Self {
        self.params.push((name.to_owned(), value.to_owned()));
        self
    }

    fn query(mut self, query: &str) -> Self {
        self.query = Some(query.to_owned());
        self
    }
}

impl Service {
    async fn call(&self, req: Req) -> Result<ApiResponse, ServiceError> {
        let route = self
            .routes
            .iter()
            .find(|r| r.method == req.method && r.path == req.path)
            .unwrap_or_else(|| panic!("no route {} {}", req.method, req.path));
        route
            .call(ApiRequest {
                method: req.method.clone(),
                ctx: RequestContext {
                    request_id: req
                        .request_id
                        .map_or_else(|| Uuid::now_v7().to_string(), str::to_owned),
                    caller: req.caller,
                    ..RequestContext::default()
                },
                params: req.params,
                query: req.query,
                headers: req.headers,
                body: req.body,
            })
            .await
    }

    async fn ok(&self, req: Req, status: StatusCode) -> (ApiResponse, Value) {
        let response = self.call(req).await.expect("success");
        assert_eq!(response.status, status);
        let body = if response.body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&response.body).expect("json body")
        };
        (response, body)
    }

    async fn register(&self, email: &str) -> Value {
        let req = Req::post(
            "/api/v1/auth/register",
            json!({"email": email, "password": PASSWORD, "name": "Ann"}),
        );
        self.ok(req, StatusCode::CREATED).await.1
    }

    async fn login(&self, email: &str) -> Value {
        let req = Req::post(
            "/api/v1/auth/login",
            json!({"email": email, "password": PASSWORD}),
        )
        .header("user-agent", "tests/1.0");
        self.ok(req, StatusCode::OK).await.1
    }

    async fn validate(&self, token: &str) -> Value {
        let req = Req::post("/api/v1/auth/validate", json!({"token": token}));
        self.ok(req, StatusCode::OK).await.1
    }
}

fn text(v: &Value) -> &str {
    v.as_str().expect("a string")
}

#[tokio::test]
async fn register_then_login_then_me() {
    let svc = start().await;
    let user = svc.register(" Ann@Example.com ").await;
    assert_eq!(user["email"], "ann@example.com");
    assert_eq!(user["role"], "user");
    assert!(user.get("password").is_none() && user.get("password_hash").is_none());

    let taken = svc
        .call(Req::post(
            "/api/v1/auth/register",
            json!({"email": "ann@example.com", "password": PASSWORD, "name": "Other"}),
        ))
        .await
        .expect_err("taken");
    assert_eq!(taken.status(), StatusCode::CONFLICT);

    let invalid = svc
        .call(Req::post(
            "/api/v1/auth/register",
            json!({"email": "x", "password": "short", "name": "", "role": "admin"}),
        ))
        .await
        .expect_err("invalid");
    let ServiceError::Validation(fields) = invalid else {
        panic!("not a 422: {invalid:?}");
    };
    let fields: Vec<_> = fields.iter().map(|f| f.field.as_str()).collect();
    assert_eq!(fields, ["role", "email", "password", "name"]);

    let (response, pair) = svc
        .ok(
            Req::post(
                "/api/v1/auth/login",
                json!({"email": "ANN@example.com", "password": PASSWORD}),
            ),
            StatusCode::OK,
        )
        .await;
    assert!(response
        .headers
        .iter()
        .any(|(n, v)| n == "cache-control" && v == "no-store"));
    assert_eq!(pair["token_type"], "Bearer");
    assert_eq!(pair["expires_in"], 900);
    assert_eq!(pair["user"], user);
    let access = text(&pair["access_token"]);
    let claims = svc.keys.verify_access(access).expect("verifies");
    assert_eq!(claims.user_id.to_string(), text(&user["id"]));

    let (_, me) = svc
        .ok(
            Req::new(Method::GET, "/api/v1/auth/me").authenticated(&svc.keys, access),
            StatusCode::OK,
        )
        .await;
    assert_eq!(me, user);
}

#[tokio::test]
async fn wrong_password_and_unknown_email_answer_byte_identically() {
    let svc = start().await;
    svc.register("ann@example.com").await;
    let wrong = svc
        .call(Req::post(
            "/api/v1/auth/login",
            json!({"email": "ann@example.com", "password": "not the password"}),
        ))
        .await
        .expect_err("refused");
    let unknown = svc
        .call(Req::post(
            "/api/v1/auth/login",
            json!({"email": "nobody@example.com", "password": "not the password"}),
        ))
        .await
        .expect_err("refused");
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(wrong, unknown);
    assert_eq!(
        serde_json::to_vec(&wrong.to_body()).expect("json"),
        serde_json::to_vec(&unknown.to_body()).expect("json")
    );
}

#[tokio::test]
async fn registration_is_idempotent_with_a_key() {
    let svc = start().await;
    let body = json!({"email": "kim@example.com", "password": PASSWORD, "name": "Kim"});
    let first = svc
        .ok(
            Req::post("/api/v1/auth/register", body.clone()).header("idempotency-key", "k1"),
            StatusCode::CREATED,
        )
        .await;
    let (replay, again) = svc
        .ok(
            Req::post("/api/v1/auth/register", body).header("idempotency-key", "k1"),
            StatusCode::CREATED,
        )
        .await;
    assert_eq!(again, first.1);
    assert!(replay
        .headers
        .iter()
        .any(|(n, v)| n == "idempotent-replayed" && v == "true"));
    let other = svc
        .call(
            Req::post(
                "/api/v1/auth/register",
                json!({"email": "kim@example.com", "password": PASSWORD, "name": "Kimberly"}),
            )
            .header("idempotency-key", "k1"),
        )
        .await
        .expect_err("mismatch");
    assert_eq!(other.status(), StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn refresh_rotates_and_reuse_revokes_the_session() {
    let svc = start().await;
    svc.register("ann@example.com").await;
    let first = svc.login("ann@example.com").await;
    let refresh = |token: &str| Req::post("/api/v1/auth/refresh", json!({"refresh_token": token}));

    let (_, second) = svc
        .ok(refresh(text(&first["refresh_token"])), StatusCode::OK)
        .await;
    assert_ne!(second["refresh_token"], first["refresh_token"]);
    assert_ne!(second["access_token"], first["access_token"]);
    let session = svc
        .keys
        .verify_access(text(&second["access_token"]))
        .expect("verifies")
        .session_id;
    assert_eq!(
        svc.validate(text(&second["access_token"])).await["valid"],
        true
    );

    // The spent token again: 401, and the whole session is over.
    let reused = svc
        .call(refresh(text(&first["refresh_token"])))
        .await
        .expect_err("reuse");
    assert_eq!(reused.status(), StatusCode::UNAUTHORIZED);
    assert!(is_session_revoked(svc.kv.as_ref(), session)
        .await
        .expect("kv"));
    let verdict = svc.validate(text(&second["access_token"])).await;
    assert_eq!(verdict, json!({"valid": false, "reason": "revoked"}));
    let current = svc
        .call(refresh(text(&second["refresh_token"])))
        .await
        .expect_err("revoked");
    // Spent, revoked, unknown and malformed tokens all get the same answer.
    let unknown = svc
        .call(refresh("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"))
        .await
        .expect_err("unknown");
    let garbage = svc.call(refresh("garbage")).await.expect_err("malformed");
    assert_eq!(current, reused);
    assert_eq!(unknown, reused);
    assert_eq!(garbage, reused);
}

#[tokio::test]
async fn logout_ends_the_access_token_at_once() {
    let svc = start().await;
    svc.register("ann@example.com").await;
    let pair = svc.login("ann@example.com").await;
    let access = text(&pair["access_token"]);
    let verdict = svc.validate(access).await;
    assert_eq!(verdict["valid"], true);
    assert_eq!(verdict["role"], "user");

    svc.ok(
        Req::new(Method::POST, "/api/v1/auth/logout").authenticated(&svc.keys, access),
        StatusCode::NO_CONTENT,
    )
    .await;
    let session = svc
        .keys
        .verify_access(access)
        .expect("still signed")
        .session_id;
    assert!(is_session_revoked(svc.kv.as_ref(), session)
        .await
        .expect("kv"));
    assert_eq!(svc.validate(access).await["reason"], "revoked");
    let refresh = svc
        .call(Req::post(
            "/api/v1/auth/refresh",
            json!({"refresh_token": pair["refresh_token"]}),
        ))
        .await
        .expect_err("revoked");
    assert_eq!(refresh.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn validate_says_why() {
    let svc = start().await;
    assert_eq!(
        svc.validate("not.a.token").await,
        json!({"valid": false, "reason": "malformed"})
    );
    let other = TokenKeys::new(&[1u8; 32], TokenSettings::default()).expect("keys");
    let forged = other
        .issue_access(Uuid::now_v7(), Role::Admin, Uuid::now_v7())
        .expect("issues");
    assert_eq!(svc.validate(&forged.token).await["reason"], "bad_signature");
    // Signed with our key but for a session that never existed.
    let orphan = svc
        .keys
        .issue_access(Uuid::now_v7(), Role::User, Uuid::now_v7())
        .expect("issues");
    assert_eq!(svc.validate(&orphan.token).await["reason"], "revoked");
    let missing = svc
        .call(Req::post("/api/v1/auth/validate", json!({})))
        .await
        .expect_err("422");
    assert_eq!(missing.status(), StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn sessions_are_listed_and_revoked_by_owner_or_admin() {
    let svc = start().await;
    svc.register("ann@example.com").await;
    svc.register("bob@example.com").await;
    let ann_1 = svc.login("ann@example.com").await;
    let ann_2 = svc.login("ann@example.com").await;
    let bob = svc.login("bob@example.com").await;
    let ann_access = text(&ann_2["access_token"]);
    let sid = |pair: &Value| {
        svc.keys
            .verify_access(text(&pair["access_token"]))
            .expect("verifies")
            .session_id
            .to_string()
    };

    let (_, list) = svc
        .ok(
            Req::new(Method::GET, "/api/v1/auth/sessions").authenticated(&svc.keys, ann_access),
            StatusCode::OK,
        )
        .await;
    assert_eq!(list["pagination"]["total"], 2);
    let sessions = list["data"].as_array().expect("list");
    assert_eq!(sessions[0]["id"], sid(&ann_2).as_str(), "newest first");
    assert_eq!(sessions[0]["current"], true);
    assert_eq!(sessions[1]["current"], false);
    assert_eq!(sessions[0]["user_agent"], "tests/1.0");

    // A user's ?user_id= is ignored: still their own.
    let bob_id = text(&bob["user"]["id"]).to_owned();
    let (_, own) = svc
        .ok(
            Req::new(Method::GET, "/api/v1/auth/sessions")
                .authenticated(&svc.keys, ann_access)
                .query(&format!("user_id={bob_id}")),
            StatusCode::OK,
        )
        .await;
    assert_eq!(own["pagination"]["total"], 2);

    // Bob's session is "not found" to Ann.
    let bob_sid = sid(&bob);
    let hidden = svc
        .call(
            Req::new(Method::DELETE, "/api/v1/auth/sessions/{id}")
                .authenticated(&svc.keys, ann_access)
                .param("id", &bob_sid),
        )
        .await
        .expect_err("404");
    assert_eq!(hidden.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        svc.validate(text(&bob["access_token"])).await["valid"],
        true
    );

    // Ann ends her other session.
    svc.ok(
        Req::new(Method::DELETE, "/api/v1/auth/sessions/{id}")
            .authenticated(&svc.keys, ann_access)
            .param("id", &sid(&ann_1)),
        StatusCode::NO_CONTENT,
    )
    .await;
    assert_eq!(
        svc.validate(text(&ann_1["access_token"])).await["reason"],
        "revoked"
    );

    // An admin sees and ends Bob's.
    let store = super::store::AuthStore::open(
        svc._data.path(),
        &StorageSettings::default(),
        Duration::from_secs(10),
    )
    .await
    .expect("store");
    let email = super::model::Email::parse("ann@example.com").expect("valid");
    super::ensure_admin(&store, &email, None)
        .await
        .expect("promoted");
    let (_, admin_pair) = svc
        .ok(
            Req::post(
                "/api/v1/auth/refresh",
                json!({"refresh_token": ann_2["refresh_token"]}),
            ),
            StatusCode::OK,
        )
        .await;
    assert_eq!(admin_pair["user"]["role"], "admin");
    let admin_access = text(&admin_pair["access_token"]);
    let (_, bobs) = svc
        .ok(
            Req::new(Method::GET, "/api/v1/auth/sessions")
                .authenticated(&svc.keys, admin_access)
                .query(&format!("user_id={bob_id}")),
            StatusCode::OK,
        )
        .await;
    assert_eq!(bobs["data"][0]["id"], bob_sid.as_str());
    assert_eq!(bobs["data"][0]["current"], false);
    svc.ok(
        Req::new(Method::DELETE, "/api/v1/auth/sessions/{id}")
            .authenticated(&svc.keys, admin_access)
            .param("id", &bob_sid),
        StatusCode::NO_CONTENT,
    )
    .await;
    assert_eq!(
        svc.validate(text(&bob["access_token"])).await["reason"],
        "revoked"
    );
}

/// The events of register, login, refresh-token reuse, logout and
/// `DELETE /sessions/{id}` carry the request's id and who acted; what did
/// not change anything (a taken email, a second logout) announces nothing;
/// no event holds the password or a token.
#[tokio::test]
async fn events_name_the_request_and_the_actor() {
    let svc = start().await;
    let register = |id| {
        Req::post(
            "/api/v1/auth/register",
            json!({"email": "ann@example.com", "password": PASSWORD, "name": "Ann"}),
        )
        .request_id(id)
    };
    let login = |id| {
        Req::post(
            "/api/v1/auth/login",
            json!({"email": "ann@example.com", "password": PASSWORD}),
        )
        .header("user-agent", "tests/1.0")
        .request_id(id)
    };
    let refresh = |token: &Value, id| {
        Req::post("/api/v1/auth/refresh", json!({"refresh_token": token})).request_id(id)
    };
    let sid = |pair: &Value| {
        svc.keys
            .verify_access(text(&pair["access_token"]))
            .expect("verifies")
            .session_id
    };

    let (_, user) = svc.ok(register("r-register"), StatusCode::CREATED).await;
    let ann = Uuid::parse_str(text(&user["id"])).expect("uuid");
    let taken = svc.call(register("r-taken")).await.expect_err("taken");
    assert_eq!(taken.status(), StatusCode::CONFLICT);

    let (_, first) = svc.ok(login("r-login"), StatusCode::OK).await;
    let (_, second) = svc
        .ok(
            refresh(&first["refresh_token"], "r-refresh"),
            StatusCode::OK,
        )
        .await;
    let reuse = svc
        .call(refresh(&first["refresh_token"], "r-reuse"))
        .await
        .expect_err("reuse");
    assert_eq!(reuse.status(), StatusCode::UNAUTHORIZED);

    let (_, other) = svc.ok(login("r-login-2"), StatusCode::OK).await;
    let access = text(&other["access_token"]);
    for id in ["r-logout", "r-logout-again"] {
        let logout = Req::new(Method::POST, "/api/v1/auth/logout")
            .authenticated(&svc.keys, access)
            .request_id(id);
        svc.ok(logout, StatusCode::NO_CONTENT).await;
    }

    let (_, third) = svc.ok(login("r-login-3"), StatusCode::OK).await;
    let delete = Req::new(Method::DELETE, "/api/v1/auth/sessions/{id}")
        .authenticated(&svc.keys, text(&third["access_token"]))
        .param("id", &sid(&third).to_string())
        .request_id("r-delete");
    svc.ok(delete, StatusCode::NO_CONTENT).await;

    let records = svc
        .outbox
        .claim("test", 100, Duration::from_secs(30))
        .await
        .expect("outbox");
    let seen: Vec<_> = records
        .iter()
        .map(|r| {
            (
                r.event.topic.as_str(),
                r.event.request_id.as_deref(),
                r.event.actor_id,
                r.event.data["reason"].as_str(),
            )
        })
        .collect();
    let a = Some(ann);
    assert_eq!(
        seen,
        vec![
            ("user.registered", Some("r-register"), a, None),
            ("user.logged_in", Some("r-login"), a, None),
            (
                "session.revoked",
                Some("r-reuse"),
                a,
                Some("refresh_token_reused")
            ),
            ("user.logged_in", Some("r-login-2"), a, None),
            ("session.revoked", Some("r-logout"), a, Some("logout")),
            ("user.logged_in", Some("r-login-3"), a, None),
            ("session.revoked", Some("r-delete"), a, Some("revoked")),
        ]
    );
    assert_eq!(records[0].event.data, user);
    assert_eq!(records[1].event.data["session_id"], sid(&first).to_string());
    assert_eq!(records[1].event.data["user_agent"], "tests/1.0");
    assert_eq!(records[2].event.data["session_id"], sid(&first).to_string());
    assert_eq!(records[4].event.data["session_id"], sid(&other).to_string());
    assert_eq!(records[6].event.data["session_id"], sid(&third).to_string());

    let mut secrets = vec![PASSWORD.to_owned()];
    for pair in [&first, &second, &other, &third] {
        secrets.push(text(&pair["access_token"]).to_owned());
        secrets.push(text(&pair["refresh_token"]).to_owned());
    }
    for record in &records {
        let json = record.event.to_json().expect("json");
        assert!(!json.contains("password"), "{json}");
        assert!(!json.contains("$argon2"), "{json}");
        for secret in &secrets {
            assert!(!json.contains(secret.as_str()), "a secret in {json}");
        }
    }
}

#[tokio::test]
async fn bootstrap_creates_then_promotes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = super::store::AuthStore::open(
        dir.path(),
        &StorageSettings::default(),
        Duration::from_secs(10),
    )
    .await
    .expect("store");
    let email = super::model::Email::parse("root@example.com").expect("valid");
    let missing = super::ensure_admin(&store, &email, None).await;
    assert!(matches!(
        missing,
        Err(super::BootstrapError::PasswordRequired { .. })
    ));
    let password = super::model::Password::new(PASSWORD).expect("valid");
    let created = super::ensure_admin(&store, &email, Some(password.clone()))
        .await
        .expect("created");
    assert!(matches!(created, super::store::GrantAdmin::Created(ref u) if u.role == Role::Admin));
    let again = super::ensure_admin(&store, &email, Some(password))
        .await
        .expect("idempotent");
    assert!(matches!(again, super::store::GrantAdmin::AlreadyAdmin(_)));
    let (_, hash) = store
        .find_user_by_email(&email)
        .await
        .expect("store")
        .expect("found");
    assert!(super::password::verify(
        super::model::Password::presented(PASSWORD).expect("ok"),
        hash
    )
    .await
    .expect("verifies"));
}
