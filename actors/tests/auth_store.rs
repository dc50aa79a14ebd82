//! The auth store against both backends: every `check_*` function below runs
//! once on SQLite (a file in a temporary directory) and once on PostgreSQL.
//!
//! PostgreSQL comes from `STAGEWORKS_TEST_DATABASE_URL`, else
//! `postgres://postgres@127.0.0.1:5432/test`; each test creates a database of
//! its own there (`stageworks_test_<uuid>`) and drops it at the end, pass or
//! fail. If the server is unreachable the PostgreSQL tests fail with a
//! message saying so: a suite that silently skipped them would report green
//! without having tested PostgreSQL at all.

mod common;

use std::net::IpAddr;
use std::time::Duration;

use actors::api::{PageRequest, Role};
use actors::auth::model::{ClientInfo, DisplayName, Email, Password};
use actors::auth::store::{
    ActedBy, AuthStore, Cause, CreateUser, GrantAdmin, RevokeReason, Rotation,
};
use actors::auth::tokens::RefreshToken;
use actors::idempotency::{Claim, IdempotencyKey};
use actors::storage::StorageSettings;
use common::Guard;
use time::OffsetDateTime;
use uuid::Uuid;

// ---------------------------------------------------------------- harness --

const LEASE: Duration = Duration::from_secs(10);
const DAY: Duration = Duration::from_secs(24 * 60 * 60);

async fn sqlite_store() -> (AuthStore, Guard) {
    let (dir, guard) = common::sqlite_dir();
    let store = AuthStore::open(&dir, &StorageSettings::default(), LEASE)
        .await
        .expect("SQLite store opens");
    store.ensure_ready().await.expect("ready");
    (store, guard)
}

async fn postgres_store() -> (AuthStore, Guard) {
    let (settings, guard) = common::postgres_database().await;
    let store = AuthStore::open(&std::env::temp_dir(), &settings, LEASE)
        .await
        .expect("PostgreSQL store opens");
    store
        .ensure_ready()
        .await
        .expect("schema and migrations in place");
    (store, guard)
}

/// Runs each check on both backends, as `sqlite::<check>` and `postgres::<check>`.
macro_rules! on_both_backends {
    ($($check:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $check() {
                    let (store, _guard) = super::sqlite_store().await;
                    super::$check(&store).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $check() {
                    let (store, _guard) = super::postgres_store().await;
                    super::$check(&store).await;
                }
            )*
        }
    };
}

on_both_backends![
    check_unique_email,
    check_idempotent_registration,
    check_rotation,
    check_reuse_revokes_the_session,
    check_concurrent_rotation_rotates_once,
    check_unknown_and_expired_tokens_are_invalid,
    check_revoke,
    check_list_sessions,
    check_touch,
    check_grant_admin,
    check_revoked_since_and_purge,
    check_events,
];

// ---------------------------------------------------------------- helpers --

fn email(s: &str) -> Email {
    Email::parse(s).expect("valid email")
}

fn name(s: &str) -> DisplayName {
    DisplayName::parse(s).expect("valid name")
}

/// The cause of the changes the checks make: their events are only looked
/// at by `check_events`.
const CAUSE: Cause<'static> = Cause {
    request_id: Some("test"),
    actor: ActedBy::Subject,
};

/// A stand-in for an argon2 hash: the store never looks inside it.
const HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g";

async fn user(store: &AuthStore, address: &str) -> actors::auth::model::User {
    match store
        .create_user(CAUSE, &email(address), &name("Ann"), HASH, Role::User, None)
        .await
        .expect("store")
    {
        CreateUser::Created(user) => user,
        CreateUser::EmailTaken => panic!("{address} taken"),
    }
}

fn client() -> ClientInfo {
    ClientInfo::new(Some("test-agent/1.0"), Some(IpAddr::from([192, 0, 2, 7])))
}

fn token() -> RefreshToken {
    RefreshToken::generate().expect("random")
}

// ----------------------------------------------------------------- checks --

async fn check_unique_email(store: &AuthStore) {
    let ann = user(store, "ann@example.com").await;
    assert_eq!(ann.role, Role::User);
    // The email is the parsed one: trimmed and lowercased, so this is the same.
    let again = store
        .create_user(
            CAUSE,
            &email(" ANN@Example.com "),
            &name("Other"),
            HASH,
            Role::User,
            None,
        )
        .await
        .expect("store");
    assert!(matches!(again, CreateUser::EmailTaken), "{again:?}");

    let (found, hash) = store
        .find_user_by_email(&email("ann@example.com"))
        .await
        .expect("store")
        .expect("found");
    assert_eq!(found, ann);
    assert_eq!(hash, HASH);
    assert_eq!(
        store.find_user_by_id(ann.id).await.expect("store"),
        Some(ann.clone())
    );
    assert_eq!(
        store
            .find_user_by_email(&email("bob@example.com"))
            .await
            .expect("store"),
        None
    );
    assert_eq!(
        store.find_user_by_id(Uuid::now_v7()).await.expect("store"),
        None
    );

    store
        .set_password_hash(ann.id, "$argon2id$new")
        .await
        .expect("store");
    let (_, hash) = store
        .find_user_by_email(&email("ann@example.com"))
        .await
        .expect("store")
        .expect("found");
    assert_eq!(hash, "$argon2id$new");
}

async fn check_idempotent_registration(store: &AuthStore) {
    let key = IdempotencyKey {
        scope: "anonymous:POST /api/v1/auth/register".into(),
        key: "k-1".into(),
        request_hash: "fingerprint".into(),
    };
    assert_eq!(store.claim(&key).await.expect("store"), Claim::Claimed);
    assert_eq!(store.claim(&key).await.expect("store"), Claim::InFlight);
    let created = store
        .create_user(
            CAUSE,
            &email("kim@example.com"),
            &name("Kim"),
            HASH,
            Role::User,
            Some(&key),
        )
        .await
        .expect("store");
    let CreateUser::Created(kim) = created else {
        panic!("not created: {created:?}");
    };
    match store.claim(&key).await.expect("store") {
        Claim::Replay { status, body } => {
            assert_eq!(status, 201);
            let body: serde_json::Value = serde_json::from_slice(&body).expect("json");
            assert_eq!(body["id"], kim.id.to_string());
            assert_eq!(body["email"], "kim@example.com");
            assert!(body.get("password_hash").is_none());
        }
        other => panic!("expected a replay, got {other:?}"),
    }
    // A taken email with a key leaves the key claimed, for the caller to release.
    let other = IdempotencyKey {
        key: "k-2".into(),
        ..key.clone()
    };
    assert_eq!(store.claim(&other).await.expect("store"), Claim::Claimed);
    let taken = store
        .create_user(
            CAUSE,
            &email("kim@example.com"),
            &name("Kim"),
            HASH,
            Role::User,
            Some(&other),
        )
        .await
        .expect("store");
    assert!(matches!(taken, CreateUser::EmailTaken));
    store.release(&other).await.expect("store");
    assert_eq!(store.claim(&other).await.expect("store"), Claim::Claimed);
}

async fn check_rotation(store: &AuthStore) {
    let ann = user(store, "ann@example.com").await;
    let first = token();
    let session = store
        .create_session(CAUSE, ann.id, &first.hash(), DAY, &client())
        .await
        .expect("store");
    assert_eq!(session.user_id, ann.id);
    assert_eq!(session.user_agent.as_deref(), Some("test-agent/1.0"));
    assert_eq!(session.ip.as_deref(), Some("192.0.2.7"));
    assert_eq!(
        store.get_session(session.id).await.expect("store"),
        Some(session.clone())
    );

    let second = token();
    let rotated = store
        .rotate_refresh(CAUSE, &first.hash(), &second.hash(), 2 * DAY)
        .await
        .expect("store");
    let Rotation::Rotated(after) = rotated else {
        panic!("not rotated: {rotated:?}");
    };
    assert_eq!(after.id, session.id);
    assert!(after.expires_at > session.expires_at + time::Duration::hours(23));
    assert!(after.last_used_at >= session.last_used_at);
    assert_eq!(
        store.get_session(session.id).await.expect("store"),
        Some(after)
    );

    let third = token();
    assert!(matches!(
        store
            .rotate_refresh(CAUSE, &second.hash(), &third.hash(), DAY)
            .await
            .expect("store"),
        Rotation::Rotated(_)
    ));
}

async fn check_reuse_revokes_the_session(store: &AuthStore) {
    let ann = user(store, "ann@example.com").await;
    let (first, second, third) = (token(), token(), token());
    let session = store
        .create_session(CAUSE, ann.id, &first.hash(), DAY, &client())
        .await
        .expect("store");
    assert!(matches!(
        store
            .rotate_refresh(CAUSE, &first.hash(), &second.hash(), DAY)
            .await
            .expect("store"),
        Rotation::Rotated(_)
    ));
    // The spent token comes back: the session ends.
    assert_eq!(
        store
            .rotate_refresh(CAUSE, &first.hash(), &third.hash(), DAY)
            .await
            .expect("store"),
        Rotation::Reused {
            session_id: session.id,
            user_id: ann.id
        }
    );
    let revoked = store
        .get_session(session.id)
        .await
        .expect("store")
        .expect("exists");
    assert!(revoked.revoked_at.is_some());
    // Its current token is dead too, and the failed attempt issued nothing.
    assert_eq!(
        store
            .rotate_refresh(CAUSE, &second.hash(), &third.hash(), DAY)
            .await
            .expect("store"),
        Rotation::Invalid
    );
    assert_eq!(
        store
            .rotate_refresh(CAUSE, &third.hash(), &token().hash(), DAY)
            .await
            .expect("store"),
        Rotation::Invalid
    );
    // Replaying the spent token again still reports reuse (for the audit log).
    assert!(matches!(
        store
            .rotate_refresh(CAUSE, &first.hash(), &token().hash(), DAY)
            .await
            .expect("store"),
        Rotation::Reused { .. }
    ));
    let (listed, total) = store
        .list_sessions(ann.id, PageRequest::default())
        .await
        .expect("store");
    assert!(listed.is_empty());
    assert_eq!(total, 0);
}

async fn check_concurrent_rotation_rotates_once(store: &AuthStore) {
    let ann = user(store, "ann@example.com").await;
    let first = token();
    store
        .create_session(CAUSE, ann.id, &first.hash(), DAY, &client())
        .await
        .expect("store");
    let attempts: Vec<_> = (0..4)
        .map(|_| {
            let (store, presented) = (store.clone(), first.hash());
            tokio::spawn(async move {
                store
                    .rotate_refresh(CAUSE, &presented, &token().hash(), DAY)
                    .await
                    .expect("store")
            })
        })
        .collect();
    let mut outcomes = Vec::new();
    for attempt in attempts {
        outcomes.push(attempt.await.expect("task"));
    }
    let rotated = outcomes
        .iter()
        .filter(|o| matches!(o, Rotation::Rotated(_)))
        .count();
    let reused = outcomes
        .iter()
        .filter(|o| matches!(o, Rotation::Reused { .. }))
        .count();
    assert_eq!((rotated, reused), (1, 3), "{outcomes:?}");
    // Only the first reuse changed the session: one event.
    let revocations = store
        .outbox()
        .claim("test", 100, Duration::from_secs(30))
        .await
        .expect("outbox")
        .iter()
        .filter(|r| r.event.topic.as_str() == "session.revoked")
        .count();
    assert_eq!(revocations, 1);
}

async fn check_unknown_and_expired_tokens_are_invalid(store: &AuthStore) {
    assert_eq!(
        store
            .rotate_refresh(CAUSE, &token().hash(), &token().hash(), DAY)
            .await
            .expect("store"),
        Rotation::Invalid
    );
    let ann = user(store, "ann@example.com").await;
    let first = token();
    let session = store
        .create_session(CAUSE, ann.id, &first.hash(), Duration::ZERO, &client())
        .await
        .expect("store");
    assert_eq!(
        store
            .rotate_refresh(CAUSE, &first.hash(), &token().hash(), DAY)
            .await
            .expect("store"),
        Rotation::Invalid
    );
    // Refused, not revoked: nothing happened to it.
    let after = store
        .get_session(session.id)
        .await
        .expect("store")
        .expect("exists");
    assert_eq!(after.revoked_at, None);
    assert_eq!(after.expires_at, session.expires_at);
}

async fn check_revoke(store: &AuthStore) {
    let ann = user(store, "ann@example.com").await;
    let first = token();
    let session = store
        .create_session(CAUSE, ann.id, &first.hash(), DAY, &client())
        .await
        .expect("store");
    assert!(store
        .revoke_session(session.id, CAUSE, RevokeReason::Revoked)
        .await
        .expect("store"));
    assert!(!store
        .revoke_session(session.id, CAUSE, RevokeReason::Revoked)
        .await
        .expect("store"));
    assert!(!store
        .revoke_session(Uuid::now_v7(), CAUSE, RevokeReason::Revoked)
        .await
        .expect("store"));
    let revoked = store
        .get_session(session.id)
        .await
        .expect("store")
        .expect("exists");
    assert!(revoked.revoked_at.is_some());
    assert!(!revoked.is_active(OffsetDateTime::now_utc()));
    assert_eq!(
        store
            .rotate_refresh(CAUSE, &first.hash(), &token().hash(), DAY)
            .await
            .expect("store"),
        Rotation::Invalid
    );
}

async fn check_list_sessions(store: &AuthStore) {
    let ann = user(store, "ann@example.com").await;
    let bob = user(store, "bob@example.com").await;
    let mut ids = Vec::new();
    for _ in 0..5 {
        let s = store
            .create_session(CAUSE, ann.id, &token().hash(), DAY, &client())
            .await
            .expect("store");
        ids.push(s.id);
    }
    store
        .create_session(CAUSE, bob.id, &token().hash(), DAY, &client())
        .await
        .expect("store");
    // Expired and revoked sessions are not listed.
    store
        .create_session(CAUSE, ann.id, &token().hash(), Duration::ZERO, &client())
        .await
        .expect("store");
    assert!(store
        .revoke_session(ids[0], CAUSE, RevokeReason::Revoked)
        .await
        .expect("store"));

    let page = PageRequest { page: 1, limit: 3 };
    let (first, total) = store.list_sessions(ann.id, page).await.expect("store");
    assert_eq!(total, 4);
    let listed: Vec<_> = first.iter().map(|s| s.id).collect();
    assert_eq!(listed, vec![ids[4], ids[3], ids[2]], "newest first");
    assert!(first.iter().all(|s| s.user_id == ann.id));
    let (second, _) = store
        .list_sessions(ann.id, PageRequest { page: 2, limit: 3 })
        .await
        .expect("store");
    assert_eq!(
        second.iter().map(|s| s.id).collect::<Vec<_>>(),
        vec![ids[1]]
    );
    let (bobs, total) = store
        .list_sessions(bob.id, PageRequest::default())
        .await
        .expect("store");
    assert_eq!((bobs.len(), total), (1, 1));
}

async fn check_touch(store: &AuthStore) {
    let ann = user(store, "ann@example.com").await;
    let session = store
        .create_session(CAUSE, ann.id, &token().hash(), DAY, &client())
        .await
        .expect("store");
    // Within the granularity: nothing is written.
    store
        .touch_session(session.id, Duration::from_secs(60))
        .await
        .expect("store");
    let same = store
        .get_session(session.id)
        .await
        .expect("store")
        .expect("exists");
    assert_eq!(same.last_used_at, session.last_used_at);
    tokio::time::sleep(Duration::from_millis(5)).await;
    store
        .touch_session(session.id, Duration::from_millis(1))
        .await
        .expect("store");
    let touched = store
        .get_session(session.id)
        .await
        .expect("store")
        .expect("exists");
    assert!(touched.last_used_at > session.last_used_at);
}

async fn check_grant_admin(store: &AuthStore) {
    let root = email("root@example.com");
    assert_eq!(
        store.grant_admin(&root, None).await.expect("store"),
        GrantAdmin::NoSuchUser
    );
    let created = store
        .grant_admin(&root, Some((&name("Administrator"), HASH)))
        .await
        .expect("store");
    let GrantAdmin::Created(admin) = created else {
        panic!("not created: {created:?}");
    };
    assert_eq!(admin.role, Role::Admin);
    assert_eq!(
        store
            .grant_admin(&root, Some((&name("Other"), "other-hash")))
            .await
            .expect("store"),
        GrantAdmin::AlreadyAdmin(admin.clone())
    );
    // The existing admin's password was not touched.
    let (_, hash) = store
        .find_user_by_email(&root)
        .await
        .expect("store")
        .expect("found");
    assert_eq!(hash, HASH);

    let ann = user(store, "ann@example.com").await;
    let promoted = store
        .grant_admin(&email("ann@example.com"), None)
        .await
        .expect("store");
    let GrantAdmin::Promoted(promoted) = promoted else {
        panic!("not promoted: {promoted:?}");
    };
    assert_eq!(promoted.id, ann.id);
    assert_eq!(promoted.role, Role::Admin);
    assert_eq!(
        store
            .find_user_by_id(ann.id)
            .await
            .expect("store")
            .map(|u| u.role),
        Some(Role::Admin)
    );
}

async fn check_revoked_since_and_purge(store: &AuthStore) {
    let ann = user(store, "ann@example.com").await;
    let before = OffsetDateTime::now_utc() - time::Duration::seconds(1);
    let live = store
        .create_session(CAUSE, ann.id, &token().hash(), DAY, &client())
        .await
        .expect("store");
    let revoked = store
        .create_session(CAUSE, ann.id, &token().hash(), DAY, &client())
        .await
        .expect("store");
    let expired_token = token();
    let expired = store
        .create_session(
            CAUSE,
            ann.id,
            &expired_token.hash(),
            Duration::ZERO,
            &client(),
        )
        .await
        .expect("store");
    assert!(store
        .revoke_session(revoked.id, CAUSE, RevokeReason::Revoked)
        .await
        .expect("store"));

    let recent = store.revoked_since(before).await.expect("store");
    assert_eq!(
        recent.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
        vec![revoked.id]
    );
    assert!(store
        .revoked_since(OffsetDateTime::now_utc() + time::Duration::seconds(1))
        .await
        .expect("store")
        .is_empty());

    let purged = store
        .purge_sessions(OffsetDateTime::now_utc())
        .await
        .expect("store");
    assert_eq!(purged, 1);
    assert_eq!(store.get_session(expired.id).await.expect("store"), None);
    assert!(store.get_session(live.id).await.expect("store").is_some());
    assert!(store
        .get_session(revoked.id)
        .await
        .expect("store")
        .is_some());
    // Its refresh tokens went with it.
    assert_eq!(
        store
            .rotate_refresh(CAUSE, &expired_token.hash(), &token().hash(), DAY)
            .await
            .expect("store"),
        Rotation::Invalid
    );
}

/// Every change others must hear of is in the outbox, in order, with the
/// request and the actor that caused it; a change that did not happen
/// (taken email, a session revoked already, a rotation) wrote nothing; no
/// event holds a password hash or a refresh token.
async fn check_events(store: &AuthStore) {
    let request = |id: &'static str, actor: ActedBy| Cause::request(id, actor);
    let eve_email = email("eve@example.com");
    let created = store
        .create_user(
            request("r-register", ActedBy::Subject),
            &eve_email,
            &name("Eve"),
            HASH,
            Role::User,
            None,
        )
        .await
        .expect("store");
    let CreateUser::Created(eve) = created else {
        panic!("not created: {created:?}");
    };
    let taken = store
        .create_user(
            request("r-taken", ActedBy::Subject),
            &eve_email,
            &name("Other"),
            HASH,
            Role::User,
            None,
        )
        .await
        .expect("store");
    assert!(matches!(taken, CreateUser::EmailTaken), "{taken:?}");

    // Logged in, then revoked by someone else (an admin): once only.
    let first = token();
    let login = store
        .create_session(
            request("r-login", ActedBy::User(eve.id)),
            eve.id,
            &first.hash(),
            DAY,
            &client(),
        )
        .await
        .expect("store");
    let admin = Uuid::now_v7();
    for id in ["r-revoke", "r-revoke-again"] {
        store
            .revoke_session(
                login.id,
                request(id, ActedBy::User(admin)),
                RevokeReason::Revoked,
            )
            .await
            .expect("store");
    }

    // A rotation announces nothing; the reuse of its spent token revokes the
    // session, announced once, in the owner's name.
    let (second, third) = (token(), token());
    let reused = store
        .create_session(
            request("r-login-2", ActedBy::User(eve.id)),
            eve.id,
            &second.hash(),
            DAY,
            &client(),
        )
        .await
        .expect("store");
    let rotation = store
        .rotate_refresh(
            request("r-refresh", ActedBy::Subject),
            &second.hash(),
            &third.hash(),
            DAY,
        )
        .await
        .expect("store");
    assert!(matches!(rotation, Rotation::Rotated(_)), "{rotation:?}");
    for id in ["r-reuse", "r-reuse-again"] {
        let rotation = store
            .rotate_refresh(
                request(id, ActedBy::Subject),
                &second.hash(),
                &token().hash(),
                DAY,
            )
            .await
            .expect("store");
        assert!(matches!(rotation, Rotation::Reused { .. }), "{rotation:?}");
    }

    let fourth = token();
    let logout = store
        .create_session(
            request("r-login-3", ActedBy::User(eve.id)),
            eve.id,
            &fourth.hash(),
            DAY,
            &client(),
        )
        .await
        .expect("store");
    assert!(store
        .revoke_session(
            logout.id,
            request("r-logout", ActedBy::User(eve.id)),
            RevokeReason::Logout,
        )
        .await
        .expect("store"));

    // An admin created by the operator's command: no request, no actor.
    let created = store
        .grant_admin(
            &email("root@example.com"),
            Some((&name("Administrator"), HASH)),
        )
        .await
        .expect("store");
    let GrantAdmin::Created(root) = created else {
        panic!("not created: {created:?}");
    };

    let records = store
        .outbox()
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
            )
        })
        .collect();
    assert_eq!(
        seen,
        vec![
            ("user.registered", Some("r-register"), Some(eve.id)),
            ("user.logged_in", Some("r-login"), Some(eve.id)),
            ("session.revoked", Some("r-revoke"), Some(admin)),
            ("user.logged_in", Some("r-login-2"), Some(eve.id)),
            ("session.revoked", Some("r-reuse"), Some(eve.id)),
            ("user.logged_in", Some("r-login-3"), Some(eve.id)),
            ("session.revoked", Some("r-logout"), Some(eve.id)),
            ("user.registered", None, None),
        ]
    );

    let data: Vec<_> = records.iter().map(|r| r.event.data.clone()).collect();
    assert_eq!(
        data[0],
        serde_json::to_value(&eve).expect("json"),
        "the public user"
    );
    let mut fields: Vec<_> = data[0]
        .as_object()
        .expect("object")
        .keys()
        .cloned()
        .collect();
    fields.sort();
    assert_eq!(fields, ["created_at", "email", "id", "name", "role"]);
    assert_eq!(
        data[1],
        serde_json::json!({
            "user_id": eve.id,
            "session_id": login.id,
            "ip": "192.0.2.7",
            "user_agent": "test-agent/1.0",
        })
    );
    let revoked = |session: Uuid, reason: &str| serde_json::json!({"session_id": session, "user_id": eve.id, "reason": reason});
    assert_eq!(data[2], revoked(login.id, "revoked"));
    assert_eq!(data[4], revoked(reused.id, "refresh_token_reused"));
    assert_eq!(data[6], revoked(logout.id, "logout"));
    assert_eq!(data[7]["id"], root.id.to_string());
    assert_eq!(data[7]["role"], "admin");

    let secrets: Vec<String> = [&first, &second, &third, &fourth]
        .iter()
        .flat_map(|t| [t.as_str().to_owned(), t.hash().as_str().to_owned()])
        .chain([HASH.to_owned()])
        .collect();
    for record in &records {
        let json = record.event.to_json().expect("json");
        assert!(!json.contains("password"), "{json}");
        for secret in &secrets {
            assert!(!json.contains(secret.as_str()), "a secret in {json}");
        }
    }
}

#[test]
fn password_type_is_usable_from_outside() {
    // The bootstrap CLI builds one from what it read.
    assert!(Password::new("twelve chars").is_ok());
}
