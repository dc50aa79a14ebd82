//! Boot and shutdown. An app is built from a configuration and a list of
//! service definitions ([`App::builder`]; [`App::start`] takes the built-in
//! ones). [`AppBuilder::build`] checks the configuration against the
//! services, makes the shared resources, opens every enabled service
//! (database, migrations) and starts the supervision tree;
//! [`Built::run`] binds the public and admin listeners and serves.
//! Shutdown (signal or [`App::shutdown`]): `/ready` turns 503, the public
//! listener stops accepting and drains in-flight requests (bounded by
//! `server.shutdown_timeout`), the services stop in reverse start order,
//! then the admin listener closes.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorRef};
use supervision::{RootSupervisor, ServiceStarter, Tree};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use actors::access::TokenKeys;
use actors::events::bus::BusConfig;
use actors::events::{EventBus, Outbox, Subscription};
use actors::kv::{KvDependency, KvStore, MemoryKv, ReconnectingRedis, RedisSettings};
use actors::service::{RateLimiting, Resources, ServiceContext, ServiceDefinition, StartError};
use actors::storage::Dependency;

use crate::config::{Config, ConfigError, Environment, RedisConfig};
use crate::dashboard::{Dashboard, DashboardSettings};
use crate::http::admin::Admin;
use crate::http::auth::Authenticator;
use crate::http::docs::{self, Docs};
use crate::http::edge::Cors;
use crate::http::frontend::Frontend;
use crate::http::probes::Probes;
use crate::http::rate_limit::RateLimiter;
use crate::http::router::{Endpoint, RouteError, Router};
use crate::http::server::{self, ServeSettings};
use crate::telemetry::metrics::{self, MetricsError};
use crate::telemetry::process;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("service {0} is registered twice")]
    DuplicateService(&'static str),
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
    Keys(#[from] actors::access::tokens::KeyError),
    /// The data directory cannot be made, or is open to other users in production.
    #[error(transparent)]
    DataDir(#[from] crate::data_dir::DataDirError),
    #[error("cannot start the event bus: {0}")]
    Events(#[from] actors::events::bus::BusError),
    #[error("cannot start the supervision tree: {0}")]
    Supervision(String),
    #[error("cannot write the OpenAPI document: {0}")]
    Document(serde_json::Error),
}

impl AppError {
    /// Whether the configuration is at fault (exit code 2) rather than the
    /// environment.
    pub fn is_configuration(&self) -> bool {
        matches!(
            self,
            AppError::Config(_)
                | AppError::DuplicateService(_)
                | AppError::Keys(_)
                | AppError::DataDir(_)
        )
    }
}

/// A running Stageworks.
pub struct App {
    routes: Vec<(http::Method, &'static str)>,
    public_addr: SocketAddr,
    admin_addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    done: JoinHandle<()>,
}

/// What an app is built from: a configuration, service definitions (in
/// start order), and shared resources beyond the process's own.
pub struct AppBuilder {
    config: Config,
    services: Vec<ServiceDefinition>,
    resources: Resources,
}

impl AppBuilder {
    /// Registers a service (started after those registered before it,
    /// stopped before them).
    pub fn service(mut self, definition: ServiceDefinition) -> Self {
        self.services.push(definition);
        self
    }

    pub fn services(mut self, definitions: impl IntoIterator<Item = ServiceDefinition>) -> Self {
        self.services.extend(definitions);
        self
    }

    /// Adds a shared resource for the services to take by type (see
    /// [`ServiceContext::resource`]); the process's own (key-value store,
    /// token keys, [`RateLimiting`]) are added by [`AppBuilder::build`].
    pub fn resource<T: Clone + Send + Sync + 'static>(mut self, value: T) -> Self {
        self.resources.insert(value);
        self
    }

    /// Checks the configuration against the registered services, makes the
    /// shared resources, starts every enabled service and the event bus
    /// under the root supervisor; nothing listens yet.
    pub async fn build(self) -> Result<Built, AppError> {
        let AppBuilder {
            config,
            services,
            mut resources,
        } = self;
        for (i, definition) in services.iter().enumerate() {
            if services[..i].iter().any(|d| d.name == definition.name) {
                return Err(AppError::DuplicateService(definition.name));
            }
        }
        config.validate(&services)?;
        let configured = config.configure(&services)?;
        let metrics_handle = metrics::install()?;

        let mut started = Started::new()?;
        let kv = key_value_store(&config.redis).await;
        if config.redis.url.is_empty() {
            tracing::info!("key-value store: in memory (this process only)");
        } else {
            started
                .dependencies
                .push(Arc::new(KvDependency(kv.clone())));
        }
        crate::data_dir::prepare(&config.data_dir, config.env)?;
        let tokens = Arc::new(TokenKeys::load_or_create(
            &config.data_dir,
            Some(config.tokens.jwt_secret.as_str()),
            config.env == Environment::Production,
            config.tokens.token_settings(),
        )?);
        resources.insert(kv.clone());
        resources.insert(tokens.clone());
        resources.insert(RateLimiting {
            enabled: config.rate_limit.enabled,
        });
        // The admin listener's actions reach the service that records them
        // (audit) through this slot; without one they are not recorded.
        let admin_actions = resources
            .get::<actors::admin_actions::AdminActions>()
            .unwrap_or_default();
        resources.insert(admin_actions.clone());
        resources.insert(actors::instance::InstanceId(actors::instance::instance_id(
            &config.instance_id,
            &config.data_dir,
        )));

        for (section, service) in configured {
            if !section.enabled {
                tracing::info!(service = service.name, "service disabled by configuration");
                continue;
            }
            let ctx = ServiceContext {
                name: service.name,
                policy: section.policy(config.server.shutdown_timeout),
                workers: section.workers,
                call_timeout: section.call_timeout,
                data_dir: config.data_dir.clone(),
                storage: config.storage(service.name),
                resources: resources.clone(),
            };
            let document = (service.openapi)();
            started.add(service.start(ctx).await?, document)?;
        }
        let events = started.start_events(&config).await?;
        let tree = Tree::new(
            started
                .starters
                .iter()
                .map(|s| s.shared().clone())
                .collect(),
        );
        let (root, _) = Actor::spawn(None, RootSupervisor, started.starters)
            .await
            .map_err(|e| AppError::Supervision(e.to_string()))?;

        let shutting_down = Arc::new(AtomicBool::new(false));
        let dependencies = started.dependencies;
        let probes = Probes::new(tree.clone(), dependencies.clone(), shutting_down.clone());
        let routes = started.router.routes();
        let docs = Docs::new(&started.document).map_err(AppError::Document)?;
        let frontend = Frontend::new(
            started.router,
            probes,
            docs,
            Authenticator::new(tokens, kv.clone()),
            RateLimiter::new(kv, &config.rate_limit),
            Cors::new(&config.cors),
            &config.server,
        );
        let dashboard = Dashboard::start(
            DashboardSettings {
                history_every: config.admin.history_every,
                history_samples: config.admin.history_samples,
                max_streams: config.admin.max_streams,
            },
            tree.clone(),
            events.clone(),
            metrics_handle.clone(),
        );
        let admin = Admin::new(
            tree,
            dependencies.clone(),
            metrics_handle,
            events.clone(),
            config.admin.token.clone(),
            admin_actions,
            dashboard,
        )?;
        Ok(Built {
            config,
            routes,
            frontend: Arc::new(frontend),
            admin: Arc::new(admin),
            events,
            root,
            dependencies,
            shutting_down,
        })
    }

    /// [`AppBuilder::build`], then [`Built::run`].
    pub async fn start(self) -> Result<App, AppError> {
        self.build().await?.run().await
    }
}

/// What the services gave as they started, gathered for the router, the
/// probes, the event bus and the root supervisor.
struct Started {
    router: Router,
    /// The OpenAPI document: the front-end's own routes and every started
    /// service's part.
    document: actors::api::openapi::Document,
    starters: Vec<Arc<dyn ServiceStarter>>,
    dependencies: Vec<Arc<dyn Dependency>>,
    producers: Vec<Outbox>,
    subscriptions: Vec<Subscription>,
}

impl Started {
    fn new() -> Result<Self, AppError> {
        let mut router = Router::new();
        router.add(http::Method::GET, "/live", Endpoint::Live)?;
        router.add(http::Method::GET, "/ready", Endpoint::Ready)?;
        router.add(http::Method::GET, "/health", Endpoint::Health)?;
        router.add(http::Method::GET, docs::DOCUMENT_PATH, Endpoint::OpenApi)?;
        router.add(http::Method::GET, docs::PAGE_PATH, Endpoint::Docs)?;
        router.add(http::Method::GET, docs::FILE_PATH, Endpoint::Docs)?;
        Ok(Self {
            router,
            document: {
                let mut document = actors::api::openapi::base();
                document.merge(docs::own_routes());
                document
            },
            starters: Vec::new(),
            dependencies: Vec::new(),
            producers: Vec::new(),
            subscriptions: Vec::new(),
        })
    }

    fn add(
        &mut self,
        started: actors::StartedService,
        document: actors::api::openapi::Document,
    ) -> Result<(), AppError> {
        self.document.merge(document);
        for route in started.routes {
            self.router
                .add(route.method.clone(), route.path, Endpoint::Api(route))?;
        }
        let gating: Vec<_> = started
            .dependencies
            .iter()
            .filter(|d| d.gates_calls())
            .cloned()
            .collect();
        if !gating.is_empty() {
            // Its database found down, it refuses calls at once until the
            // probe finds it back (supervision::outage).
            let probe = actors::storage::DependencyProbe(gating);
            started.starter.shared().set_probe(Arc::new(probe));
        }
        self.dependencies.extend(started.dependencies);
        self.producers.extend(started.outbox);
        self.subscriptions.extend(started.subscriptions);
        self.starters.push(started.starter);
        self.starters.extend(started.parts);
        Ok(())
    }

    /// The event bus, started last so it is stopped first: no event is
    /// taken from an outbox while the services stop.
    async fn start_events(&mut self, config: &Config) -> Result<EventBus, AppError> {
        let section = config.service(actors::events::bus::SERVICE_NAME);
        let events = EventBus::start(BusConfig {
            settings: config.events.settings(),
            data_dir: config.data_dir.clone(),
            storage: config.storage(actors::events::bus::SERVICE_NAME),
            redis: redis_settings(&config.redis),
            instance: actors::instance::instance_id(&config.instance_id, &config.data_dir),
            policy: section.policy(config.server.shutdown_timeout),
            call_timeout: section.call_timeout,
            producers: std::mem::take(&mut self.producers),
            subscriptions: std::mem::take(&mut self.subscriptions),
        })
        .await?;
        tracing::info!(transport = events.bus.transport(), "event bus started");
        self.dependencies.extend(events.dependencies);
        self.starters.push(events.starter);
        Ok(events.bus)
    }
}

/// A built app: services running under the root supervisor, the handlers
/// of both listeners made, nothing bound yet.
pub struct Built {
    config: Config,
    routes: Vec<(http::Method, &'static str)>,
    frontend: Arc<Frontend>,
    admin: Arc<Admin>,
    events: EventBus,
    root: ActorRef<<RootSupervisor as Actor>::Msg>,
    dependencies: Vec<Arc<dyn Dependency>>,
    shutting_down: Arc<AtomicBool>,
}

impl Built {
    /// Binds the public and admin listeners and serves until
    /// [`App::shutdown`].
    pub async fn run(self) -> Result<App, AppError> {
        let config = &self.config;
        let public = bind("public listener", config.server.listen).await?;
        let admin = bind("admin listener", config.admin.listen).await?;
        let public_addr = local_addr(&public, "public listener")?;
        let admin_addr = local_addr(&admin, "admin listener")?;
        let descriptor_limit = process::descriptor_limit();
        let public_settings = ServeSettings {
            listener: "public",
            max_connections: server::max_connections(
                config.server.max_connections,
                descriptor_limit,
            ),
            first_byte_timeout: config.server.first_byte_timeout,
            header_read_timeout: config.server.header_read_timeout,
            idle_timeout: config.server.idle_timeout,
            shutdown_timeout: config.server.shutdown_timeout,
        };
        warn_if_beyond_descriptors(public_settings.max_connections, descriptor_limit);
        // The admin listener's budget is part of the descriptors the public
        // cap leaves free, so public saturation cannot starve it.
        let admin_settings = ServeSettings {
            listener: "admin",
            max_connections: config.admin.max_connections,
            ..public_settings
        };

        let (shutdown, stop_requested) = watch::channel(false);
        let (stop_public_tx, stop_public) = watch::channel(false);
        let (stop_admin_tx, stop_admin) = watch::channel(false);
        let public_task = tokio::spawn(server::serve(
            public,
            self.frontend,
            public_settings,
            stop_public,
        ));
        let admin_handler = self.admin.clone();
        let admin_task = tokio::spawn(server::serve(admin, self.admin, admin_settings, stop_admin));
        tracing::info!(
            %public_addr,
            %admin_addr,
            max_connections = public_settings.max_connections,
            admin_max_connections = admin_settings.max_connections,
            descriptor_limit = ?descriptor_limit,
            version = env!("CARGO_PKG_VERSION"),
            "stageworks is serving"
        );

        let stopping = Stopping {
            shutting_down: self.shutting_down,
            stop_public: stop_public_tx,
            public_task,
            events: self.events,
            root: self.root,
            dependencies: self.dependencies,
            admin: admin_handler,
            stop_admin: stop_admin_tx,
            admin_task,
        };
        let done = tokio::spawn(stopping.after(stop_requested));
        Ok(App {
            routes: self.routes,
            public_addr,
            admin_addr,
            shutdown,
            done,
        })
    }
}

/// What a graceful shutdown stops, in order.
struct Stopping {
    shutting_down: Arc<AtomicBool>,
    stop_public: watch::Sender<bool>,
    public_task: JoinHandle<bool>,
    events: EventBus,
    root: ActorRef<<RootSupervisor as Actor>::Msg>,
    dependencies: Vec<Arc<dyn Dependency>>,
    admin: Arc<Admin>,
    stop_admin: watch::Sender<bool>,
    admin_task: JoinHandle<bool>,
}

impl Stopping {
    async fn after(self, mut stop_requested: watch::Receiver<bool>) {
        {
            let _ = stop_requested.wait_for(|stop| *stop).await;
        }
        // Readiness fails first, so load balancers stop sending before the
        // listener closes.
        self.shutting_down.store(true, Ordering::Release);
        tracing::info!("shutting down: /ready answers 503, draining in-flight requests");
        let _ = self.stop_public.send(true);
        let drained = self.public_task.await.unwrap_or(false);
        if !drained {
            tracing::warn!("some requests did not finish within the shutdown timeout");
        }
        // Relays and consumers stop first: what they had not settled
        // stays in the outboxes (or pending in the stream).
        self.events.stop().await;
        tracing::info!("stopping services in reverse start order");
        if let Err(err) = self.root.stop_and_wait(Some("shutdown".into()), None).await {
            tracing::warn!(error = %err, "root supervisor did not stop cleanly");
        }
        for dependency in &self.dependencies {
            dependency.close().await;
        }
        // Live streams never end by themselves: end them before the drain.
        self.admin.close_dashboard();
        let _ = self.stop_admin.send(true);
        let _ = self.admin_task.await;
        // The spans of the last requests and deliveries leave before the
        // app is reported stopped (the provider itself is the process's).
        crate::telemetry::traces::flush().await;
        tracing::info!("stopped");
    }
}

impl App {
    /// An app of the given services (none yet: add them with
    /// [`AppBuilder::service`], the built-in ones with `actors::BUILTIN`).
    pub fn builder(config: Config) -> AppBuilder {
        AppBuilder {
            config,
            services: Vec::new(),
            resources: Resources::new(),
        }
    }

    /// Builds and runs the built-in services.
    pub async fn start(config: Config) -> Result<App, AppError> {
        App::builder(config)
            .services(actors::BUILTIN.iter().copied())
            .start()
            .await
    }

    pub fn public_addr(&self) -> SocketAddr {
        self.public_addr
    }

    /// Every method and path pattern the public listener routes (the
    /// OpenAPI document must list each, and nothing else).
    pub fn routes(&self) -> &[(http::Method, &'static str)] {
        &self.routes
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

/// A configured public cap above what the descriptor limit leaves: at
/// saturation `accept` itself fails ("too many open files"), and the
/// databases and the admin listener may be short of descriptors too.
fn warn_if_beyond_descriptors(max_connections: usize, descriptor_limit: Option<u64>) {
    let Some(limit) = descriptor_limit else {
        return;
    };
    let room = server::derived_max_connections(Some(limit));
    if max_connections > room {
        tracing::warn!(
            max_connections,
            descriptor_limit = limit,
            room,
            "server.max_connections is more than the descriptor limit leaves after its reserve of max(256, limit / 8); raise the limit (ulimit -n, LimitNOFILE) or lower the cap"
        );
    }
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
