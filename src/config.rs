//! Configuration: embedded defaults, then `config.toml` (or `--config`), then
//! environment variables `STAGEWORKS__SECTION__KEY` (figment layers them). The
//! result is checked as a whole: every problem is reported with its key, and
//! the process does not start on a bad configuration (exit code 2).
//!
//! This file knows the process's own sections (server, admin, database,
//! redis, tokens, events, …) and the supervision keys every
//! `[services.<name>]` section has ([`ServiceConfig`]). The rest of a
//! service's section is the service's own: it is handed to the service's
//! definition, which reads it into its typed settings and names its problems
//! (`services.<name>.<key>`); no service is named here.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use actors::service::ServiceDefinition;
use figment::providers::{Env, Format, Serialized, Toml};
use figment::value::Dict;
use figment::Figment;
use serde::{Deserialize, Serialize};
use supervision::{Backoff, Strategy, SupervisionPolicy};

use crate::http::server::MAX_CONNECTIONS_CEILING;

/// A rate limit as configured: `{ requests = 100, per = "15m" }`.
pub type LimitConfig = actors::kv::LimitSettings;

/// The environment variable prefix; `__` separates the levels of a key.
pub const ENV_PREFIX: &str = "STAGEWORKS__";

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `development` or `production`; production makes secret checks strict
    /// (a token secret is required).
    pub env: Environment,
    /// Where the embedded databases live (one SQLite file per service).
    pub data_dir: PathBuf,
    /// This process's stable name among replicas (its Redis Streams
    /// consumer); empty: the host name and a hash of `data_dir`.
    pub instance_id: String,
    pub server: ServerConfig,
    pub admin: AdminConfig,
    pub log: LogConfig,
    pub telemetry: TelemetryConfig,
    pub database: DatabaseConfig,
    pub redis: RedisConfig,
    pub tokens: TokensConfig,
    pub cors: CorsConfig,
    pub rate_limit: RateLimitConfig,
    pub events: EventsConfig,
    /// Per service, by name (`[services.<name>]`).
    pub services: BTreeMap<String, ServiceConfig>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Environment {
    Development,
    Production,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub max_body_bytes: u64,
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// How long a client may take to send a request's whole body, from when
    /// the front-end starts reading it; then it is answered 408 (the
    /// client's fault, not a 504). At most `request_timeout`. Unset: 10 s,
    /// or `request_timeout` if that is shorter (see
    /// [`ServerConfig::body_read_limit`]), so that a configuration with a
    /// short request timeout stays valid without naming this.
    #[serde(with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    pub body_read_timeout: Option<Duration>,
    /// How long a new connection may take to send its first byte (hyper's
    /// header timer starts only there); then it is closed.
    #[serde(with = "humantime_serde")]
    pub first_byte_timeout: Duration,
    /// How long a connection may stay open with no request in flight (HTTP/1
    /// keep-alive, HTTP/2 without open streams); then it is shut down
    /// gracefully.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Public connections open at once; one more is accepted and closed.
    /// 0: the descriptor soft limit less a reserve of max(256, limit / 8)
    /// for databases, files and the admin listener.
    pub max_connections: usize,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    pub listen: SocketAddr,
    /// Bearer token for the admin listener; required off loopback.
    pub token: Option<String>,
    /// Admin connections open at once, apart from the public listener's, so
    /// a saturated public listener cannot lock operators out.
    pub max_connections: usize,
    /// How often the admin page's history (`/admin/history`) takes a sample.
    #[serde(with = "humantime_serde")]
    pub history_every: Duration,
    /// Samples kept per series (720 at 5 s: one hour).
    pub history_samples: usize,
    /// Live streams (`/admin/stream`) open at once; more answer 503.
    pub max_streams: usize,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A tracing filter (`info`, `stageworks=debug,sqlx=warn`); `RUST_LOG` wins if set.
    pub level: String,
    pub format: LogFormat,
}

/// Traces (`[telemetry]`): exported over OTLP/HTTP when an endpoint is set.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// The collector's OTLP/HTTP base URL (`http://collector:4318`); spans go
    /// to `<it>/v1/traces`. Empty: traces off.
    pub otlp_endpoint: String,
    /// The `service.name` resource attribute of every span.
    pub service_name: String,
    /// The share of new traces recorded, 0 to 1. A request that continues a
    /// client's `traceparent` follows the client's sampled flag instead.
    pub sample_ratio: f64,
}

impl TelemetryConfig {
    /// Where spans are sent, if traces are on.
    pub fn traces_url(&self) -> Option<String> {
        if self.otlp_endpoint.is_empty() {
            return None;
        }
        Some(format!(
            "{}/v1/traces",
            self.otlp_endpoint.trim_end_matches('/')
        ))
    }

    fn check(&self, problems: &mut Problems) {
        if !self.otlp_endpoint.is_empty() {
            if let Err(problem) = check_otlp_endpoint(&self.otlp_endpoint) {
                problems.add(
                    "telemetry.otlp_endpoint",
                    format!(
                        "`{}` {problem}: expected http(s)://host:port, e.g. http://127.0.0.1:4318 \
                         (leave it empty to turn traces off)",
                        self.otlp_endpoint
                    ),
                );
            }
        }
        if self.service_name.trim().is_empty() {
            problems.add("telemetry.service_name", "must not be empty");
        }
        if !(0.0..=1.0).contains(&self.sample_ratio) {
            problems.add("telemetry.sample_ratio", "must be from 0 to 1");
        }
    }
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            otlp_endpoint: String::new(),
            service_name: "stageworks".into(),
            sample_ratio: 1.0,
        }
    }
}

/// Why `url` is not an OTLP/HTTP base URL.
fn check_otlp_endpoint(url: &str) -> Result<(), &'static str> {
    let uri: http::Uri = url.parse().map_err(|_| "is not a URL")?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err("has no http or https scheme"),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err("names no host");
    }
    if uri.query().is_some() {
        return Err("has a query");
    }
    Ok(())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// Empty: SQLite files under `data_dir`. `postgres://…`: PostgreSQL, one
    /// schema per service in that database.
    pub url: String,
    /// PostgreSQL pool size per service.
    pub max_connections: u32,
    #[serde(with = "humantime_serde")]
    pub statement_timeout: Duration,
    /// SQLite: how long a connection waits on a lock.
    #[serde(with = "humantime_serde")]
    pub busy_timeout: Duration,
    /// SQLite reader pool size per service (writes go through one connection).
    pub read_connections: u32,
    /// SQLite page cache of each connection, KiB.
    pub sqlite_cache_kib: u32,
    /// SQLite: rows a service keeps of what it wrote, to answer reads of
    /// them without the database (0: none).
    pub row_cache: usize,
    #[serde(with = "humantime_serde")]
    pub acquire_timeout: Duration,
    /// At most this many writes of a service committed in one transaction
    /// (group commit).
    pub write_batch: usize,
    /// PostgreSQL: transactions of one service committing at once (SQLite
    /// always has one writer).
    pub write_lanes: usize,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisConfig {
    /// Empty: the in-memory store (one process). `redis://host:6379`: Redis,
    /// shared by every replica using it (`?protocol=resp2` for servers < 6).
    pub url: String,
    pub pool_size: usize,
    #[serde(with = "humantime_serde")]
    pub command_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Prepended to every key, so deployments can share a Redis.
    pub key_prefix: String,
    /// The in-memory store's bound (keys); the entry closest to expiry goes first.
    pub memory_max_keys: usize,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            pool_size: 4,
            command_timeout: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(5),
            key_prefix: "stageworks:".into(),
            memory_max_keys: 1_000_000,
        }
    }
}

/// Access tokens: the signing key and the claims' issuer, audience and
/// lifetimes. The keys are a shared resource: the front-end verifies every
/// request with them, the service that signs users in issues with them.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TokensConfig {
    /// HS256 key, at least 32 bytes. Empty in development: one is generated
    /// into `<data_dir>/jwt-secret` (mode 0600) and kept; required in production.
    pub jwt_secret: String,
    pub issuer: String,
    pub audience: String,
    #[serde(with = "humantime_serde")]
    pub access_ttl: Duration,
    #[serde(with = "humantime_serde")]
    pub refresh_ttl: Duration,
}

impl Default for TokensConfig {
    fn default() -> Self {
        let tokens = actors::access::TokenSettings::default();
        Self {
            jwt_secret: String::new(),
            issuer: tokens.issuer,
            audience: tokens.audience,
            access_ttl: tokens.access_ttl,
            refresh_ttl: tokens.refresh_ttl,
        }
    }
}

impl TokensConfig {
    pub fn token_settings(&self) -> actors::access::TokenSettings {
        actors::access::TokenSettings {
            issuer: self.issuer.clone(),
            audience: self.audience.clone(),
            access_ttl: self.access_ttl,
            refresh_ttl: self.refresh_ttl,
        }
    }
}

/// Event delivery between services (outbox relay, bus, retries, dead letters).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EventsConfig {
    /// Failed attempts before an event goes to the dead-letter store.
    pub max_attempts: u32,
    /// Backoff between attempts: doubling from `retry_min` up to `retry_max`.
    #[serde(with = "humantime_serde")]
    pub retry_min: Duration,
    #[serde(with = "humantime_serde")]
    pub retry_max: Duration,
    /// How many outbox rows a relay claims at once.
    pub relay_batch: u32,
    /// How often a relay looks at its outbox when no commit woke it
    /// (commits in this process wake it at once; other replicas' do not).
    #[serde(with = "humantime_serde")]
    pub relay_interval: Duration,
    /// How long a claimed outbox row is held by its relay before another
    /// (or the next process) may take it.
    #[serde(with = "humantime_serde")]
    pub claim_lease: Duration,
    /// Redis Streams: how long an entry stays pending with a consumer before
    /// another replica takes it over (the consumer is presumed dead).
    #[serde(with = "humantime_serde")]
    pub stream_claim_idle: Duration,
    /// How long published outbox rows are kept before they are deleted.
    #[serde(with = "humantime_serde")]
    pub outbox_retention: Duration,
}

impl Default for EventsConfig {
    fn default() -> Self {
        let d = actors::events::EventsSettings::default();
        Self {
            max_attempts: d.max_attempts,
            retry_min: d.retry_min,
            retry_max: d.retry_max,
            relay_batch: d.relay_batch,
            relay_interval: d.relay_interval,
            claim_lease: d.claim_lease,
            stream_claim_idle: d.stream_claim_idle,
            outbox_retention: d.outbox_retention,
        }
    }
}

impl EventsConfig {
    pub fn settings(&self) -> actors::events::EventsSettings {
        actors::events::EventsSettings {
            max_attempts: self.max_attempts,
            retry_min: self.retry_min,
            retry_max: self.retry_max,
            relay_batch: self.relay_batch,
            relay_interval: self.relay_interval,
            claim_lease: self.claim_lease,
            stream_claim_idle: self.stream_claim_idle,
            outbox_retention: self.outbox_retention,
        }
    }
}

/// Cross-origin access: nothing is allowed until origins are listed.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CorsConfig {
    /// Exact origins (`https://app.example.com`); `"*"` for any (not with credentials).
    pub allowed_origins: Vec<String>,
    pub allowed_methods: Vec<String>,
    pub allowed_headers: Vec<String>,
    /// Response headers a browser script may read.
    pub exposed_headers: Vec<String>,
    pub allow_credentials: bool,
    /// How long a browser may cache a preflight answer.
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
}

impl Default for CorsConfig {
    fn default() -> Self {
        let strings = |items: &[&str]| items.iter().map(|s| (*s).to_owned()).collect();
        Self {
            allowed_origins: Vec::new(),
            allowed_methods: strings(&["GET", "POST", "PUT", "PATCH", "DELETE"]),
            allowed_headers: strings(&[
                "authorization",
                "content-type",
                "idempotency-key",
                "x-request-id",
            ]),
            exposed_headers: strings(&[
                "x-request-id",
                "retry-after",
                "ratelimit-limit",
                "ratelimit-remaining",
                "ratelimit-reset",
                "idempotent-replayed",
            ]),
            allow_credentials: false,
            max_age: Duration::from_secs(600),
        }
    }
}

/// Rate limits at the edge (GCRA, state in the key-value store).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    /// `false` turns every limit off (e.g. for a load test).
    pub enabled: bool,
    /// 0: the peer address is the client. N: N trusted proxies stand in front,
    /// and the client is the N-th address from the right of `x-forwarded-for`.
    pub trusted_proxy_hops: u32,
    /// Per client IP, every `/api/v1` route.
    pub api: LimitConfig,
    /// Per client IP, the routes that take credentials (sign-up, sign-in:
    /// stricter).
    pub auth: LimitConfig,
    /// Per authenticated user.
    pub user: LimitConfig,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        let fifteen_minutes = Duration::from_secs(15 * 60);
        Self {
            enabled: true,
            trusted_proxy_hops: 0,
            api: LimitConfig {
                requests: 100,
                per: fifteen_minutes,
            },
            auth: LimitConfig {
                requests: 20,
                per: fifteen_minutes,
            },
            user: LimitConfig {
                requests: 1000,
                per: fifteen_minutes,
            },
        }
    }
}

/// A `[services.<name>]` section: the supervision keys every service has,
/// and the service's own keys, which its definition reads and checks.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct ServiceConfig {
    /// `false`: the service is not started and its routes answer 404.
    pub enabled: bool,
    /// This service's own database URL, overriding `database.url`.
    pub database_url: String,
    /// Size of the worker pool.
    pub workers: usize,
    /// Workers, on top of `workers`, that serve the service's reads (`GET`,
    /// `HEAD`) alone, with a queue of their own: a bulkhead, so a flood of
    /// writes neither queues nor sheds the reads. 0: reads share the pool.
    pub read_workers: usize,
    #[serde(with = "humantime_serde")]
    pub call_timeout: Duration,
    pub strategy: Strategy,
    pub max_restarts: u32,
    #[serde(with = "humantime_serde")]
    pub within: Duration,
    #[serde(with = "humantime_serde")]
    pub backoff_min: Duration,
    #[serde(with = "humantime_serde")]
    pub backoff_max: Duration,
    #[serde(with = "humantime_serde")]
    pub open_for: Duration,
    /// The cap for `open_for` as it doubles on consecutive trips.
    #[serde(with = "humantime_serde")]
    pub open_for_max: Duration,
    /// How many messages may wait for a worker; a request that finds the
    /// queue full is answered 503 at once (shed, not a failure). 0: what the
    /// workers can serve within `call_timeout` at 50 ms a message
    /// (100 per worker at 5 s).
    pub queue_limit: usize,
    /// How long a request may expect to wait for a worker (the queue ahead
    /// of it at the pace the workers have been handling messages); one that
    /// would wait longer is shed, however short the queue. 0: a tenth of
    /// `call_timeout`.
    #[serde(with = "humantime_serde")]
    pub max_queue_wait: Duration,
    /// The keys the service itself declares, for its definition to read.
    #[serde(flatten)]
    pub own: Dict,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            env: Environment::Development,
            data_dir: PathBuf::from("./data"),
            instance_id: String::new(),
            server: ServerConfig::default(),
            admin: AdminConfig::default(),
            log: LogConfig::default(),
            telemetry: TelemetryConfig::default(),
            database: DatabaseConfig::default(),
            redis: RedisConfig::default(),
            tokens: TokensConfig::default(),
            cors: CorsConfig::default(),
            rate_limit: RateLimitConfig::default(),
            events: EventsConfig::default(),
            services: BTreeMap::new(),
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_body_bytes: 1024 * 1024,
            request_timeout: Duration::from_secs(30),
            shutdown_timeout: Duration::from_secs(30),
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: None,
            first_byte_timeout: Duration::from_secs(10),
            // Longer than the 60 s idle timeout of the usual load balancers
            // (AWS ALB, nginx upstream pools), so they close pooled
            // connections first: a server closing one a proxy is about to
            // reuse surfaces as a 502. Short enough that abandoned
            // connections do not pile up.
            idle_timeout: Duration::from_secs(75),
            max_connections: 0,
        }
    }
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 9090)),
            token: None,
            max_connections: 64,
            history_every: Duration::from_secs(5),
            history_samples: 720,
            max_streams: 8,
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            max_connections: 10,
            statement_timeout: Duration::from_secs(5),
            busy_timeout: Duration::from_secs(5),
            read_connections: 8,
            sqlite_cache_kib: 512,
            row_cache: 4096,
            acquire_timeout: Duration::from_secs(3),
            write_batch: 256,
            write_lanes: 2,
        }
    }
}

impl Default for ServiceConfig {
    fn default() -> Self {
        let policy = SupervisionPolicy::default();
        Self {
            enabled: true,
            database_url: String::new(),
            workers: 8,
            call_timeout: Duration::from_secs(5),
            strategy: policy.strategy,
            max_restarts: policy.max_restarts,
            within: policy.within,
            backoff_min: policy.backoff.min,
            backoff_max: policy.backoff.max,
            open_for: policy.open_for,
            open_for_max: policy.open_for_max,
            queue_limit: 0,
            max_queue_wait: Duration::ZERO,
            read_workers: 0,
            own: Dict::new(),
        }
    }
}

impl ServiceConfig {
    /// Sets one of the service's own keys (for tests and programs that build
    /// their configuration in code).
    pub fn set(&mut self, key: &str, value: impl Serialize) -> Result<(), ConfigError> {
        let value = figment::value::Value::serialize(value)
            .map_err(|err| ConfigError::Parse(format!("{key}: {err}")))?;
        self.own.insert(key.to_owned(), value);
        Ok(())
    }

    pub fn policy(&self, shutdown_timeout: Duration) -> SupervisionPolicy {
        SupervisionPolicy {
            strategy: self.strategy,
            max_restarts: self.max_restarts,
            within: self.within,
            backoff: Backoff {
                min: self.backoff_min,
                max: self.backoff_max,
            },
            open_for: self.open_for,
            open_for_max: self.open_for_max,
            shutdown_timeout,
            queue_limit: (self.queue_limit > 0).then_some(self.queue_limit),
            max_queue_wait: (!self.max_queue_wait.is_zero()).then_some(self.max_queue_wait),
            read_workers: self.read_workers,
        }
    }
}

/// A configuration that cannot be used, with every reason found.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the configuration: {0}")]
    Parse(String),
    #[error("invalid configuration:\n{}", .0.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<String>),
    #[error("configuration file {0} does not exist")]
    Missing(PathBuf),
}

/// The process's own sections that were renamed: a configuration that still
/// uses one is refused with the new name, rather than read as unknown.
const RENAMED: &[(&str, &str)] = &[("auth", "tokens")];

impl Config {
    /// Loads defaults ← file ← environment and checks the result, including
    /// each service's own keys against its definition. A missing file is an
    /// error only if it was asked for explicitly.
    pub fn load(
        path: &Path,
        explicit: bool,
        services: &[ServiceDefinition],
    ) -> Result<Self, ConfigError> {
        if explicit && !path.exists() {
            return Err(ConfigError::Missing(path.to_owned()));
        }
        let figment = Figment::from(Serialized::defaults(Config::default()))
            .merge(if explicit {
                Toml::file_exact(path)
            } else {
                Toml::file(path)
            })
            .merge(Env::prefixed(ENV_PREFIX).split("__"));
        Self::extract(&figment, services)
    }

    /// Reads a configuration from TOML text over the defaults, without the
    /// environment, and checks it as [`Config::load`] does (the parser the
    /// fuzz target `config` drives).
    pub fn from_toml(text: &str, services: &[ServiceDefinition]) -> Result<Self, ConfigError> {
        let figment =
            Figment::from(Serialized::defaults(Config::default())).merge(Toml::string(text));
        Self::extract(&figment, services)
    }

    fn extract(figment: &Figment, services: &[ServiceDefinition]) -> Result<Self, ConfigError> {
        let moved = moved_keys(figment, services);
        if !moved.is_empty() {
            return Err(ConfigError::Invalid(moved));
        }
        let config: Config = figment.extract().map_err(|err| {
            ConfigError::Parse(
                err.into_iter()
                    .map(|e| e.to_string())
                    .collect::<Vec<_>>()
                    .join("; "),
            )
        })?;
        config.validate(services)?;
        Ok(config)
    }

    /// The section of a service: its own, or the defaults.
    pub fn service(&self, name: &str) -> ServiceConfig {
        self.services.get(name).cloned().unwrap_or_default()
    }

    /// The section of a service, created with the defaults if absent (for
    /// tests and programs that build their configuration in code).
    pub fn service_mut(&mut self, name: &str) -> &mut ServiceConfig {
        self.services.entry(name.to_owned()).or_default()
    }

    /// Checks what types alone cannot, section by section: zero durations,
    /// empty pools, an exposed admin listener without a token, unknown
    /// services, and each service's own keys (by its definition).
    pub fn validate(&self, services: &[ServiceDefinition]) -> Result<(), ConfigError> {
        let mut problems = Problems::default();
        self.server.check(&mut problems);
        self.admin.check(&self.server, &mut problems);
        self.log.check(&mut problems);
        self.telemetry.check(&mut problems);
        self.database.check(&mut problems);
        self.redis.check(&mut problems);
        self.tokens.check(self.env, &mut problems);
        self.cors.check(&mut problems);
        self.rate_limit.check(&mut problems);
        self.events.check(&mut problems);
        self.check_instance_id(&mut problems);
        self.check_services(services, &mut problems);
        problems.into_result()
    }

    /// Every registered service with its own settings read, in registration
    /// order, disabled ones included (the caller skips them).
    pub fn configure(
        &self,
        services: &[ServiceDefinition],
    ) -> Result<Vec<(ServiceConfig, actors::service::ConfiguredService)>, ConfigError> {
        let mut problems = Vec::new();
        let mut configured = Vec::new();
        for definition in services {
            let section = self.service(definition.name);
            match definition.configure(&section.own) {
                Ok(service) => configured.push((section, service)),
                Err(found) => problems.extend(found),
            }
        }
        if problems.is_empty() {
            Ok(configured)
        } else {
            Err(ConfigError::Invalid(problems))
        }
    }

    fn check_instance_id(&self, problems: &mut Problems) {
        if self.instance_id.len() > 200
            || self
                .instance_id
                .chars()
                .any(|c| c.is_control() || c.is_whitespace())
        {
            problems.add(
                "instance_id",
                "at most 200 characters, no spaces or control characters",
            );
        }
    }

    /// The supervision keys of every section, unknown services, and each
    /// registered service's own keys.
    fn check_services(&self, services: &[ServiceDefinition], problems: &mut Problems) {
        let known: Vec<&str> = services
            .iter()
            .map(|s| s.name)
            .chain([actors::events::bus::SERVICE_NAME])
            .collect();
        for (name, section) in &self.services {
            if !known.contains(&name.as_str()) {
                problems.add(
                    format!("services.{name}"),
                    format!("no such service (known: {})", known.join(", ")),
                );
                continue;
            }
            section.check(name, self.server.request_timeout, problems);
            if name == actors::events::bus::SERVICE_NAME && !section.own.is_empty() {
                let keys: Vec<&str> = section.own.keys().map(String::as_str).collect();
                problems.add(
                    format!("services.{name}"),
                    format!(
                        "the event bus has only the supervision keys, not {}",
                        keys.join(", ")
                    ),
                );
            }
        }
        for definition in services {
            if let Err(found) = definition.configure(&self.service(definition.name).own) {
                problems.0.extend(found);
            }
        }
    }

    /// The storage settings of a service (its database: SQLite or PostgreSQL).
    pub fn storage(&self, service: &str) -> actors::storage::StorageSettings {
        actors::storage::StorageSettings {
            url: self.database_url(service),
            busy_timeout: self.database.busy_timeout,
            read_connections: self.database.read_connections,
            sqlite_cache_kib: self.database.sqlite_cache_kib,
            row_cache: self.database.row_cache,
            max_connections: self.database.max_connections,
            acquire_timeout: self.database.acquire_timeout,
            statement_timeout: self.database.statement_timeout,
            group_commit: actors::storage::group_commit::GroupCommitSettings {
                max_batch: self.database.write_batch,
                lanes: self.database.write_lanes,
            },
        }
    }

    /// The database URL a service uses: its own, else the shared one; `None`
    /// means SQLite.
    pub fn database_url(&self, service: &str) -> Option<String> {
        let own = self.service(service).database_url;
        let url = if own.is_empty() {
            self.database.url.clone()
        } else {
            own
        };
        (!url.is_empty()).then_some(url)
    }

    /// The effective configuration as TOML, with secrets masked; every
    /// registered service's section is shown whole (its own settings with
    /// their defaults, as its definition reads them).
    pub fn to_masked_toml(
        &self,
        services: &[ServiceDefinition],
    ) -> Result<String, toml::ser::Error> {
        let mut shown = self.clone();
        if shown.admin.token.is_some() {
            shown.admin.token = Some(MASK.into());
        }
        shown.database.url = mask_password(&shown.database.url);
        shown.redis.url = mask_password(&shown.redis.url);
        if !shown.tokens.jwt_secret.is_empty() {
            shown.tokens.jwt_secret = MASK.into();
        }
        for definition in services {
            let section = shown.service_mut(definition.name);
            if let Ok(service) = definition.configure(&section.own) {
                section.own = service.shown;
            }
        }
        for service in shown.services.values_mut() {
            service.database_url = mask_password(&service.database_url);
        }
        toml::to_string_pretty(&shown)
    }
}

/// What a secret is shown as.
const MASK: &str = "********";

/// The problems found so far, each `key: message`.
#[derive(Default)]
struct Problems(Vec<String>);

impl Problems {
    fn add(&mut self, key: impl std::fmt::Display, message: impl std::fmt::Display) {
        self.0.push(format!("{key}: {message}"));
    }

    fn positive(&mut self, key: impl std::fmt::Display, value: Duration) {
        if value.is_zero() {
            self.add(key, "must be greater than zero");
        }
    }

    fn at_least(&mut self, key: &str, value: u64, min: u64) {
        if value < min {
            self.add(key, format!("must be at least {min}"));
        }
    }

    fn database_url(&mut self, key: &str, url: &str) {
        if url.is_empty() {
            return;
        }
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            self.add(
                key,
                "must be a postgres:// URL (leave it empty for SQLite under data_dir)",
            );
        } else if sqlx::postgres::PgConnectOptions::from_str(url).is_err() {
            self.add(key, "not a valid PostgreSQL URL");
        }
    }

    fn limit(&mut self, key: &str, limit: &LimitConfig) {
        for (field, message) in limit.problems() {
            self.add(format!("{key}.{field}"), message);
        }
    }

    fn into_result(self) -> Result<(), ConfigError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(self.0))
        }
    }
}

/// The body read timeout when none is set (capped at the request timeout):
/// like the header timeout, as a client that means to send its body sends
/// it at once; 1 MiB (`max_body_bytes`) in 10 s is 100 KB/s.
const DEFAULT_BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);

impl ServerConfig {
    /// How long a request's body may take to arrive: `body_read_timeout`,
    /// else 10 s or `request_timeout` if that is shorter.
    pub fn body_read_limit(&self) -> Duration {
        self.body_read_timeout
            .unwrap_or(DEFAULT_BODY_READ_TIMEOUT.min(self.request_timeout))
    }

    fn check(&self, problems: &mut Problems) {
        problems.positive("server.request_timeout", self.request_timeout);
        problems.positive("server.shutdown_timeout", self.shutdown_timeout);
        problems.positive("server.header_read_timeout", self.header_read_timeout);
        let body_read_timeout = self.body_read_limit();
        problems.positive("server.body_read_timeout", body_read_timeout);
        if body_read_timeout > self.request_timeout {
            // The request timeout would answer 504 first, and the 408 would
            // never be seen.
            problems.add(
                "server.body_read_timeout",
                "must not exceed server.request_timeout",
            );
        }
        problems.positive("server.first_byte_timeout", self.first_byte_timeout);
        problems.positive("server.idle_timeout", self.idle_timeout);
        if self.max_connections > MAX_CONNECTIONS_CEILING {
            problems.add(
                "server.max_connections",
                format!(
                    "must be at most {MAX_CONNECTIONS_CEILING} (0: derived from the descriptor limit)"
                ),
            );
        }
        if self.max_body_bytes == 0 {
            problems.add("server.max_body_bytes", "must be greater than zero");
        }
    }
}

impl AdminConfig {
    fn check(&self, server: &ServerConfig, problems: &mut Problems) {
        if server.listen.port() != 0 && server.listen == self.listen {
            problems.add("admin.listen", "must differ from server.listen");
        }
        let token = self.token.as_deref().unwrap_or("");
        if !self.listen.ip().is_loopback() && token.is_empty() {
            problems.add(
                "admin.listen",
                format!(
                    "{} is not a loopback address, so admin.token must be set",
                    self.listen
                ),
            );
        }
        if !token.is_empty() && token.len() < 16 {
            problems.add("admin.token", "must be at least 16 characters");
        }
        if !(1..=MAX_CONNECTIONS_CEILING).contains(&self.max_connections) {
            problems.add(
                "admin.max_connections",
                format!("must be from 1 to {MAX_CONNECTIONS_CEILING}"),
            );
        }
        if !(Duration::from_millis(10)..=Duration::from_secs(3600)).contains(&self.history_every) {
            problems.add("admin.history_every", "must be from 10ms to 1h");
        }
        if !(2..=MAX_HISTORY_SAMPLES).contains(&self.history_samples) {
            problems.add(
                "admin.history_samples",
                format!("must be from 2 to {MAX_HISTORY_SAMPLES}"),
            );
        }
        if !(1..=MAX_ADMIN_STREAMS).contains(&self.max_streams) {
            problems.add(
                "admin.max_streams",
                format!("must be from 1 to {MAX_ADMIN_STREAMS}"),
            );
        }
    }
}

/// At most a day at 5 s: the history's memory is bounded by this.
const MAX_HISTORY_SAMPLES: usize = 17_280;

/// Each live stream holds a task and a connection.
const MAX_ADMIN_STREAMS: usize = 64;

impl LogConfig {
    fn check(&self, problems: &mut Problems) {
        if let Err(err) = tracing_subscriber::EnvFilter::try_new(&self.level) {
            problems.add(
                "log.level",
                format!("`{}` is not a valid filter: {err}", self.level),
            );
        }
    }
}

impl DatabaseConfig {
    fn check(&self, problems: &mut Problems) {
        problems.positive("database.busy_timeout", self.busy_timeout);
        problems.positive("database.statement_timeout", self.statement_timeout);
        problems.positive("database.acquire_timeout", self.acquire_timeout);
        problems.at_least("database.read_connections", self.read_connections.into(), 1);
        problems.at_least("database.max_connections", self.max_connections.into(), 1);
        problems.at_least(
            "database.sqlite_cache_kib",
            self.sqlite_cache_kib.into(),
            64,
        );
        problems.at_least("database.write_batch", self.write_batch as u64, 1);
        if self.write_lanes == 0 {
            problems.add("database.write_lanes", "must be at least 1");
        } else if self.write_lanes > self.max_connections as usize {
            problems.add(
                "database.write_lanes",
                format!(
                    "{} is more than database.max_connections ({}): each lane holds a connection while it commits",
                    self.write_lanes, self.max_connections
                ),
            );
        }
        problems.database_url("database.url", &self.url);
    }
}

impl RedisConfig {
    fn check(&self, problems: &mut Problems) {
        problems.positive("redis.command_timeout", self.command_timeout);
        problems.positive("redis.connect_timeout", self.connect_timeout);
        problems.at_least("redis.pool_size", self.pool_size as u64, 1);
        problems.at_least("redis.memory_max_keys", self.memory_max_keys as u64, 1);
        if !self.url.is_empty() {
            if let Err(problem) = actors::kv::check_redis_url(&self.url) {
                problems.add(
                    "redis.url",
                    format!("{problem} (leave it empty for the in-memory store)"),
                );
            }
        }
    }
}

impl TokensConfig {
    fn check(&self, env: Environment, problems: &mut Problems) {
        problems.positive("tokens.access_ttl", self.access_ttl);
        problems.positive("tokens.refresh_ttl", self.refresh_ttl);
        if !self.jwt_secret.is_empty() && self.jwt_secret.len() < 32 {
            problems.add(
                "tokens.jwt_secret",
                "must be at least 32 bytes (generate one with `openssl rand -base64 48`)",
            );
        }
        if env == Environment::Production && self.jwt_secret.is_empty() {
            problems.add(
                "tokens.jwt_secret",
                "required when env = \"production\" (at least 32 bytes; STAGEWORKS__TOKENS__JWT_SECRET)",
            );
        }
        if self.access_ttl < Duration::from_secs(1) {
            problems.add("tokens.access_ttl", "must be at least 1s");
        }
        if self.refresh_ttl < self.access_ttl {
            problems.add(
                "tokens.refresh_ttl",
                "must not be shorter than tokens.access_ttl",
            );
        }
        if self.issuer.is_empty() || self.audience.is_empty() {
            problems.add("tokens.issuer, tokens.audience", "must not be empty");
        }
    }
}

impl CorsConfig {
    fn check(&self, problems: &mut Problems) {
        let any_origin = self.allowed_origins.iter().any(|o| o == "*");
        if any_origin && self.allow_credentials {
            problems.add(
                "cors.allowed_origins",
                "\"*\" cannot be combined with cors.allow_credentials",
            );
        }
        for origin in self.allowed_origins.iter().filter(|o| *o != "*") {
            let scheme = origin.starts_with("http://") || origin.starts_with("https://");
            if !scheme || origin.ends_with('/') || origin.matches('/').count() != 2 {
                problems.add(
                    "cors.allowed_origins",
                    format!("`{origin}` is not an origin (scheme://host[:port], no path)"),
                );
            }
        }
        for method in &self.allowed_methods {
            if method.parse::<http::Method>().is_err() {
                problems.add(
                    "cors.allowed_methods",
                    format!("`{method}` is not an HTTP method"),
                );
            }
        }
        for header in self.allowed_headers.iter().chain(&self.exposed_headers) {
            if http::HeaderName::from_bytes(header.as_bytes()).is_err() {
                problems.add("cors", format!("`{header}` is not a header name"));
            }
        }
    }
}

impl RateLimitConfig {
    fn check(&self, problems: &mut Problems) {
        problems.limit("rate_limit.api", &self.api);
        problems.limit("rate_limit.auth", &self.auth);
        problems.limit("rate_limit.user", &self.user);
    }
}

impl EventsConfig {
    fn check(&self, problems: &mut Problems) {
        problems.positive("events.retry_min", self.retry_min);
        problems.positive("events.relay_interval", self.relay_interval);
        problems.positive("events.claim_lease", self.claim_lease);
        problems.positive("events.stream_claim_idle", self.stream_claim_idle);
        problems.positive("events.outbox_retention", self.outbox_retention);
        problems.at_least("events.max_attempts", self.max_attempts.into(), 1);
        problems.at_least("events.relay_batch", self.relay_batch.into(), 1);
        if self.retry_max < self.retry_min {
            problems.add(
                "events.retry_max",
                "must not be shorter than events.retry_min",
            );
        }
    }
}

impl ServiceConfig {
    /// The supervision keys of `[services.<name>]`.
    fn check(&self, name: &str, request_timeout: Duration, problems: &mut Problems) {
        let key = |field: &str| format!("services.{name}.{field}");
        problems.positive(key("call_timeout"), self.call_timeout);
        problems.positive(key("within"), self.within);
        problems.positive(key("backoff_min"), self.backoff_min);
        problems.positive(key("open_for"), self.open_for);
        problems.database_url(&key("database_url"), &self.database_url);
        if !(1..=1024).contains(&self.workers) {
            problems.add(key("workers"), "must be from 1 to 1024");
        }
        if self.read_workers > 256 {
            problems.add(key("read_workers"), "must be from 0 to 256");
        }
        if self.queue_limit > 1_000_000 {
            problems.add(
                key("queue_limit"),
                "must be at most 1000000 (0: derived from workers and call_timeout)",
            );
        }
        if self.max_queue_wait > self.call_timeout {
            problems.add(
                key("max_queue_wait"),
                "must not exceed call_timeout (0: a tenth of call_timeout)",
            );
        }
        if self.call_timeout > request_timeout {
            problems.add(
                key("call_timeout"),
                "must not exceed server.request_timeout, or slow calls are cut off before they count as failures",
            );
        }
        if self.backoff_max < self.backoff_min {
            problems.add(key("backoff_max"), "must not be below backoff_min");
        }
        if self.open_for_max < self.open_for {
            problems.add(key("open_for_max"), "must not be below open_for");
        }
    }
}

/// Keys set where they used to be: the process's renamed sections and the
/// keys services moved into their own sections, each with where it went.
fn moved_keys(figment: &Figment, services: &[ServiceDefinition]) -> Vec<String> {
    let renamed = RENAMED
        .iter()
        .filter(|(from, _)| figment.contains(from))
        .map(|(from, to)| {
            format!(
                "{from}: renamed [{to}] (the same keys: {to}.<key>, STAGEWORKS__{}__<KEY>)",
                to.to_uppercase()
            )
        });
    let moved = services.iter().flat_map(|definition| {
        definition
            .moved
            .iter()
            .filter(|m| figment.contains(m.from))
            .map(|m| format!("{}: moved to services.{}.{}", m.from, definition.name, m.to))
    });
    renamed.chain(moved).collect()
}

/// `postgres://user:secret@host/db` → `postgres://user:********@host/db`.
fn mask_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let Some((credentials, host)) = rest.rsplit_once('@') else {
        return url.to_owned();
    };
    match credentials.split_once(':') {
        Some((user, _password)) => format!("{scheme}://{user}:********@{host}"),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actors::service::{
        Moved, Service, ServiceContext, ServiceSettings, SettingProblem, StartError, StartedService,
    };

    /// A service for these tests: its own settings, one of which moved.
    struct Example;

    #[derive(Clone, Debug, Serialize, Deserialize)]
    #[serde(deny_unknown_fields, default)]
    struct ExampleSettings {
        prefix: String,
    }

    impl Default for ExampleSettings {
        fn default() -> Self {
            Self {
                prefix: "EX-".into(),
            }
        }
    }

    impl ServiceSettings for ExampleSettings {
        fn check(&self) -> Vec<SettingProblem> {
            if self.prefix.is_empty() {
                vec![SettingProblem::new("prefix", "must not be empty")]
            } else {
                Vec::new()
            }
        }

        const MOVED: &'static [Moved] = &[Moved {
            from: "example_prefix",
            to: "prefix",
        }];
    }

    impl Service for Example {
        const NAME: &'static str = "example";
        type Settings = ExampleSettings;

        async fn start(
            ctx: ServiceContext,
            _settings: ExampleSettings,
        ) -> Result<StartedService, StartError> {
            Err(StartError::Resource {
                service: ctx.name,
                missing: actors::service::MissingResource("never started in these tests"),
            })
        }
    }

    const SERVICES: &[ServiceDefinition] = &[ServiceDefinition::of::<Example>()];

    fn invalid(config: &Config) -> Vec<String> {
        match config.validate(SERVICES) {
            Err(ConfigError::Invalid(p)) => p,
            other => panic!("expected problems, got {other:?}"),
        }
    }

    /// Loads `toml` as a configuration file would be.
    fn load(toml: &str) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, toml).unwrap();
        Config::load(&path, true, SERVICES)
    }

    #[test]
    fn defaults_are_valid() {
        Config::default().validate(SERVICES).unwrap();
    }

    #[test]
    fn the_body_read_timeout_is_positive_and_within_the_request_timeout() {
        let mut config = Config::default();
        assert_eq!(config.server.body_read_limit(), Duration::from_secs(10));
        config.server.body_read_timeout = Some(Duration::ZERO);
        let problems = invalid(&config).join("\n");
        assert!(
            problems.contains("server.body_read_timeout: must be greater than zero"),
            "{problems}"
        );
        config.server.body_read_timeout =
            Some(config.server.request_timeout + Duration::from_millis(1));
        let problems = invalid(&config).join("\n");
        assert!(
            problems.contains("server.body_read_timeout: must not exceed server.request_timeout"),
            "{problems}"
        );
        config.server.body_read_timeout = Some(config.server.request_timeout);
        config.validate(SERVICES).unwrap();
        // Unset, it follows a request timeout shorter than its default.
        config.server.body_read_timeout = None;
        config.server.request_timeout = Duration::from_secs(2);
        assert_eq!(config.server.body_read_limit(), Duration::from_secs(2));
        config.validate(SERVICES).unwrap();
    }

    #[test]
    fn zero_timeouts_and_unknown_services_are_named() {
        let mut config = Config::default();
        config.server.request_timeout = Duration::ZERO;
        config.service_mut("example").call_timeout = Duration::ZERO;
        config.service_mut("exampel");
        let problems = invalid(&config).join("\n");
        assert!(
            problems.contains("server.request_timeout: must be greater than zero"),
            "{problems}"
        );
        assert!(
            problems.contains("services.example.call_timeout"),
            "{problems}"
        );
        assert!(
            problems.contains("services.exampel: no such service (known: example, events)"),
            "{problems}"
        );
    }

    #[test]
    fn a_services_own_keys_are_read_and_checked_by_it() {
        let config = load("[services.example]\nworkers = 3\nprefix = \"X-\"\n").unwrap();
        assert_eq!(config.service("example").workers, 3);
        let configured = config.configure(SERVICES).unwrap();
        assert_eq!(configured[0].1.shown["prefix"].as_str(), Some("X-"));

        let problems = match load("[services.example]\nprefix = \"\"\nprefx = 1\n") {
            Err(ConfigError::Invalid(problems)) => problems.join("\n"),
            other => panic!("expected problems, got {other:?}"),
        };
        assert!(
            problems.contains("services.example.prefx: no such setting (known: prefix"),
            "{problems}"
        );
        let problems = match load("[services.example]\nprefix = \"\"\n") {
            Err(ConfigError::Invalid(problems)) => problems,
            other => panic!("expected problems, got {other:?}"),
        };
        assert_eq!(problems, vec!["services.example.prefix: must not be empty"]);
        let problems = match load("[services.events]\nprefix = \"X-\"\n") {
            Err(ConfigError::Invalid(problems)) => problems.join("\n"),
            other => panic!("expected problems, got {other:?}"),
        };
        assert!(
            problems.contains("services.events: the event bus has only the supervision keys"),
            "{problems}"
        );
    }

    #[test]
    fn moved_and_renamed_keys_name_their_new_place() {
        let problems = match load("example_prefix = \"X-\"\n[auth]\njwt_secret = \"x\"\n") {
            Err(ConfigError::Invalid(problems)) => problems.join("\n"),
            other => panic!("expected problems, got {other:?}"),
        };
        assert!(
            problems.contains("example_prefix: moved to services.example.prefix"),
            "{problems}"
        );
        assert!(problems.contains("auth: renamed [tokens]"), "{problems}");
    }

    #[test]
    fn check_config_shows_every_services_own_settings() {
        let shown = Config::default().to_masked_toml(SERVICES).unwrap();
        assert!(shown.contains("[services.example]"), "{shown}");
        assert!(shown.contains("prefix = \"EX-\""), "{shown}");
    }

    #[test]
    fn connection_limits_and_timeouts_are_checked() {
        let mut config = Config::default();
        config.server.first_byte_timeout = Duration::ZERO;
        config.server.idle_timeout = Duration::ZERO;
        config.server.max_connections = MAX_CONNECTIONS_CEILING + 1;
        config.admin.max_connections = 0;
        let problems = invalid(&config);
        assert_eq!(
            problems,
            vec![
                "server.first_byte_timeout: must be greater than zero".to_owned(),
                "server.idle_timeout: must be greater than zero".to_owned(),
                format!(
                    "server.max_connections: must be at most {MAX_CONNECTIONS_CEILING} (0: derived from the descriptor limit)"
                ),
                format!("admin.max_connections: must be from 1 to {MAX_CONNECTIONS_CEILING}"),
            ]
        );
        config.server.first_byte_timeout = Duration::from_millis(300);
        config.server.idle_timeout = Duration::from_millis(300);
        config.server.max_connections = MAX_CONNECTIONS_CEILING;
        config.admin.max_connections = 1;
        config.validate(SERVICES).unwrap();
        let loaded = load(
            "[server]\nfirst_byte_timeout = \"2s\"\nidle_timeout = \"1m\"\nmax_connections = 8\n[admin]\nmax_connections = 4\n",
        )
        .unwrap();
        assert_eq!(loaded.server.first_byte_timeout, Duration::from_secs(2));
        assert_eq!(loaded.server.idle_timeout, Duration::from_secs(60));
        assert_eq!(loaded.server.max_connections, 8);
        assert_eq!(loaded.admin.max_connections, 4);
    }

    #[test]
    fn an_exposed_admin_listener_needs_a_token() {
        let mut config = Config::default();
        config.admin.listen = "0.0.0.0:9090".parse().unwrap();
        assert!(invalid(&config)[0].starts_with("admin.listen"));
        config.admin.token = Some("a-long-enough-admin-token".into());
        config.validate(SERVICES).unwrap();
    }

    #[test]
    fn database_urls_are_checked_and_masked() {
        let mut config = Config::default();
        config.database.url = "mysql://x".into();
        assert!(invalid(&config)[0].starts_with("database.url"));
        config.database.url = "postgres://app:hunter2@db:5432/app".into();
        config.validate(SERVICES).unwrap();
        let shown = config.to_masked_toml(SERVICES).unwrap();
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(
            shown.contains("postgres://app:********@db:5432/app"),
            "{shown}"
        );
        assert_eq!(
            config.database_url("example").as_deref(),
            Some("postgres://app:hunter2@db:5432/app")
        );
    }

    #[test]
    fn redis_urls_are_checked_before_start_up() {
        let mut config = Config::default();
        for bad in [
            "http://cache:6379",
            "rediss://cache:6379",
            "redis://cache:6379?protocol=resp9",
        ] {
            config.redis.url = bad.into();
            assert!(invalid(&config)[0].starts_with("redis.url"), "{bad}");
        }
        config.redis.url = "redis://:hunter3@cache:6379?protocol=resp2".into();
        config.validate(SERVICES).unwrap();
        assert!(!config.to_masked_toml(SERVICES).unwrap().contains("hunter3"));
    }

    #[test]
    fn the_otlp_endpoint_and_sampling_are_checked() {
        let mut config = Config::default();
        assert_eq!(
            config.telemetry.traces_url(),
            None,
            "traces are off by default"
        );
        for bad in [
            "127.0.0.1:4318",
            "grpc://collector:4317",
            "http://",
            "http://collector:4318/?x=1",
            "not a url",
        ] {
            config.telemetry.otlp_endpoint = bad.into();
            let problems = invalid(&config);
            assert!(
                problems[0].starts_with("telemetry.otlp_endpoint") && problems[0].contains(bad),
                "{bad}: {problems:?}"
            );
        }
        config.telemetry.otlp_endpoint = "http://collector:4318/".into();
        config.validate(SERVICES).unwrap();
        assert_eq!(
            config.telemetry.traces_url().as_deref(),
            Some("http://collector:4318/v1/traces")
        );
        config.telemetry.sample_ratio = 1.5;
        assert!(invalid(&config)[0].starts_with("telemetry.sample_ratio"));
        config.telemetry.sample_ratio = 0.25;
        config.telemetry.service_name = " ".into();
        assert!(invalid(&config)[0].starts_with("telemetry.service_name"));
        let loaded = load("[telemetry]\notlp_endpoint = \"https://otel.example:4318\"\n").unwrap();
        assert_eq!(loaded.telemetry.service_name, "stageworks");
        assert_eq!(
            loaded.telemetry.traces_url().as_deref(),
            Some("https://otel.example:4318/v1/traces")
        );
    }

    #[test]
    fn the_jwt_secret_is_checked_required_in_production_and_masked() {
        let mut config = Config::default();
        config.tokens.jwt_secret = "too short".into();
        assert!(invalid(&config)[0].starts_with("tokens.jwt_secret"));
        config.tokens.jwt_secret = String::new();
        config.env = Environment::Production;
        assert!(invalid(&config)[0].starts_with("tokens.jwt_secret"));
        config.tokens.jwt_secret = "a-production-secret-of-enough-bytes-0123456789".into();
        config.validate(SERVICES).unwrap();
        assert!(!config
            .to_masked_toml(SERVICES)
            .unwrap()
            .contains("0123456789"));
    }

    #[test]
    fn masked_output_hides_the_token() {
        let mut config = Config::default();
        config.admin.token = Some("super-secret-admin-token".into());
        let shown = config.to_masked_toml(SERVICES).unwrap();
        assert!(!shown.contains("super-secret"), "{shown}");
    }
}
