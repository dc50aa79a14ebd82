//! [`RedisKv`]: the key-value store on Redis, through a `fred` connection
//! pool, so replicas sharing one Redis share revocations and rate limits.
//!
//! # Connection behaviour (fred 10)
//!
//! * **Start-up fails fast.** [`RedisKv::connect`] builds the pool with
//!   `fail_fast = true` and waits for `init()` at most `connect_timeout`
//!   (fred also applies it to each TCP/TLS connect, and to `HELLO`/`AUTH` as
//!   the internal command timeout). If Redis is down it returns
//!   [`KvError::Unavailable`] and stops the pool's tasks: with `fail_fast`
//!   fred does not retry a first connection, and a pool nobody holds must not
//!   keep dialling. Whoever calls `connect` decides whether to retry or to
//!   refuse to start.
//! * **After start-up, fred reconnects by itself.** A lost connection is
//!   re-established with exponential backoff (100 ms doubling to 30 s, plus
//!   fred's 50 ms jitter, unlimited attempts). Commands issued meanwhile
//!   fail with [`KvError::Unavailable`]: at once when fred has no connection
//!   to route them to, or after `command_timeout` when they were queued while
//!   fred was redialling. Callers answer 503 instead of hanging, and the
//!   first command after the reconnection succeeds with nothing to reset.
//!   A connection that stops answering (no RST, e.g. a network partition) is
//!   closed and redialled after `max(3 × command_timeout, 1 s)` of silence
//!   (fred's "unresponsive" check).
//! * **Commands are written at most once** (`max_command_attempts = 1`): if a
//!   connection drops while a command is in flight, the caller gets
//!   `Unavailable` instead of a silent retry, because a retried `SET NX` or
//!   `INCRBY` may already have been applied and would answer wrongly.
//! * **RESP3** is requested (`HELLO 3`, Redis ≥ 6). fred's URL parser has no
//!   protocol option, so this module reads `protocol=resp2` (or `resp3`) from
//!   the URL's query string itself and removes it before handing the URL to
//!   fred: `redis://host:6379/0?protocol=resp2` talks RESP2 to an older
//!   server, which would otherwise refuse the `HELLO` and fail start-up.
//! * Every command is timed into `redis_command_duration_seconds{command}`
//!   and every failure counted in `redis_errors_total{command, kind}` (`kind`
//!   is `unavailable` or `other`).
//!
//! # Scripts
//!
//! The counter (`INCRBY` + expiry on create) and the GCRA rate limit run as
//! Lua scripts, so each is one atomic step on the server. Both are loaded
//! with `SCRIPT LOAD` at connect and run with `EVALSHA`; if the server
//! answers `NOSCRIPT` (it restarted, or `SCRIPT FLUSH` ran) the call falls
//! back to `EVAL`, which also caches the script again. The rate-limit script
//! reads the clock with `TIME`, so every replica measures against the same
//! (the server's) clock.

use std::future::Future;
use std::time::{Duration, Instant};

use fred::prelude::{
    Builder, ClientLike, Config, Error as FredError, ErrorKind, EventInterface, Expiration,
    KeysInterface, LuaInterface, Pool, ReconnectPolicy, SetOptions, Value,
};
use fred::types::RespVersion;
use futures::future::BoxFuture;
use futures::FutureExt;

use super::{ttl_millis, Gcra, KvError, KvStore, RateDecision, RateLimit, RedisSettings};

/// `INCRBY`, then an expiry if the key has none: atomic, so concurrent
/// creators cannot both see "no TTL" and the TTL is never extended. Redis'
/// Lua numbers are doubles: counters are exact up to 2^53.
const INCR_LUA: &str = r"
local value = redis.call('INCRBY', KEYS[1], ARGV[1])
if redis.call('PTTL', KEYS[1]) < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return value
";

/// GCRA on the server's clock, the same arithmetic as `super::gcra`.
/// ARGV: emission interval and window (interval × count), in microseconds.
/// Returns {allowed (0/1), remaining, retry_after_us, reset_after_us}.
/// Timestamps are formatted with %d because Lua would print 1.7e15 in
/// scientific notation and lose precision.
const RATE_LIMIT_LUA: &str = r"
if redis.replicate_commands then redis.replicate_commands() end
local interval = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local tat = tonumber(redis.call('GET', KEYS[1]))
if tat == nil or tat < now then tat = now end
local new_tat = tat + interval
local allow_at = new_tat - window
if now < allow_at then
  return {0, 0, allow_at - now, tat - now}
end
local ttl_ms = math.ceil((new_tat - now) / 1000)
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', string.format('%d', ttl_ms))
return {1, math.floor((now - allow_at) / interval), 0, new_tat - now}
";

/// A Lua script and the SHA1 the server knows it by.
struct Script {
    lua: &'static str,
    sha: String,
}

/// The Redis [`KvStore`]. See the module docs for connection behaviour.
pub struct RedisKv {
    pool: Pool,
    key_prefix: String,
    /// fred's own per-command timeout is authoritative; this one only
    /// guarantees no call outlives it by much, whatever fred does.
    backstop: Duration,
    incr: Script,
    rate_limit: Script,
}

/// Checks a URL the way [`RedisKv::connect`] will read it, without
/// connecting: for start-up validation, so a typo is reported at once rather
/// than retried forever. TLS (`rediss://`) is not built in.
pub fn check_url(url: &str) -> Result<(), String> {
    if url.starts_with("rediss://") {
        return Err(
            "TLS (rediss://) is not supported by this build; use redis:// on a trusted network"
                .into(),
        );
    }
    let schemes = ["redis://", "redis-cluster://", "redis-sentinel://"];
    if !schemes.iter().any(|scheme| url.starts_with(scheme)) {
        return Err("must start with redis://, redis-cluster:// or redis-sentinel://".into());
    }
    let (url, _) = split_protocol(url).map_err(|e| e.to_string())?;
    Config::from_url(&url)
        .map(|_| ())
        .map_err(|e| format!("invalid redis url: {}", e.details()))
}

impl RedisKv {
    /// Connects the pool, waiting at most `connect_timeout`, and loads the
    /// scripts. Fails with [`KvError::Unavailable`] if Redis cannot be
    /// reached, [`KvError::Other`] if the settings are invalid.
    pub async fn connect(settings: &RedisSettings) -> Result<RedisKv, KvError> {
        Self::register_metrics();
        let (url, version) = split_protocol(&settings.url)?;
        let mut config = Config::from_url(&url)
            .map_err(|e| KvError::Other(format!("invalid redis url: {}", e.details())))?;
        config.version = version.clone();
        config.fail_fast = true;
        let servers = config
            .server
            .hosts()
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
            .join(",");

        let command_timeout = settings.command_timeout.max(Duration::from_millis(1));
        let connect_timeout = settings.connect_timeout.max(Duration::from_millis(1));
        // Saturating: these come from configuration, and `Duration * n` panics on
        // overflow.
        let unresponsive_after = command_timeout
            .saturating_mul(3)
            .max(Duration::from_secs(1));

        let mut builder = Builder::from_config(config);
        builder
            .with_connection_config(|c| {
                c.connection_timeout = connect_timeout;
                c.internal_command_timeout = connect_timeout;
                c.max_command_attempts = 1;
                c.unresponsive.max_timeout = Some(unresponsive_after);
                c.unresponsive.interval = unresponsive_after / 3;
            })
            .with_performance_config(|p| p.default_command_timeout = command_timeout)
            .set_policy(ReconnectPolicy::new_exponential(0, 100, 30_000, 2));
        let pool = builder
            .build_pool(settings.pool_size)
            .map_err(|e| KvError::Other(format!("invalid redis settings: {}", e.details())))?;

        // fred bounds each step by connect_timeout already; the margin covers
        // DNS and the handshake commands following one another.
        let bound = connect_timeout.saturating_add(Duration::from_millis(250));
        match tokio::time::timeout(bound, pool.init()).await {
            Ok(Ok(_connection_task)) => {}
            Ok(Err(e)) => {
                // fred has already stopped the pool's routing tasks.
                return Err(KvError::Unavailable(format!(
                    "cannot connect to redis at {servers}: {e}"
                )));
            }
            Err(_) => {
                // The connection tasks may still be dialling: QUIT is queued
                // and ends them if they connect after all.
                stop_in_background(pool);
                return Err(KvError::Unavailable(format!(
                    "connecting to redis at {servers} took longer than {connect_timeout:?}"
                )));
            }
        }

        // The listener tasks are detached: they end when QUIT closes the
        // clients' event channels.
        for client in pool.clients() {
            drop(client.on_error(|(error, server)| async move {
                let server = server.map(|s| s.to_string()).unwrap_or_default();
                tracing::warn!(%server, %error, "redis connection error");
                Ok(())
            }));
            drop(client.on_reconnect(|server| async move {
                tracing::info!(%server, "redis connection (re)established");
                Ok(())
            }));
        }

        let load = |lua: &'static str| {
            let pool = pool.clone();
            async move {
                let sha: String = pool.script_load(lua).await.map_err(classify)?;
                Ok::<_, KvError>(Script { lua, sha })
            }
        };
        let scripts =
            async { Ok::<_, KvError>((load(INCR_LUA).await?, load(RATE_LIMIT_LUA).await?)) };
        let (incr, rate_limit) = match scripts.await {
            Ok(scripts) => scripts,
            Err(e) => {
                stop_in_background(pool);
                return Err(e);
            }
        };

        tracing::info!(%servers, pool_size = settings.pool_size, ?version, "connected to redis");
        Ok(RedisKv {
            pool,
            key_prefix: settings.key_prefix.clone(),
            backstop: command_timeout
                .saturating_mul(2)
                .saturating_add(Duration::from_millis(250)),
            incr,
            rate_limit,
        })
    }

    /// Closes the connections after the commands in flight. Dropping the
    /// store does the same in the background.
    pub async fn quit(&self) {
        let _ = self.pool.quit().await;
    }

    fn key(&self, key: &str) -> String {
        format!("{}{}", self.key_prefix, key)
    }

    /// The commands [`RedisKv::run`] times, each with its error counter at 0
    /// from the start (an alert on their rate needs the series to exist).
    const COMMANDS: [&'static str; 8] = [
        "get",
        "set",
        "set_if_absent",
        "delete",
        "incr",
        "ttl",
        "rate_limit",
        "ping",
    ];

    fn register_metrics() {
        for command in Self::COMMANDS {
            for kind in ["unavailable", "other"] {
                metrics::counter!("redis_errors_total", "command" => command, "kind" => kind)
                    .increment(0);
            }
        }
    }

    /// Runs one store operation: bounded by the backstop, timed, and its
    /// failure counted.
    async fn run<T>(
        &self,
        command: &'static str,
        op: impl Future<Output = Result<T, KvError>>,
    ) -> Result<T, KvError> {
        let started = Instant::now();
        let result = match tokio::time::timeout(self.backstop, op).await {
            Ok(result) => result,
            Err(_) => Err(KvError::Unavailable(format!(
                "redis {command} did not answer within {:?}",
                self.backstop
            ))),
        };
        metrics::histogram!("redis_command_duration_seconds", "command" => command)
            .record(started.elapsed().as_secs_f64());
        if let Err(e) = &result {
            let kind = match e {
                KvError::Unavailable(_) => "unavailable",
                KvError::Other(_) => "other",
            };
            metrics::counter!("redis_errors_total", "command" => command, "kind" => kind)
                .increment(1);
        }
        result
    }

    /// `EVALSHA`, falling back to `EVAL` (which re-caches the script) when
    /// the server has forgotten it.
    async fn eval(&self, script: &Script, key: String, args: Vec<Value>) -> Result<Value, KvError> {
        let first: Result<Value, FredError> = self
            .pool
            .evalsha(script.sha.as_str(), vec![key.clone()], args.clone())
            .await;
        match first {
            Err(e) if e.details().starts_with("NOSCRIPT") => {
                tracing::debug!(sha = %script.sha, "redis forgot a script, sending it again");
                self.pool
                    .eval(script.lua, vec![key], args)
                    .await
                    .map_err(classify)
            }
            other => other.map_err(classify),
        }
    }
}

impl Drop for RedisKv {
    fn drop(&mut self) {
        // fred's connection tasks hold their own references to the clients:
        // without QUIT they would keep the sockets, and the reconnect loops,
        // alive after the store is gone.
        stop_in_background(self.pool.clone());
    }
}

/// Sends QUIT to every client of the pool from a spawned task, if there is a
/// runtime to spawn on (there is none once it is shutting down, and then the
/// tasks die with it anyway).
fn stop_in_background(pool: Pool) {
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(async move {
            let _ = pool.quit().await;
        });
    }
}

/// Splits `protocol=resp2|resp3` off the URL's query string: fred does not
/// know the parameter. RESP3 unless told otherwise.
pub(crate) fn split_protocol(url: &str) -> Result<(String, RespVersion), KvError> {
    let Some((base, query)) = url.split_once('?') else {
        return Ok((url.to_owned(), RespVersion::RESP3));
    };
    let mut version = RespVersion::RESP3;
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        if name.eq_ignore_ascii_case("protocol") {
            version = match value.to_ascii_lowercase().as_str() {
                "resp2" | "2" => RespVersion::RESP2,
                "resp3" | "3" => RespVersion::RESP3,
                other => {
                    return Err(KvError::Other(format!(
                        "invalid redis url: protocol must be resp2 or resp3, not {other:?}"
                    )))
                }
            };
        } else {
            kept.push(pair);
        }
    }
    let url = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok((url, version))
}

/// Connection trouble, timeouts and a server that cannot serve right now are
/// [`KvError::Unavailable`] (retry later); everything else is
/// [`KvError::Other`].
fn classify(err: FredError) -> KvError {
    // fred 10 reports some connection trouble as `ErrorKind::Unknown`: with
    // no connection up, a command that cannot be retried (see
    // `max_command_attempts` above) fails at once with "Failed to route
    // command.". The contract test `redis_reconnects_after_the_server_restarts`
    // catches a rewording in a fred upgrade.
    const NO_CONNECTION: [&str; 5] = [
        "Failed to route command",
        "Too many failed write attempts",
        "Missing expected connection",
        "Client is not initialized",
        "Failed to send command to router",
    ];
    const BUSY_SERVER: [&str; 8] = [
        "LOADING",
        "BUSY",
        "MASTERDOWN",
        "TRYAGAIN",
        "CLUSTERDOWN",
        "READONLY",
        "MISCONF",
        "OOM",
    ];
    let unavailable = matches!(
        err.kind(),
        ErrorKind::IO
            | ErrorKind::Timeout
            | ErrorKind::Canceled
            | ErrorKind::Backpressure
            | ErrorKind::Routing
            | ErrorKind::Cluster
            | ErrorKind::Sentinel
            | ErrorKind::Auth
    ) || BUSY_SERVER
        .iter()
        .chain(NO_CONNECTION.iter())
        .any(|prefix| err.details().starts_with(prefix));
    if unavailable {
        KvError::Unavailable(err.to_string())
    } else {
        KvError::Other(err.to_string())
    }
}

fn bytes_of(value: Value) -> Result<Option<Vec<u8>>, KvError> {
    match value {
        Value::Null => Ok(None),
        Value::Bytes(bytes) => Ok(Some(bytes.to_vec())),
        Value::String(s) => Ok(Some(s.as_bytes().to_vec())),
        other => Err(KvError::Other(format!(
            "unexpected reply from redis: {:?}",
            other.kind()
        ))),
    }
}

fn integer_of(value: &Value) -> Result<i64, KvError> {
    value.as_i64().ok_or_else(|| {
        KvError::Other(format!(
            "unexpected reply from redis: {:?} instead of an integer",
            value.kind()
        ))
    })
}

fn px(ttl: Duration) -> Expiration {
    Expiration::PX(i64::try_from(ttl_millis(ttl)).unwrap_or(i64::MAX))
}

fn micros(us: i64) -> Duration {
    Duration::from_micros(u64::try_from(us).unwrap_or(0))
}

impl KvStore for RedisKv {
    fn name(&self) -> &'static str {
        "redis"
    }

    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Vec<u8>>, KvError>> {
        self.run("get", async move {
            let value: Value = self.pool.get(self.key(key)).await.map_err(classify)?;
            bytes_of(value)
        })
        .boxed()
    }

    fn set<'a>(
        &'a self,
        key: &'a str,
        value: &'a [u8],
        ttl: Option<Duration>,
    ) -> BoxFuture<'a, Result<(), KvError>> {
        self.run("set", async move {
            let _: Value = self
                .pool
                .set(self.key(key), value.to_vec(), ttl.map(px), None, false)
                .await
                .map_err(classify)?;
            Ok(())
        })
        .boxed()
    }

    fn set_if_absent<'a>(
        &'a self,
        key: &'a str,
        value: &'a [u8],
        ttl: Option<Duration>,
    ) -> BoxFuture<'a, Result<bool, KvError>> {
        self.run("set_if_absent", async move {
            // SET NX answers OK when it stored the value, nil when the key exists.
            let reply: Value = self
                .pool
                .set(
                    self.key(key),
                    value.to_vec(),
                    ttl.map(px),
                    Some(SetOptions::NX),
                    false,
                )
                .await
                .map_err(classify)?;
            Ok(!reply.is_null())
        })
        .boxed()
    }

    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<bool, KvError>> {
        self.run("delete", async move {
            let removed: Value = self.pool.del(self.key(key)).await.map_err(classify)?;
            Ok(integer_of(&removed)? > 0)
        })
        .boxed()
    }

    fn incr<'a>(
        &'a self,
        key: &'a str,
        by: i64,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<i64, KvError>> {
        self.run("incr", async move {
            let ttl_ms = i64::try_from(ttl_millis(ttl)).unwrap_or(i64::MAX);
            let args = vec![Value::from(by), Value::from(ttl_ms)];
            let reply = self.eval(&self.incr, self.key(key), args).await?;
            integer_of(&reply)
        })
        .boxed()
    }

    fn ttl<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Duration>, KvError>> {
        self.run("ttl", async move {
            // PTTL: -2 for a missing key, -1 for one without expiry.
            let reply: Value = self.pool.pttl(self.key(key)).await.map_err(classify)?;
            let ms = integer_of(&reply)?;
            Ok(u64::try_from(ms).ok().map(Duration::from_millis))
        })
        .boxed()
    }

    fn rate_limit<'a>(
        &'a self,
        key: &'a str,
        limit: RateLimit,
    ) -> BoxFuture<'a, Result<RateDecision, KvError>> {
        self.run("rate_limit", async move {
            let params = Gcra::new(limit)?;
            let args = vec![Value::from(params.interval), Value::from(params.window)];
            let reply = self.eval(&self.rate_limit, self.key(key), args).await?;
            let fields = match reply {
                Value::Array(fields) if fields.len() == 4 => fields
                    .iter()
                    .map(integer_of)
                    .collect::<Result<Vec<_>, _>>()?,
                other => {
                    return Err(KvError::Other(format!(
                        "unexpected reply from the rate-limit script: {:?}",
                        other.kind()
                    )))
                }
            };
            Ok(RateDecision {
                allowed: fields[0] == 1,
                limit: params.count,
                remaining: u32::try_from(fields[1]).unwrap_or(0),
                retry_after: micros(fields[2]),
                reset_after: micros(fields[3]),
            })
        })
        .boxed()
    }

    fn ping(&self) -> BoxFuture<'_, Result<Duration, KvError>> {
        self.run("ping", async move {
            let started = Instant::now();
            let _: Value = self.pool.ping(None).await.map_err(classify)?;
            Ok(started.elapsed())
        })
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resp3_is_the_default() {
        let (url, version) = split_protocol("redis://127.0.0.1:6379/2").expect("valid");
        assert_eq!(url, "redis://127.0.0.1:6379/2");
        assert_eq!(version, RespVersion::RESP3);
    }

    #[test]
    fn protocol_is_read_and_removed_from_the_query() {
        let (url, version) = split_protocol("redis://h:6379/0?protocol=resp2").expect("valid");
        assert_eq!(url, "redis://h:6379/0");
        assert_eq!(version, RespVersion::RESP2);

        let (url, version) =
            split_protocol("redis-cluster://h:7000?node=h2:7001&PROTOCOL=RESP3&node=h3:7002")
                .expect("valid");
        assert_eq!(url, "redis-cluster://h:7000?node=h2:7001&node=h3:7002");
        assert_eq!(version, RespVersion::RESP3);
    }

    #[test]
    fn an_unknown_protocol_is_an_error() {
        assert!(matches!(
            split_protocol("redis://h?protocol=resp4"),
            Err(KvError::Other(_))
        ));
    }

    #[test]
    fn connection_trouble_is_unavailable_and_bad_replies_are_not() {
        let io = FredError::new(ErrorKind::IO, "Connection refused");
        assert!(matches!(classify(io), KvError::Unavailable(_)));
        let loading = FredError::new(ErrorKind::Unknown, "LOADING Redis is loading");
        assert!(matches!(classify(loading), KvError::Unavailable(_)));
        let no_route = FredError::new(ErrorKind::Unknown, "Failed to route command.");
        assert!(matches!(classify(no_route), KvError::Unavailable(_)));
        let wrong = FredError::new(ErrorKind::Unknown, "ERR value is not an integer");
        assert!(matches!(classify(wrong), KvError::Other(_)));
    }
}
