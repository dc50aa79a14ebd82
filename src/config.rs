//! Configuration: embedded defaults, then `config.toml` (or `--config`), then
//! environment variables `STAGEWORKS__SECTION__KEY` (figment layers them). The
//! result is checked as a whole: every problem is reported with its key, and
//! the process does not start on a bad configuration (exit code 2).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};
use supervision::{Backoff, Strategy, SupervisionPolicy};

/// The environment variable prefix; `__` separates the levels of a key.
pub const ENV_PREFIX: &str = "STAGEWORKS__";

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `development` or `production`; production makes secret checks strict
    /// (used by the auth service).
    pub env: Environment,
    /// Where the embedded databases live (one SQLite file per service).
    pub data_dir: PathBuf,
    /// ISO 4217 code for amounts that name no currency.
    pub currency: String,
    /// This process's stable name among replicas (its Redis Streams
    /// consumer); empty: the host name and a hash of `data_dir`.
    pub instance_id: String,
    pub server: ServerConfig,
    pub admin: AdminConfig,
    pub log: LogConfig,
    pub database: DatabaseConfig,
    pub redis: RedisConfig,
    pub auth: AuthConfig,
    pub cors: CorsConfig,
    pub rate_limit: RateLimitConfig,
    pub events: EventsConfig,
    pub billing: BillingConfig,
    /// Per service, by name (`[services.orders]`).
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
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    pub listen: SocketAddr,
    /// Bearer token for the admin listener; required off loopback.
    pub token: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A tracing filter (`info`, `stageworks=debug,sqlx=warn`); `RUST_LOG` wins if set.
    pub level: String,
    pub format: LogFormat,
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

/// Access tokens: the signing key and the claims' issuer, audience and lifetimes.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
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

impl Default for AuthConfig {
    fn default() -> Self {
        let tokens = actors::auth::TokenSettings::default();
        Self {
            jwt_secret: String::new(),
            issuer: tokens.issuer,
            audience: tokens.audience,
            access_ttl: tokens.access_ttl,
            refresh_ttl: tokens.refresh_ttl,
        }
    }
}

impl AuthConfig {
    pub fn token_settings(&self) -> actors::auth::TokenSettings {
        actors::auth::TokenSettings {
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

/// The billing service.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BillingConfig {
    /// What invoice numbers start with: `INV-` gives `INV-000001`.
    pub invoice_prefix: String,
}

impl Default for BillingConfig {
    fn default() -> Self {
        Self {
            invoice_prefix: "INV-".into(),
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

/// Requests allowed per period.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitConfig {
    pub requests: u32,
    #[serde(with = "humantime_serde")]
    pub per: Duration,
}

impl Default for LimitConfig {
    fn default() -> Self {
        Self {
            requests: 100,
            per: Duration::from_secs(15 * 60),
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
    /// Per client IP, sign-up and sign-in (stricter).
    pub auth: LimitConfig,
    /// Per email, sign-in attempts (guessing spread over many addresses).
    pub auth_email: LimitConfig,
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
            auth_email: LimitConfig {
                requests: 5,
                per: fifteen_minutes,
            },
            user: LimitConfig {
                requests: 1000,
                per: fifteen_minutes,
            },
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServiceConfig {
    pub enabled: bool,
    /// This service's own database URL, overriding `database.url`.
    pub database_url: String,
    /// Size of the worker pool.
    pub workers: usize,
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
}

impl Default for Config {
    fn default() -> Self {
        Self {
            env: Environment::Development,
            data_dir: PathBuf::from("./data"),
            currency: "USD".into(),
            instance_id: String::new(),
            server: ServerConfig::default(),
            admin: AdminConfig::default(),
            log: LogConfig::default(),
            database: DatabaseConfig::default(),
            redis: RedisConfig::default(),
            auth: AuthConfig::default(),
            cors: CorsConfig::default(),
            rate_limit: RateLimitConfig::default(),
            events: EventsConfig::default(),
            billing: BillingConfig::default(),
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
        }
    }
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 9090)),
            token: None,
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
        }
    }
}

impl ServiceConfig {
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

impl Config {
    /// Loads defaults ← file ← environment. A missing file is an error only if
    /// it was asked for explicitly.
    pub fn load(path: &Path, explicit: bool) -> Result<Self, ConfigError> {
        if explicit && !path.exists() {
            return Err(ConfigError::Missing(path.to_owned()));
        }
        let config: Config = Figment::from(Serialized::defaults(Config::default()))
            .merge(if explicit {
                Toml::file_exact(path)
            } else {
                Toml::file(path)
            })
            .merge(Env::prefixed(ENV_PREFIX).split("__"))
            .extract()
            .map_err(|err| {
                ConfigError::Parse(
                    err.into_iter()
                        .map(|e| e.to_string())
                        .collect::<Vec<_>>()
                        .join("; "),
                )
            })?;
        config.validate(
            actors::SERVICES
                .iter()
                .map(|s| s.name)
                .chain([actors::events::bus::SERVICE_NAME]),
        )?;
        Ok(config)
    }

    /// The settings of a service: its section, or the defaults.
    pub fn service(&self, name: &str) -> ServiceConfig {
        self.services.get(name).cloned().unwrap_or_default()
    }

    /// Checks what types alone cannot: zero durations, empty pools, unknown
    /// services, an exposed admin listener without a token.
    pub fn validate<'a>(
        &self,
        known_services: impl Iterator<Item = &'a str>,
    ) -> Result<(), ConfigError> {
        let known: Vec<&str> = known_services.collect();
        let mut problems = Vec::new();
        let mut positive = |key: String, d: Duration| {
            if d.is_zero() {
                problems.push(format!("{key}: must be greater than zero"));
            }
        };
        positive("server.request_timeout".into(), self.server.request_timeout);
        positive(
            "server.shutdown_timeout".into(),
            self.server.shutdown_timeout,
        );
        positive(
            "server.header_read_timeout".into(),
            self.server.header_read_timeout,
        );
        positive("database.busy_timeout".into(), self.database.busy_timeout);
        positive(
            "database.statement_timeout".into(),
            self.database.statement_timeout,
        );
        positive("redis.command_timeout".into(), self.redis.command_timeout);
        positive("auth.access_ttl".into(), self.auth.access_ttl);
        positive("auth.refresh_ttl".into(), self.auth.refresh_ttl);
        positive("redis.connect_timeout".into(), self.redis.connect_timeout);
        positive(
            "database.acquire_timeout".into(),
            self.database.acquire_timeout,
        );
        positive("events.retry_min".into(), self.events.retry_min);
        positive("events.relay_interval".into(), self.events.relay_interval);
        positive("events.claim_lease".into(), self.events.claim_lease);
        positive(
            "events.stream_claim_idle".into(),
            self.events.stream_claim_idle,
        );
        positive(
            "events.outbox_retention".into(),
            self.events.outbox_retention,
        );
        for (name, s) in &self.services {
            positive(format!("services.{name}.call_timeout"), s.call_timeout);
            positive(format!("services.{name}.within"), s.within);
            positive(format!("services.{name}.backoff_min"), s.backoff_min);
            positive(format!("services.{name}.open_for"), s.open_for);
        }
        if self.server.max_body_bytes == 0 {
            problems.push("server.max_body_bytes: must be greater than zero".into());
        }
        if self.database.read_connections == 0 {
            problems.push("database.read_connections: must be at least 1".into());
        }
        if self.database.max_connections == 0 {
            problems.push("database.max_connections: must be at least 1".into());
        }
        if self.database.sqlite_cache_kib < 64 {
            problems.push("database.sqlite_cache_kib: must be at least 64".into());
        }
        if self.database.write_batch == 0 {
            problems.push("database.write_batch: must be at least 1".into());
        }
        if self.database.write_lanes == 0 {
            problems.push("database.write_lanes: must be at least 1".into());
        } else if self.database.write_lanes > self.database.max_connections as usize {
            problems.push(format!(
                "database.write_lanes: {} is more than database.max_connections ({}): each lane holds a connection while it commits",
                self.database.write_lanes, self.database.max_connections
            ));
        }
        check_database_url("database.url", &self.database.url, &mut problems);
        if !self.redis.url.is_empty() {
            if let Err(problem) = actors::kv::check_redis_url(&self.redis.url) {
                problems.push(format!(
                    "redis.url: {problem} (leave it empty for the in-memory store)"
                ));
            }
        }
        for (key, limit) in [
            ("rate_limit.api", self.rate_limit.api),
            ("rate_limit.auth", self.rate_limit.auth),
            ("rate_limit.auth_email", self.rate_limit.auth_email),
            ("rate_limit.user", self.rate_limit.user),
        ] {
            if limit.requests == 0 {
                problems.push(format!("{key}.requests: must be at least 1"));
            }
            if limit.per.as_micros() < u128::from(limit.requests.max(1)) {
                problems.push(format!(
                    "{key}.per: must allow at least a microsecond per request"
                ));
            }
        }
        let any_origin = self.cors.allowed_origins.iter().any(|o| o == "*");
        if any_origin && self.cors.allow_credentials {
            problems.push(
                "cors.allowed_origins: \"*\" cannot be combined with cors.allow_credentials".into(),
            );
        }
        for origin in self.cors.allowed_origins.iter().filter(|o| *o != "*") {
            let scheme = origin.starts_with("http://") || origin.starts_with("https://");
            if !scheme || origin.ends_with('/') || origin.matches('/').count() != 2 {
                problems.push(format!(
                    "cors.allowed_origins: `{origin}` is not an origin (scheme://host[:port], no path)"
                ));
            }
        }
        for method in &self.cors.allowed_methods {
            if method.parse::<http::Method>().is_err() {
                problems.push(format!(
                    "cors.allowed_methods: `{method}` is not an HTTP method"
                ));
            }
        }
        for header in self
            .cors
            .allowed_headers
            .iter()
            .chain(&self.cors.exposed_headers)
        {
            if http::HeaderName::from_bytes(header.as_bytes()).is_err() {
                problems.push(format!("cors: `{header}` is not a header name"));
            }
        }
        if !self.auth.jwt_secret.is_empty() && self.auth.jwt_secret.len() < 32 {
            problems.push("auth.jwt_secret: must be at least 32 bytes (generate one with `openssl rand -base64 48`)".into());
        }
        if self.env == Environment::Production && self.auth.jwt_secret.is_empty() {
            problems.push(
                "auth.jwt_secret: required when env = \"production\" (at least 32 bytes; STAGEWORKS__AUTH__JWT_SECRET)"
                    .into(),
            );
        }
        if self.auth.access_ttl < Duration::from_secs(1) {
            problems.push("auth.access_ttl: must be at least 1s".into());
        }
        if self.auth.refresh_ttl < self.auth.access_ttl {
            problems.push("auth.refresh_ttl: must not be shorter than auth.access_ttl".into());
        }
        if self.auth.issuer.is_empty() || self.auth.audience.is_empty() {
            problems.push("auth.issuer, auth.audience: must not be empty".into());
        }
        if self.events.max_attempts == 0 {
            problems.push("events.max_attempts: must be at least 1".into());
        }
        if self.events.retry_max < self.events.retry_min {
            problems.push("events.retry_max: must not be shorter than events.retry_min".into());
        }
        if self.events.relay_batch == 0 {
            problems.push("events.relay_batch: must be at least 1".into());
        }
        if self.billing.invoice_prefix.len() > 16
            || !self
                .billing
                .invoice_prefix
                .bytes()
                .all(|b| b.is_ascii_graphic())
        {
            problems
                .push("billing.invoice_prefix: must be at most 16 visible ASCII characters".into());
        }
        if self.redis.pool_size == 0 {
            problems.push("redis.pool_size: must be at least 1".into());
        }
        if self.redis.memory_max_keys == 0 {
            problems.push("redis.memory_max_keys: must be at least 1".into());
        }
        if self.server.listen.port() != 0 && self.server.listen == self.admin.listen {
            problems.push("admin.listen: must differ from server.listen".into());
        }
        let token = self.admin.token.as_deref().unwrap_or("");
        if !self.admin.listen.ip().is_loopback() && token.is_empty() {
            problems.push(format!(
                "admin.listen: {} is not a loopback address, so admin.token must be set",
                self.admin.listen
            ));
        }
        if !token.is_empty() && token.len() < 16 {
            problems.push("admin.token: must be at least 16 characters".into());
        }
        if self.instance_id.len() > 200
            || self
                .instance_id
                .chars()
                .any(|c| c.is_control() || c.is_whitespace())
        {
            problems.push(
                "instance_id: at most 200 characters, no spaces or control characters".into(),
            );
        }
        if !(self.currency.len() == 3 && self.currency.bytes().all(|b| b.is_ascii_uppercase())) {
            problems.push(format!(
                "currency: `{}` is not a three-letter ISO 4217 code in capitals",
                self.currency
            ));
        }
        if let Err(err) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            problems.push(format!(
                "log.level: `{}` is not a valid filter: {err}",
                self.log.level
            ));
        }
        for (name, s) in &self.services {
            if !known.contains(&name.as_str()) {
                problems.push(format!(
                    "services.{name}: no such service (known: {})",
                    known.join(", ")
                ));
            }
            check_database_url(
                &format!("services.{name}.database_url"),
                &s.database_url,
                &mut problems,
            );
            if !(1..=1024).contains(&s.workers) {
                problems.push(format!("services.{name}.workers: must be from 1 to 1024"));
            }
            if s.call_timeout > self.server.request_timeout {
                problems.push(format!(
                    "services.{name}.call_timeout: must not exceed server.request_timeout, or slow calls are cut off before they count as failures"
                ));
            }
            if s.backoff_max < s.backoff_min {
                problems.push(format!(
                    "services.{name}.backoff_max: must not be below backoff_min"
                ));
            }
            if s.open_for_max < s.open_for {
                problems.push(format!(
                    "services.{name}.open_for_max: must not be below open_for"
                ));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(problems))
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

    /// The effective configuration as TOML, with secrets masked.
    pub fn to_masked_toml(&self) -> Result<String, toml::ser::Error> {
        let mut shown = self.clone();
        if shown.admin.token.is_some() {
            shown.admin.token = Some("********".into());
        }
        shown.database.url = mask_password(&shown.database.url);
        shown.redis.url = mask_password(&shown.redis.url);
        if !shown.auth.jwt_secret.is_empty() {
            shown.auth.jwt_secret = "********".into();
        }
        for service in shown.services.values_mut() {
            service.database_url = mask_password(&service.database_url);
        }
        for name in actors::SERVICES.iter().map(|s| s.name) {
            shown.services.entry(name.to_owned()).or_default();
        }
        toml::to_string_pretty(&shown)
    }
}

/// Only PostgreSQL URLs are accepted (SQLite is the empty default).
fn check_database_url(key: &str, url: &str, problems: &mut Vec<String>) {
    if url.is_empty() {
        return;
    }
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        problems.push(format!(
            "{key}: must be a postgres:// URL (leave it empty for SQLite under data_dir)"
        ));
    } else if sqlx::postgres::PgConnectOptions::from_str(url).is_err() {
        problems.push(format!("{key}: not a valid PostgreSQL URL"));
    }
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

    fn invalid(config: &Config) -> Vec<String> {
        match config.validate(["orders"].into_iter()) {
            Err(ConfigError::Invalid(p)) => p,
            other => panic!("expected problems, got {other:?}"),
        }
    }

    #[test]
    fn defaults_are_valid() {
        Config::default().validate(["orders"].into_iter()).unwrap();
    }

    #[test]
    fn zero_timeouts_and_unknown_services_are_named() {
        let mut config = Config::default();
        config.server.request_timeout = Duration::ZERO;
        let orders = ServiceConfig {
            call_timeout: Duration::ZERO,
            ..Default::default()
        };
        config.services.insert("orders".into(), orders);
        config
            .services
            .insert("ordres".into(), ServiceConfig::default());
        let problems = invalid(&config).join("\n");
        assert!(
            problems.contains("server.request_timeout: must be greater than zero"),
            "{problems}"
        );
        assert!(
            problems.contains("services.orders.call_timeout"),
            "{problems}"
        );
        assert!(
            problems.contains("services.ordres: no such service"),
            "{problems}"
        );
    }

    #[test]
    fn an_exposed_admin_listener_needs_a_token() {
        let mut config = Config::default();
        config.admin.listen = "0.0.0.0:9090".parse().unwrap();
        assert!(invalid(&config)[0].starts_with("admin.listen"));
        config.admin.token = Some("a-long-enough-admin-token".into());
        config.validate(["orders"].into_iter()).unwrap();
    }

    #[test]
    fn database_urls_are_checked_and_masked() {
        let mut config = Config::default();
        config.database.url = "mysql://x".into();
        assert!(invalid(&config)[0].starts_with("database.url"));
        config.database.url = "postgres://app:hunter2@db:5432/app".into();
        config.validate(["orders"].into_iter()).unwrap();
        let shown = config.to_masked_toml().unwrap();
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(
            shown.contains("postgres://app:********@db:5432/app"),
            "{shown}"
        );
        assert_eq!(
            config.database_url("orders").as_deref(),
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
        config.validate(["orders"].into_iter()).unwrap();
        assert!(!config.to_masked_toml().unwrap().contains("hunter3"));
    }

    #[test]
    fn the_jwt_secret_is_checked_required_in_production_and_masked() {
        let mut config = Config::default();
        config.auth.jwt_secret = "too short".into();
        assert!(invalid(&config)[0].starts_with("auth.jwt_secret"));
        config.auth.jwt_secret = String::new();
        config.env = Environment::Production;
        assert!(invalid(&config)[0].starts_with("auth.jwt_secret"));
        config.auth.jwt_secret = "a-production-secret-of-enough-bytes-0123456789".into();
        config.validate(["orders"].into_iter()).unwrap();
        assert!(!config.to_masked_toml().unwrap().contains("0123456789"));
    }

    #[test]
    fn masked_output_hides_the_token() {
        let mut config = Config::default();
        config.admin.token = Some("super-secret-admin-token".into());
        let shown = config.to_masked_toml().unwrap();
        assert!(!shown.contains("super-secret"), "{shown}");
        assert!(shown.contains("[services.orders]"), "{shown}");
    }
}
