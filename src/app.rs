//! Boot and shutdown. [`App::start`] opens every enabled service (database,
//! migrations), starts the supervision tree, binds the public and admin
//! listeners and serves. Shutdown (signal or [`App::shutdown`]): `/ready`
//! turns 503, the public listener stops accepting and drains in-flight
//! requests (bounded by `server.shutdown_timeout`), the services stop in
//! reverse start order, then the admin listener closes.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ractor::Actor;
use supervision::{RootSupervisor, Tree};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use actors::auth::TokenKeys;
use actors::events::bus::BusConfig;
use actors::events::EventBus;
use actors::kv::{KvDependency, KvStore, MemoryKv, RateLimit, ReconnectingRedis, RedisSettings};
use actors::service::{ServiceContext, StartError};
use actors::storage::Dependency;

use crate::config::{Config, Environment, RedisConfig};
use crate::http::admin::Admin;
use crate::http::auth::Authenticator;
use crate::http::edge::Cors;
use crate::http::frontend::Frontend;
use crate::http::probes::Probes;
use crate::http::rate_limit::RateLimiter;
use crate::http::router::{Endpoint, RouteError, Router};
use crate::http::server::{self, ServeSettings};
use crate::telemetry::metrics::{self, MetricsError};

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Service(#[from] StartError),
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Route(#[from] RouteError),
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    /// The token keys cannot be had (a short secret, none in production, an
    /// unreadable secret file): a configuration problem.
    #[error(transparent)]
    Keys(#[from] actors::auth::tokens::KeyError),
    #[error("cannot start the event bus: {0}")]
    Events(#[from] actors::events::bus::BusError),
    #[error("cannot start the supervision tree: {0}")]
    Supervision(String),
}

/// A running Stageworks.
pub struct App {
    public_addr: SocketAddr,
    admin_addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    done: JoinHandle<()>,
}

impl App {
    pub async fn start(config: Config) -> Result<App, AppError> {
        let metrics_handle = metrics::install()?;

        let mut router = Router::new();
        router.add(http::Method::GET, "/live", Endpoint::Live)?;
        router.add(http::Method::GET, "/ready", Endpoint::Ready)?;
        router.add(http::Method::GET, "/health", Endpoint::Health)?;
        let mut starters = Vec::new();
        let mut dependencies: Vec<Arc<dyn Dependency>> = Vec::new();
        let mut producers = Vec::new();
        let mut subscriptions = Vec::new();
        let kv = key_value_store(&config.redis).await;
        let tokens = Arc::new(TokenKeys::load_or_create(
            &config.data_dir,
            Some(config.auth.jwt_secret.as_str()),
            config.env == Environment::Production,
            config.auth.token_settings(),
        )?);
        if config.redis.url.is_empty() {
            tracing::info!("key-value store: in memory (this process only)");
        } else {
            dependencies.push(Arc::new(KvDependency(kv.clone())));
        }
        for definition in actors::SERVICES {
            let settings = config.service(definition.name);
            if !settings.enabled {
                tracing::info!(
                    service = definition.name,
                    "service disabled by configuration"
                );
                continue;
            }
            let ctx = ServiceContext {
                name: definition.name,
                policy: settings.policy(config.server.shutdown_timeout),
                workers: settings.workers,
                call_timeout: settings.call_timeout,
                data_dir: config.data_dir.clone(),
                storage: config.storage(definition.name),
                default_currency: config.currency.clone(),
                invoice_prefix: config.billing.invoice_prefix.clone(),
                kv: kv.clone(),
                tokens: tokens.clone(),
                per_email_limit: config.rate_limit.enabled.then(|| {
                    RateLimit::new(
                        config.rate_limit.auth_email.requests,
                        config.rate_limit.auth_email.per,
                    )
                }),
            };
            let started = (definition.start)(ctx).await?;
            for route in started.routes {
                router.add(route.method.clone(), route.path, Endpoint::Api(route))?;
            }
            dependencies.extend(started.dependencies);
            producers.extend(started.outbox);
            subscriptions.extend(started.subscriptions);
            starters.push(started.starter);
        }
        // Started last, so it is stopped first: no event is taken from an
        // outbox while the services stop.
        let bus_settings = config.service(actors::events::bus::SERVICE_NAME);
        let events = EventBus::start(BusConfig {
            settings: config.events.settings(),
            data_dir: config.data_dir.clone(),
            storage: config.storage(actors::events::bus::SERVICE_NAME),
            redis: redis_settings(&config.redis),
            instance: actors::instance::instance_id(&config.instance_id, &config.data_dir),
            policy: bus_settings.policy(config.server.shutdown_timeout),
            call_timeout: bus_settings.call_timeout,
            producers,
            subscriptions,
        })
        .await?;
        tracing::info!(transport = events.bus.transport(), "event bus started");
        dependencies.extend(events.dependencies);
        starters.push(events.starter);
        let events = events.bus;
        let tree = Tree::new(starters.iter().map(|s| s.shared().clone()).collect());
        let (root, _) = Actor::spawn(None, RootSupervisor, starters)
            .await
            .map_err(|e| AppError::Supervision(e.to_string()))?;

        let public = bind("public listener", config.server.listen).await?;
        let admin = bind("admin listener", config.admin.listen).await?;
        let public_addr = local_addr(&public, "public listener")?;
        let admin_addr = local_addr(&admin, "admin listener")?;

        let shutting_down = Arc::new(AtomicBool::new(false));
        let probes = Probes::new(tree.clone(), dependencies.clone(), shutting_down.clone());
        let closing = dependencies.clone();
        let frontend = Arc::new(Frontend::new(
            router,
            probes,
            Authenticator::new(tokens.clone(), kv.clone()),
            RateLimiter::new(kv.clone(), &config.rate_limit),
            Cors::new(&config.cors),
            config.server.max_body_bytes,
            config.server.request_timeout,
        ));
        let admin_handler = Arc::new(Admin::new(
            tree,
            dependencies,
            metrics_handle,
            events.clone(),
            config.admin.token.clone(),
        ));
        let settings = ServeSettings {
            header_read_timeout: config.server.header_read_timeout,
            shutdown_timeout: config.server.shutdown_timeout,
        };

        let (shutdown, mut stop_requested) = watch::channel(false);
        let (stop_public_tx, stop_public) = watch::channel(false);
        let (stop_admin_tx, stop_admin) = watch::channel(false);
        let public_task = tokio::spawn(server::serve(public, frontend, settings, stop_public));
        let admin_task = tokio::spawn(server::serve(admin, admin_handler, settings, stop_admin));
        tracing::info!(%public_addr, %admin_addr, version = env!("CARGO_PKG_VERSION"), "stageworks is serving");

        let done = tokio::spawn(async move {
            {
                let _ = stop_requested.wait_for(|stop| *stop).await;
            }
            // Readiness fails first, so load balancers stop sending before the
            // listener closes.
            shutting_down.store(true, Ordering::Release);
            tracing::info!("shutting down: /ready answers 503, draining in-flight requests");
            let _ = stop_public_tx.send(true);
            let drained = public_task.await.unwrap_or(false);
            if !drained {
                tracing::warn!("some requests did not finish within the shutdown timeout");
            }
            // Relays and consumers stop first: what they had not settled
            // stays in the outboxes (or pending in the stream).
            events.stop().await;
            tracing::info!("stopping services in reverse start order");
            if let Err(err) = root.stop_and_wait(Some("shutdown".into()), None).await {
                tracing::warn!(error = %err, "root supervisor did not stop cleanly");
            }
            for dependency in &closing {
                dependency.close().await;
            }
            let _ = stop_admin_tx.send(true);
            let _ = admin_task.await;
            tracing::info!("stopped");
        });

        Ok(App {
            public_addr,
            admin_addr,
            shutdown,
            done,
        })
    }

    pub fn public_addr(&self) -> SocketAddr {
        self.public_addr
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// Starts a graceful shutdown (what SIGTERM and SIGINT do).
    pub fn shutdown(&self) {
        let _ = self.shutdown.send(true);
    }

    /// Waits until the shutdown has completed.
    pub async fn stopped(self) {
        let _ = self.done.await;
    }

    /// Serves until SIGTERM or SIGINT, then shuts down gracefully.
    pub async fn run_until_signal(self) {
        wait_for_signal().await;
        tracing::info!("signal received");
        self.shutdown();
        self.stopped().await;
    }
}

/// How often the in-memory store reclaims expired keys.
const MEMORY_REAP_EVERY: Duration = Duration::from_secs(10);

/// The shared key-value store: Redis when configured (connecting in the
/// background if it is not up yet), else memory.
async fn key_value_store(config: &RedisConfig) -> Arc<dyn KvStore> {
    if let Some(settings) = redis_settings(config) {
        return ReconnectingRedis::start(settings).await;
    }
    let memory = Arc::new(MemoryKv::new(
        config.memory_max_keys,
        config.key_prefix.clone(),
    ));
    memory.spawn_reaper(MEMORY_REAP_EVERY);
    memory
}

/// The Redis connection settings, if Redis is configured.
fn redis_settings(config: &RedisConfig) -> Option<RedisSettings> {
    (!config.url.is_empty()).then(|| RedisSettings {
        url: config.url.clone(),
        pool_size: config.pool_size,
        command_timeout: config.command_timeout,
        connect_timeout: config.connect_timeout,
        key_prefix: config.key_prefix.clone(),
    })
}

async fn bind(what: &'static str, addr: SocketAddr) -> Result<TcpListener, AppError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| AppError::Bind { what, addr, source })
}

fn local_addr(listener: &TcpListener, what: &'static str) -> Result<SocketAddr, AppError> {
    listener.local_addr().map_err(|source| AppError::Bind {
        what,
        addr: SocketAddr::from(([0, 0, 0, 0], 0)),
        source,
    })
}

async fn wait_for_signal() {
    let ctrl_c = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %err, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sigterm) => {
                sigterm.recv().await;
            }
            Err(err) => {
                tracing::error!(error = %err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}
