//! The key-value store behind revocation lists, rate limits
//! and caches: [`MemoryKv`] in memory by default, [`RedisKv`] (through `fred`)
//! when `redis.url` is set, so replicas sharing a Redis share these.
//!
//! Callers hold an `Arc<dyn KvStore>` and never know which one they have; the
//! contract suite (`actors/tests/kv_contract.rs`) runs the same checks against
//! both, so they behave alike:
//!
//! * values are bytes; keys are strings, stored under the store's
//!   `key_prefix` (e.g. `stageworks:`) so deployments and tests sharing one
//!   Redis do not collide;
//! * a TTL is rounded to whole milliseconds, at least 1 ms (Redis' own
//!   resolution); `None` means "no expiry", and a plain `set` without a TTL
//!   removes any previous one (Redis' `SET` semantics);
//! * counters ([`KvStore::incr`]) are decimal strings, so `get` reads them
//!   back as `b"42"` in both stores; their TTL is set when the counter is
//!   created and never extended by later increments, which is what a
//!   fixed-window counter needs;
//! * rate limits ([`KvStore::rate_limit`]) use GCRA (the generic cell rate
//!   algorithm): one timestamp per key, no background refill, exact burst.
//!   Both stores run the same arithmetic (`gcra` below); Redis runs it in one Lua
//!   script on the server's clock, so replicas with skewed clocks agree.
//!
//! Errors are [`KvError::Unavailable`] (connection lost, timeout: the caller
//! answers 503 with `Retry-After`) or [`KvError::Other`] (a bad reply, a
//! script error, a value that is not a counter: a bug, 500).

pub mod memory;
pub mod reconnecting;
pub mod redis;

use std::time::Duration;

use futures::future::BoxFuture;

pub use memory::MemoryKv;
pub use reconnecting::ReconnectingRedis;
pub use redis::{check_url as check_redis_url, RedisKv};

/// What every store fails with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KvError {
    /// The store cannot be reached right now (connection refused or lost, a
    /// command timed out, the server is loading). Worth retrying later.
    #[error("key-value store unavailable: {0}")]
    Unavailable(String),
    /// Anything else: an unexpected reply, a script error, a value of the
    /// wrong kind. Retrying will not help.
    #[error("key-value store error: {0}")]
    Other(String),
}

impl From<KvError> for crate::ServiceError {
    /// An unreachable store is a 503 the client may retry after a second; the
    /// detail goes to the logs, never to the client.
    fn from(err: KvError) -> Self {
        match err {
            KvError::Unavailable(detail) => {
                tracing::warn!(error = %detail, "key-value store unavailable");
                crate::ServiceError::Unavailable {
                    message: "a backing store is unavailable, try again shortly".to_owned(),
                    retry_after: Duration::from_secs(1),
                }
            }
            KvError::Other(detail) => crate::ServiceError::Internal(detail),
        }
    }
}

/// A rate limit: at most `count` requests per `period`, all of which may
/// arrive at once (burst = `count`); after that one request is admitted every
/// `period / count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub count: u32,
    pub period: Duration,
}

impl RateLimit {
    pub fn new(count: u32, period: Duration) -> Self {
        Self { count, period }
    }
}

/// A rate limit as configured: `{ requests = 5, per = "15m" }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitSettings {
    pub requests: u32,
    #[serde(with = "humantime_serde")]
    pub per: Duration,
}

impl LimitSettings {
    pub fn rate_limit(&self) -> RateLimit {
        RateLimit::new(self.requests, self.per)
    }

    /// What is wrong with it, as `(key within the limit, message)` pairs.
    pub fn problems(&self) -> Vec<(&'static str, &'static str)> {
        let mut problems = Vec::new();
        if self.requests == 0 {
            problems.push(("requests", "must be at least 1"));
        }
        if self.per.as_micros() < u128::from(self.requests.max(1)) {
            problems.push(("per", "must allow at least a microsecond per request"));
        }
        problems
    }
}

/// The answer to one [`KvStore::rate_limit`] call, with what the
/// `RateLimit-*` and `Retry-After` headers need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateDecision {
    pub allowed: bool,
    /// The limit's `count`.
    pub limit: u32,
    /// How many more requests would be admitted right now.
    pub remaining: u32,
    /// How long until the next request would be admitted; zero if this one was.
    pub retry_after: Duration,
    /// How long until the bucket is full again (`remaining == limit`).
    pub reset_after: Duration,
}

/// Settings for [`RedisKv::connect`] (`[redis]` in the configuration).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisSettings {
    /// `redis://[[user:]password@]host[:port][/db]` (or `rediss://` with a TLS
    /// feature, `redis-cluster://`, `redis-sentinel://`: whatever fred's
    /// `Config::from_url` accepts). RESP3 is used unless the URL carries
    /// `protocol=resp2` in its query string (for servers older than 6.0); see
    /// [`redis`] for details.
    pub url: String,
    /// Number of multiplexed connections; commands are spread over them.
    pub pool_size: usize,
    /// Longest wait for any one command (including time queued while the
    /// connection is being re-established) before it fails as unavailable.
    pub command_timeout: Duration,
    /// Longest wait for the connection at start-up, and for each later
    /// reconnection attempt.
    pub connect_timeout: Duration,
    /// Prepended to every key.
    pub key_prefix: String,
}

impl Default for RedisSettings {
    fn default() -> Self {
        Self {
            url: "redis://127.0.0.1:6379".to_owned(),
            pool_size: 4,
            command_timeout: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(5),
            key_prefix: "stageworks:".to_owned(),
        }
    }
}

/// The key-value store interface. Object safe: hold it as `Arc<dyn KvStore>`.
pub trait KvStore: Send + Sync + 'static {
    /// `"memory"` or `"redis"`, for logs and `/health`.
    fn name(&self) -> &'static str;

    /// The value, or `None` if the key is missing or expired.
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Vec<u8>>, KvError>>;

    /// Stores the value, replacing any previous value and TTL.
    fn set<'a>(
        &'a self,
        key: &'a str,
        value: &'a [u8],
        ttl: Option<Duration>,
    ) -> BoxFuture<'a, Result<(), KvError>>;

    /// Stores the value only if the key is missing (or expired). Returns
    /// whether it stored it.
    fn set_if_absent<'a>(
        &'a self,
        key: &'a str,
        value: &'a [u8],
        ttl: Option<Duration>,
    ) -> BoxFuture<'a, Result<bool, KvError>>;

    /// Removes the key. Returns whether it existed (and had not expired).
    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<bool, KvError>>;

    /// Adds `by` (which may be negative) to the counter at `key`, creating it
    /// at 0 first, and returns the new value. Atomic. `ttl` is applied only
    /// when the counter has no expiry, i.e. when it is created; later
    /// increments do not extend it. Fails with [`KvError::Other`] if the
    /// value is not an integer or the result would overflow.
    fn incr<'a>(
        &'a self,
        key: &'a str,
        by: i64,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<i64, KvError>>;

    /// The time left before the key expires; `None` if the key is missing or
    /// has no expiry.
    fn ttl<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Duration>, KvError>>;

    /// Counts one request against `limit` for `key` (GCRA, atomic) and says
    /// whether it is admitted. A refused request does not count. Fails with
    /// [`KvError::Other`] if the limit is invalid (zero count, or a period
    /// shorter than one microsecond per request).
    fn rate_limit<'a>(
        &'a self,
        key: &'a str,
        limit: RateLimit,
    ) -> BoxFuture<'a, Result<RateDecision, KvError>>;

    /// One round trip to the store; answers how long it took.
    fn ping(&self) -> BoxFuture<'_, Result<Duration, KvError>>;
}

/// Shows a store to `/ready` and `/health` as `kv:memory` or `kv:redis`.
pub struct KvDependency(pub std::sync::Arc<dyn KvStore>);

impl crate::storage::Dependency for KvDependency {
    fn name(&self) -> String {
        format!("kv:{}", self.0.name())
    }

    fn ping(&self) -> BoxFuture<'_, Result<Duration, String>> {
        Box::pin(async move { self.0.ping().await.map_err(|e| e.to_string()) })
    }
}

/// A TTL in whole milliseconds as both stores apply it: rounded up, at least
/// 1 ms (Redis rejects `PX 0`), saturating instead of overflowing.
pub(crate) fn ttl_millis(ttl: Duration) -> u64 {
    let micros = ttl.as_micros();
    let millis = micros.div_ceil(1000).max(1);
    u64::try_from(millis).unwrap_or(u64::MAX)
}

/// GCRA parameters in microseconds, derived from a [`RateLimit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Gcra {
    /// The emission interval: one request is admitted every `interval`.
    pub interval: i64,
    /// `interval * count`: how far ahead of now the theoretical arrival time
    /// may run, i.e. the burst.
    pub window: i64,
    pub count: u32,
}

impl Gcra {
    pub(crate) fn new(limit: RateLimit) -> Result<Self, KvError> {
        if limit.count == 0 {
            return Err(KvError::Other("rate limit count must be at least 1".into()));
        }
        let period = i64::try_from(limit.period.as_micros()).unwrap_or(i64::MAX);
        // Integer microseconds keep the Lua script (doubles, exact below 2^53)
        // and the Rust code computing exactly the same thing.
        let interval = period / i64::from(limit.count);
        if interval == 0 {
            return Err(KvError::Other(format!(
                "rate limit of {} per {:?} is finer than one request per microsecond",
                limit.count, limit.period
            )));
        }
        Ok(Self {
            interval,
            window: interval.saturating_mul(i64::from(limit.count)),
            count: limit.count,
        })
    }
}

/// One GCRA step, the same arithmetic as the Redis script: given the stored
/// theoretical arrival time (`tat`, if any) and `now` (microseconds on any
/// clock the store keeps consistent), returns the decision and, if the
/// request is admitted, the new `tat` to store (it may expire after
/// `new_tat - now`, when the bucket is full again).
pub(crate) fn gcra(gcra: Gcra, now: i64, tat: Option<i64>) -> (RateDecision, Option<i64>) {
    let tat = tat.map_or(now, |t| t.max(now));
    let new_tat = tat.saturating_add(gcra.interval);
    let allow_at = new_tat.saturating_sub(gcra.window);
    let micros = |d: i64| Duration::from_micros(u64::try_from(d).unwrap_or(0));
    if now < allow_at {
        let decision = RateDecision {
            allowed: false,
            limit: gcra.count,
            remaining: 0,
            retry_after: micros(allow_at - now),
            reset_after: micros(tat - now),
        };
        (decision, None)
    } else {
        let remaining = (now - allow_at) / gcra.interval;
        let decision = RateDecision {
            allowed: true,
            limit: gcra.count,
            remaining: u32::try_from(remaining).unwrap_or(gcra.count),
            retry_after: Duration::ZERO,
            reset_after: micros(new_tat - now),
        };
        (decision, Some(new_tat))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gcra_admits_the_burst_then_one_per_interval() {
        let g = Gcra::new(RateLimit::new(4, Duration::from_secs(2))).expect("valid limit");
        assert_eq!(g.interval, 500_000);
        let mut tat = None;
        let now = 1_000_000_000;
        for expected_remaining in (0..4).rev() {
            let (d, new_tat) = gcra(g, now, tat);
            assert!(d.allowed);
            assert_eq!(d.remaining, expected_remaining);
            tat = new_tat;
        }
        let (d, new_tat) = gcra(g, now, tat);
        assert!(!d.allowed);
        assert_eq!(new_tat, None, "a refused request does not count");
        assert_eq!(d.remaining, 0);
        assert_eq!(d.retry_after, Duration::from_millis(500));
        assert_eq!(d.reset_after, Duration::from_secs(2));

        let (d, _) = gcra(g, now + 500_000, tat);
        assert!(d.allowed);
        assert_eq!(d.remaining, 0);
    }

    #[test]
    fn gcra_refills_fully_after_the_period() {
        let g = Gcra::new(RateLimit::new(3, Duration::from_secs(3))).expect("valid limit");
        let (_, tat) = gcra(g, 0, None);
        let (d, _) = gcra(g, 10_000_000, tat);
        assert!(d.allowed);
        assert_eq!(d.remaining, 2);
    }

    #[test]
    fn invalid_limits_are_errors() {
        assert!(Gcra::new(RateLimit::new(0, Duration::from_secs(1))).is_err());
        assert!(Gcra::new(RateLimit::new(10, Duration::from_nanos(5))).is_err());
    }

    #[test]
    fn ttls_round_up_to_a_millisecond() {
        assert_eq!(ttl_millis(Duration::ZERO), 1);
        assert_eq!(ttl_millis(Duration::from_micros(1500)), 2);
        assert_eq!(ttl_millis(Duration::from_millis(250)), 250);
        assert_eq!(ttl_millis(Duration::MAX), u64::MAX);
    }
}
