//! The key-value store contract: every `contract_*` function below runs
//! against [`MemoryKv`] and against [`RedisKv`], so the two behave alike.
//!
//! Redis comes from `STAGEWORKS_TEST_REDIS_URL` (default
//! `redis://127.0.0.1:6379`). If it is unreachable the Redis tests fail with
//! a message saying so: a suite that silently skipped them would report
//! green without having tested Redis at all.
//!
//! Each test uses its own key prefix (`stageworks-test:<uuid>:`) and deletes
//! every key under it at the end (SCAN + DEL), pass or fail, so runs sharing
//! one Redis neither collide nor leave litter.

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actors::kv::{KvError, KvStore, MemoryKv, RateLimit, RedisKv, RedisSettings};
use fred::prelude::{ClientLike, Config, KeysInterface, LuaInterface};
use futures::StreamExt;

// ---------------------------------------------------------------- harness --

fn redis_url() -> String {
    std::env::var("STAGEWORKS_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

fn unique_prefix() -> String {
    format!("stageworks-test:{}:", uuid::Uuid::now_v7())
}

fn redis_settings(prefix: &str) -> RedisSettings {
    RedisSettings {
        url: redis_url(),
        pool_size: 2,
        command_timeout: Duration::from_secs(2),
        connect_timeout: Duration::from_secs(3),
        key_prefix: prefix.to_owned(),
    }
}

async fn redis_store(prefix: &str) -> RedisKv {
    match RedisKv::connect(&redis_settings(prefix)).await {
        Ok(kv) => kv,
        Err(e) => panic!(
            "the Redis contract tests need a Redis at {} (set STAGEWORKS_TEST_REDIS_URL to \
             point elsewhere), and connecting failed: {e}",
            redis_url()
        ),
    }
}

/// A plain fred client, for looking behind the store's back and cleaning up.
async fn raw_redis() -> fred::prelude::Client {
    let config = Config::from_url(&redis_url()).expect("STAGEWORKS_TEST_REDIS_URL is a valid URL");
    let client = fred::prelude::Client::new(config, None, None, None);
    client
        .init()
        .await
        .unwrap_or_else(|e| panic!("cannot connect to Redis at {}: {e}", redis_url()));
    client
}

/// Deletes every key under `prefix` (SCAN MATCH + DEL).
async fn delete_prefixed(prefix: &str) {
    let client = raw_redis().await;
    // The prefixes made here contain no glob characters, so no escaping.
    let keys: Vec<fred::types::Key> = client
        .scan_buffered(format!("{prefix}*"), Some(500), None)
        .filter_map(|key| async move { key.ok() })
        .collect()
        .await;
    for chunk in keys.chunks(500) {
        let _: i64 = client
            .del(chunk.to_vec())
            .await
            .expect("DEL of the test keys");
    }
    let _ = client.quit().await;
}

/// Runs a contract against a fresh memory store.
async fn run_on_memory<F, Fut>(contract: F)
where
    F: FnOnce(Arc<dyn KvStore>) -> Fut,
    Fut: Future<Output = ()>,
{
    let kv = Arc::new(MemoryKv::new(10_000, unique_prefix()));
    let _reaper = kv.spawn_reaper(Duration::from_millis(50));
    assert_eq!(kv.name(), "memory");
    contract(kv).await;
}

/// Runs a contract against Redis under a fresh prefix, then deletes the
/// prefix's keys whether the contract passed or panicked.
async fn run_on_redis<F, Fut>(contract: F)
where
    F: FnOnce(Arc<dyn KvStore>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let prefix = unique_prefix();
    let kv = Arc::new(redis_store(&prefix).await);
    assert_eq!(kv.name(), "redis");
    let outcome = tokio::spawn(contract(kv)).await;
    delete_prefixed(&prefix).await;
    if let Err(e) = outcome {
        match e.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            Err(e) => panic!("contract task failed: {e}"),
        }
    }
}

/// Calls `check` until it returns true or `within` has passed.
async fn eventually<F, Fut>(within: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if check().await {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what} did not happen within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One `#[tokio::test]` per contract and store: `memory::contract_x` and
/// `redis::contract_x`.
macro_rules! contracts {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::run_on_memory(super::$name).await
                }
            )*
        }
        mod redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::run_on_redis(super::$name).await
                }
            )*
        }
    };
}

contracts![
    contract_get_set_round_trip,
    contract_ttl_expiry,
    contract_set_if_absent,
    contract_delete,
    contract_incr_is_atomic,
    contract_incr_ttl_is_set_on_create_only,
    contract_incr_rejects_non_counters,
    contract_rate_limit_burst_then_refuse,
    contract_rate_limit_is_atomic,
    contract_rate_limit_rejects_invalid_limits,
    contract_ping,
];

// -------------------------------------------------------------- contracts --

async fn contract_get_set_round_trip(kv: Arc<dyn KvStore>) {
    assert_eq!(kv.get("missing").await.expect("get"), None);

    kv.set("greeting", b"hello", None).await.expect("set");
    assert_eq!(
        kv.get("greeting").await.expect("get"),
        Some(b"hello".to_vec())
    );

    kv.set("greeting", b"bonjour", None)
        .await
        .expect("overwrite");
    assert_eq!(
        kv.get("greeting").await.expect("get"),
        Some(b"bonjour".to_vec())
    );

    let binary = vec![0u8, 255, 10, 13, 0, 128];
    kv.set("binary", &binary, None).await.expect("set binary");
    assert_eq!(kv.get("binary").await.expect("get"), Some(binary));

    kv.set("empty", b"", None).await.expect("set empty");
    assert_eq!(kv.get("empty").await.expect("get"), Some(Vec::new()));

    kv.set("spaces and ünïcode:{x}", b"ok", None)
        .await
        .expect("set odd key");
    assert_eq!(
        kv.get("spaces and ünïcode:{x}").await.expect("get"),
        Some(b"ok".to_vec())
    );
}

async fn contract_ttl_expiry(kv: Arc<dyn KvStore>) {
    let ttl = Duration::from_millis(250);
    kv.set("short", b"v", Some(ttl)).await.expect("set");
    assert_eq!(kv.get("short").await.expect("get"), Some(b"v".to_vec()));
    let left = kv.ttl("short").await.expect("ttl").expect("has a ttl");
    assert!(left > Duration::ZERO && left <= ttl, "ttl {left:?}");

    eventually(Duration::from_secs(3), "expiry of `short`", || {
        let kv = kv.clone();
        async move { kv.get("short").await.expect("get").is_none() }
    })
    .await;
    assert_eq!(kv.ttl("short").await.expect("ttl"), None);

    kv.set("forever", b"v", None).await.expect("set");
    assert_eq!(kv.ttl("forever").await.expect("ttl"), None, "no ttl");

    // A plain set replaces the TTL with none, as Redis' SET does.
    kv.set("was_short", b"1", Some(ttl)).await.expect("set");
    kv.set("was_short", b"2", None).await.expect("set");
    assert_eq!(kv.ttl("was_short").await.expect("ttl"), None);
    tokio::time::sleep(ttl + Duration::from_millis(100)).await;
    assert_eq!(kv.get("was_short").await.expect("get"), Some(b"2".to_vec()));

    assert_eq!(kv.ttl("missing").await.expect("ttl"), None);
}

async fn contract_set_if_absent(kv: Arc<dyn KvStore>) {
    assert!(kv.set_if_absent("k", b"first", None).await.expect("nx"));
    assert!(!kv.set_if_absent("k", b"second", None).await.expect("nx"));
    assert_eq!(kv.get("k").await.expect("get"), Some(b"first".to_vec()));

    assert!(kv.delete("k").await.expect("delete"));
    assert!(kv.set_if_absent("k", b"third", None).await.expect("nx"));
    assert_eq!(kv.get("k").await.expect("get"), Some(b"third".to_vec()));

    // An expired key is absent.
    let ttl = Duration::from_millis(200);
    assert!(kv
        .set_if_absent("lease", b"a", Some(ttl))
        .await
        .expect("nx"));
    assert!(!kv
        .set_if_absent("lease", b"b", Some(ttl))
        .await
        .expect("nx"));
    let left = kv
        .ttl("lease")
        .await
        .expect("ttl")
        .expect("lease has a ttl");
    assert!(left <= ttl, "ttl {left:?}");
    eventually(Duration::from_secs(3), "expiry of `lease`", || {
        let kv = kv.clone();
        async move { kv.get("lease").await.expect("get").is_none() }
    })
    .await;
    assert!(kv.set_if_absent("lease", b"c", None).await.expect("nx"));
    assert_eq!(kv.get("lease").await.expect("get"), Some(b"c".to_vec()));
}

async fn contract_delete(kv: Arc<dyn KvStore>) {
    assert!(!kv.delete("nothing").await.expect("delete"));
    kv.set("doomed", b"v", None).await.expect("set");
    assert!(kv.delete("doomed").await.expect("delete"));
    assert!(!kv.delete("doomed").await.expect("delete again"));
    assert_eq!(kv.get("doomed").await.expect("get"), None);
}

async fn contract_incr_is_atomic(kv: Arc<dyn KvStore>) {
    let ttl = Duration::from_secs(60);
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let kv = kv.clone();
            tokio::spawn(async move { kv.incr("hits", 1, ttl).await.expect("incr") })
        })
        .collect();
    let mut seen = BTreeSet::new();
    for task in tasks {
        seen.insert(task.await.expect("incr task"));
    }
    assert_eq!(
        seen,
        (1..=50).collect::<BTreeSet<i64>>(),
        "each increment saw its own value"
    );
    assert_eq!(kv.get("hits").await.expect("get"), Some(b"50".to_vec()));

    assert_eq!(kv.incr("hits", -8, ttl).await.expect("decr"), 42);
    assert_eq!(kv.incr("fresh", -3, ttl).await.expect("decr fresh"), -3);
}

async fn contract_incr_ttl_is_set_on_create_only(kv: Arc<dyn KvStore>) {
    let ttl = Duration::from_millis(300);
    assert_eq!(kv.incr("window", 1, ttl).await.expect("incr"), 1);
    let first = kv
        .ttl("window")
        .await
        .expect("ttl")
        .expect("counter has a ttl");
    assert!(first <= ttl, "ttl {first:?}");

    tokio::time::sleep(Duration::from_millis(120)).await;
    assert_eq!(
        kv.incr("window", 1, Duration::from_secs(60))
            .await
            .expect("incr"),
        2
    );
    let second = kv
        .ttl("window")
        .await
        .expect("ttl")
        .expect("still has a ttl");
    assert!(
        second <= first,
        "ttl was extended: {first:?} then {second:?}"
    );

    eventually(Duration::from_secs(3), "expiry of the counter", || {
        let kv = kv.clone();
        async move { kv.get("window").await.expect("get").is_none() }
    })
    .await;
    assert_eq!(
        kv.incr("window", 1, ttl).await.expect("incr"),
        1,
        "a new window"
    );
}

async fn contract_incr_rejects_non_counters(kv: Arc<dyn KvStore>) {
    kv.set("text", b"not a number", None).await.expect("set");
    let err = kv
        .incr("text", 1, Duration::from_secs(5))
        .await
        .expect_err("incr of text");
    assert!(matches!(err, KvError::Other(_)), "{err:?}");

    kv.set("big", i64::MAX.to_string().as_bytes(), None)
        .await
        .expect("set");
    let err = kv
        .incr("big", 1, Duration::from_secs(5))
        .await
        .expect_err("overflow");
    assert!(matches!(err, KvError::Other(_)), "{err:?}");
}

async fn contract_rate_limit_burst_then_refuse(kv: Arc<dyn KvStore>) {
    // One request every 500 ms, 5 at once.
    let limit = RateLimit::new(5, Duration::from_millis(2500));
    let interval = limit.period / limit.count;
    for expected_remaining in (0..5).rev() {
        let d = kv
            .rate_limit("login:1.2.3.4", limit)
            .await
            .expect("rate limit");
        assert!(d.allowed, "request within the burst refused: {d:?}");
        assert_eq!(d.limit, 5);
        assert_eq!(d.remaining, expected_remaining, "{d:?}");
        assert_eq!(d.retry_after, Duration::ZERO);
        assert!(d.reset_after <= limit.period, "{d:?}");
    }

    let refused = kv
        .rate_limit("login:1.2.3.4", limit)
        .await
        .expect("rate limit");
    assert!(
        !refused.allowed,
        "the request past the burst was admitted: {refused:?}"
    );
    assert_eq!(refused.remaining, 0);
    assert!(
        refused.retry_after > Duration::ZERO && refused.retry_after <= interval,
        "{refused:?}"
    );
    assert!(refused.reset_after <= limit.period, "{refused:?}");

    // Another key has its own budget.
    let other = kv
        .rate_limit("login:5.6.7.8", limit)
        .await
        .expect("rate limit");
    assert!(other.allowed);
    assert_eq!(other.remaining, 4);

    // One interval later, one more request is admitted, and only one.
    tokio::time::sleep(refused.retry_after + Duration::from_millis(30)).await;
    let again = kv
        .rate_limit("login:1.2.3.4", limit)
        .await
        .expect("rate limit");
    assert!(again.allowed, "not admitted after retry_after: {again:?}");
    assert_eq!(again.remaining, 0);
    let next = kv
        .rate_limit("login:1.2.3.4", limit)
        .await
        .expect("rate limit");
    assert!(!next.allowed, "{next:?}");
}

async fn contract_rate_limit_is_atomic(kv: Arc<dyn KvStore>) {
    let limit = RateLimit::new(10, Duration::from_secs(60));
    let tasks: Vec<_> = (0..30)
        .map(|_| {
            let kv = kv.clone();
            tokio::spawn(async move { kv.rate_limit("api", limit).await.expect("rate limit") })
        })
        .collect();
    let mut allowed = 0;
    for task in tasks {
        if task.await.expect("task").allowed {
            allowed += 1;
        }
    }
    assert_eq!(
        allowed, 10,
        "exactly `count` of 30 concurrent requests admitted"
    );
}

async fn contract_rate_limit_rejects_invalid_limits(kv: Arc<dyn KvStore>) {
    let zero = kv
        .rate_limit("bad", RateLimit::new(0, Duration::from_secs(1)))
        .await;
    assert!(matches!(zero, Err(KvError::Other(_))), "{zero:?}");
    let too_fine = kv
        .rate_limit("bad", RateLimit::new(1000, Duration::from_nanos(10)))
        .await;
    assert!(matches!(too_fine, Err(KvError::Other(_))), "{too_fine:?}");
}

async fn contract_ping(kv: Arc<dyn KvStore>) {
    let rtt = kv.ping().await.expect("ping");
    assert!(rtt < Duration::from_secs(1), "ping took {rtt:?}");
}

// ------------------------------------------------------------ Redis only --

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_rate_limit_is_shared_between_instances() {
    let prefix = unique_prefix();
    // Two separately connected stores, as two replicas would have.
    let a = redis_store(&prefix).await;
    let b = redis_store(&prefix).await;
    let limit = RateLimit::new(6, Duration::from_secs(60));
    let mut allowed = 0;
    for i in 0..12 {
        let store = if i % 2 == 0 { &a } else { &b };
        if store
            .rate_limit("shared", limit)
            .await
            .expect("rate limit")
            .allowed
        {
            allowed += 1;
        }
    }
    let a_refused = !a.rate_limit("shared", limit).await.expect("a").allowed;
    let b_refused = !b.rate_limit("shared", limit).await.expect("b").allowed;
    drop((a, b));
    delete_prefixed(&prefix).await;
    assert_eq!(allowed, 6, "the two instances shared one budget");
    assert!(a_refused && b_refused);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_keys_live_under_the_prefix() {
    let prefix = unique_prefix();
    let kv = redis_store(&prefix).await;
    kv.set("visible", b"v", None).await.expect("set");
    let raw = raw_redis().await;
    let stored: Option<String> = raw.get(format!("{prefix}visible")).await.expect("raw get");
    let bare: Option<String> = raw.get("visible").await.expect("raw get");
    let _ = raw.quit().await;
    drop(kv);
    delete_prefixed(&prefix).await;
    assert_eq!(stored.as_deref(), Some("v"));
    assert_eq!(bare, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_scripts_survive_a_script_flush() {
    let prefix = unique_prefix();
    let kv = redis_store(&prefix).await;
    let raw = raw_redis().await;
    // Forget every cached script, as a Redis restart would: EVALSHA then
    // answers NOSCRIPT and the store must fall back to EVAL. (Other tests
    // running now only take the same fallback.)
    raw.script_flush(false).await.expect("SCRIPT FLUSH");
    let limit = RateLimit::new(3, Duration::from_secs(60));
    let decision = kv.rate_limit("after-flush", limit).await;
    let counter = kv
        .incr("after-flush-counter", 2, Duration::from_secs(60))
        .await;
    let _ = raw.quit().await;
    drop(kv);
    delete_prefixed(&prefix).await;
    let decision = decision.expect("rate limit after SCRIPT FLUSH");
    assert!(decision.allowed);
    assert_eq!(decision.remaining, 2);
    assert_eq!(counter.expect("incr after SCRIPT FLUSH"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_connect_fails_fast_when_unreachable() {
    let settings = RedisSettings {
        // Port 1 (tcpmux) is closed on any sane test machine.
        url: "redis://127.0.0.1:1".into(),
        connect_timeout: Duration::from_millis(500),
        ..redis_settings("unused:")
    };
    let started = Instant::now();
    let result = RedisKv::connect(&settings).await;
    assert!(
        matches!(result, Err(KvError::Unavailable(_))),
        "{:?}",
        result.as_ref().err()
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn redis_rejects_a_bad_url() {
    let settings = RedisSettings {
        url: "not a url".into(),
        ..redis_settings("unused:")
    };
    let result = RedisKv::connect(&settings).await;
    assert!(
        matches!(result, Err(KvError::Other(_))),
        "{:?}",
        result.as_ref().err()
    );
}

// ----------------------------------------------------------- memory only --

#[tokio::test]
async fn memory_expired_keys_are_reclaimed_by_the_reaper() {
    let kv = Arc::new(MemoryKv::new(1_000, "reap:"));
    let _reaper = kv.spawn_reaper(Duration::from_millis(50));
    for i in 0..100 {
        kv.set(&format!("k{i}"), b"v", Some(Duration::from_millis(100)))
            .await
            .expect("set");
    }
    kv.set("stays", b"v", None).await.expect("set");
    assert_eq!(kv.len(), 101);
    // Nobody reads the expired keys again: only the reaper can free them.
    eventually(
        Duration::from_secs(3),
        "reclamation of expired keys",
        || {
            let kv = kv.clone();
            async move { kv.len() == 1 }
        },
    )
    .await;
    assert_eq!(kv.get("stays").await.expect("get"), Some(b"v".to_vec()));
}

#[tokio::test]
async fn memory_reaper_ends_when_the_store_is_dropped() {
    let kv = Arc::new(MemoryKv::new(10, "reap:"));
    let reaper = kv.spawn_reaper(Duration::from_millis(10));
    drop(kv);
    tokio::time::timeout(Duration::from_secs(2), reaper)
        .await
        .expect("the reaper should stop once the store is gone")
        .expect("reaper task");
}

#[tokio::test]
async fn memory_max_keys_bound_holds() {
    let kv = MemoryKv::new(10, "bound:");
    for i in 0..100 {
        let ttl = (i % 2 == 0).then_some(Duration::from_secs(60 + i));
        kv.set(&format!("k{i}"), b"v", ttl).await.expect("set");
        kv.incr(&format!("c{i}"), 1, Duration::from_secs(60))
            .await
            .expect("incr");
        assert!(kv.len() <= 10, "len {} after {i}", kv.len());
    }
    assert_eq!(kv.len(), 10);
    assert_eq!(kv.get("k99").await.expect("get"), Some(b"v".to_vec()));
    assert_eq!(kv.get("c99").await.expect("get"), Some(b"1".to_vec()));
}

// ------------------------------------------------------- reconnection --

/// Starts a throwaway `redis-server` on `port` (no persistence), waiting
/// until it answers.
async fn start_redis_server(port: u16) -> std::process::Child {
    let child = std::process::Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("redis-server on PATH");
    let addr = format!("127.0.0.1:{port}");
    eventually(Duration::from_secs(5), "redis-server start", || {
        let addr = addr.clone();
        async move { tokio::net::TcpStream::connect(addr).await.is_ok() }
    })
    .await;
    child
}

/// fred re-establishes a lost connection by itself: while the server is
/// down calls fail as unavailable within the command timeout, and once it
/// is back they succeed again with no action from the caller. Starts, kills
/// and restarts its own `redis-server` on a free port (the binary comes with
/// the machine's Redis, which the contract tests need anyway).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_reconnects_after_the_server_restarts() {
    // A port nobody listens on: this test's own server, whatever else runs.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port");
    let mut server = start_redis_server(port).await;
    let settings = RedisSettings {
        url: format!("redis://127.0.0.1:{port}"),
        command_timeout: Duration::from_millis(500),
        ..redis_settings("reconnect:")
    };
    let kv = RedisKv::connect(&settings).await.expect("connect");
    kv.set("k", b"v", None).await.expect("set while up");

    let _ = server.kill();
    let _ = server.wait();
    let started = Instant::now();
    let down = kv.get("k").await;
    assert!(matches!(down, Err(KvError::Unavailable(_))), "{down:?}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );

    let mut server = start_redis_server(port).await;
    let kv = Arc::new(kv);
    eventually(Duration::from_secs(10), "reconnection", || {
        let kv = kv.clone();
        async move { kv.set("k", b"again", None).await.is_ok() }
    })
    .await;
    // The restarted server has an empty script cache: EVALSHA falls back.
    let limit = RateLimit::new(2, Duration::from_secs(10));
    let decision = kv.rate_limit("rl", limit).await;
    let _ = server.kill();
    let _ = server.wait();
    assert!(decision.expect("rate limit after restart").allowed);
}
