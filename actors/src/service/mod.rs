//! How a service plugs into the process. A service is a type implementing
//! [`Service`]: its name, its settings (a [`ServiceSettings`] struct read
//! from `[services.<name>]`) and a start function that turns a
//! [`ServiceContext`] into a [`StartedService`] (its supervisor, routes,
//! dependencies, outbox and subscriptions). [`ServiceDefinition::of`] erases
//! the type, so the app is built from a list of definitions — the built-in
//! ones ([`crate::builtin`]) and any a program embedding Stageworks adds.

pub mod resources;
pub mod settings;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use figment::value::Dict;
use futures::future::BoxFuture;
use supervision::{ServiceStarter, SupervisionPolicy};

use crate::api::openapi::Document;
use crate::api::Route;
use crate::events::{Outbox, Subscription};
use crate::storage::{Dependency, StorageSettings, StoreError};

pub use resources::{MissingResource, RateLimiting, Resources};
pub use settings::{Moved, NoSettings, ServiceSettings, SettingProblem};

/// A service: implement this on a (usually empty) type in the service's
/// folder and register [`ServiceDefinition::of`] it.
pub trait Service: Send + Sync + 'static {
    /// Its `[services.<name>]` section, its SQLite file (`<name>.db`) or
    /// PostgreSQL schema, its node in the supervision tree, its metrics label.
    const NAME: &'static str;
    /// Its own settings (use [`NoSettings`] for none).
    type Settings: ServiceSettings;

    /// Opens what the service owns and builds its supervisor and routes; the
    /// app starts the supervisor (and the workers) after every service has
    /// started this way.
    fn start(
        ctx: ServiceContext,
        settings: Self::Settings,
    ) -> impl Future<Output = Result<StartedService, StartError>> + Send;

    /// Its part of the OpenAPI document: an operation for each of its
    /// routes, and their schemas (its folder's `openapi.rs`). The app merges
    /// those of the services it starts; the default, nothing, suits a
    /// service without public routes (a test finds a route left out).
    fn openapi() -> Document {
        crate::api::openapi::document()
    }
}

/// What every service gets from the process to start with.
#[derive(Clone)]
pub struct ServiceContext {
    pub name: &'static str,
    pub policy: SupervisionPolicy,
    pub workers: usize,
    pub call_timeout: Duration,
    pub data_dir: PathBuf,
    pub storage: StorageSettings,
    /// What the process shares between services (key-value store, token
    /// keys, …): take one with [`ServiceContext::resource`].
    pub resources: Resources,
}

impl ServiceContext {
    /// A shared resource by its type (`Arc<dyn KvStore>`, `Arc<TokenKeys>`).
    pub fn resource<T: Clone + Send + Sync + 'static>(&self) -> Result<T, StartError> {
        self.resources
            .require()
            .map_err(|missing| StartError::Resource {
                service: self.name,
                missing,
            })
    }
}

/// A started service: the supervisor for the root to run, its routes, the
/// dependencies its health depends on, and its place in the event flow.
pub struct StartedService {
    pub starter: Arc<dyn ServiceStarter>,
    pub routes: Vec<Route>,
    pub dependencies: Vec<Arc<dyn Dependency>>,
    /// Its outbox, if it publishes events: the relay delivers from it.
    pub outbox: Option<Outbox>,
    /// The topics it consumes, if any.
    pub subscriptions: Vec<Subscription>,
    /// Parts of it supervised as services of their own, each with its own
    /// circuit (notifications' providers: `notifications-email`, …),
    /// started after it.
    pub parts: Vec<Arc<dyn ServiceStarter>>,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("service {service}: {source}")]
    Store {
        service: &'static str,
        #[source]
        source: StoreError,
    },
    #[error("service {service}: {missing}")]
    Resource {
        service: &'static str,
        #[source]
        missing: MissingResource,
    },
}

impl StartError {
    /// For `map_err` on a store's open: `.map_err(StartError::store(NAME))`.
    pub fn store(service: &'static str) -> impl Fn(StoreError) -> StartError {
        move |source| StartError::Store { service, source }
    }
}

/// Sends a worker's reply; an internal error (or a dependency down) is also the worker's failure
/// (returned for the supervisor), so that a broken dependency trips the
/// service's circuit instead of failing request by request.
pub fn respond<T>(
    reply: ractor::RpcReplyPort<Result<T, crate::ServiceError>>,
    result: Result<T, crate::ServiceError>,
) -> Result<(), supervision::BoxError> {
    let failure = result.as_ref().err().and_then(crate::ServiceError::failure);
    // The caller may have timed out and gone: nothing left to tell it.
    let _ = reply.send(result);
    match failure {
        Some(failure) => Err(failure),
        None => Ok(()),
    }
}

/// Sends the replies to a batch (one per item); an internal error among
/// them is also the worker's failure, as in [`respond`].
pub fn respond_all<T>(
    reply: ractor::RpcReplyPort<Vec<Result<T, crate::ServiceError>>>,
    results: Vec<Result<T, crate::ServiceError>>,
) -> Result<(), supervision::BoxError> {
    let failure = results
        .iter()
        .find_map(|result| result.as_ref().err().and_then(crate::ServiceError::failure));
    let _ = reply.send(results);
    match failure {
        Some(failure) => Err(failure),
        None => Ok(()),
    }
}

/// A registered service, its type erased: what the app is built from.
#[derive(Clone, Copy)]
pub struct ServiceDefinition {
    pub name: &'static str,
    /// Keys that moved into this service's section (see [`Moved`]).
    pub moved: &'static [Moved],
    /// Its part of the OpenAPI document ([`Service::openapi`]).
    pub openapi: fn() -> Document,
    configure: fn(&Dict) -> Result<ConfiguredService, Vec<String>>,
}

impl ServiceDefinition {
    pub const fn of<S: Service>() -> Self {
        Self {
            name: S::NAME,
            moved: <S::Settings as ServiceSettings>::MOVED,
            openapi: S::openapi,
            configure: configure::<S>,
        }
    }

    /// Reads and checks the service's own settings from its section (the
    /// keys beyond the supervision keys); every problem names its key.
    pub fn configure(&self, section: &Dict) -> Result<ConfiguredService, Vec<String>> {
        (self.configure)(section)
    }
}

/// A service whose settings have been read: ready to start.
pub struct ConfiguredService {
    pub name: &'static str,
    /// Its settings as `check-config` shows them, defaults included.
    pub shown: Dict,
    /// Its part of the OpenAPI document ([`Service::openapi`]).
    pub openapi: fn() -> Document,
    start: Box<
        dyn FnOnce(ServiceContext) -> BoxFuture<'static, Result<StartedService, StartError>> + Send,
    >,
}

impl ConfiguredService {
    pub fn start(
        self,
        ctx: ServiceContext,
    ) -> BoxFuture<'static, Result<StartedService, StartError>> {
        (self.start)(ctx)
    }
}

fn configure<S: Service>(section: &Dict) -> Result<ConfiguredService, Vec<String>> {
    let settings: S::Settings = settings::parse(S::NAME, section)?;
    Ok(ConfiguredService {
        name: S::NAME,
        shown: settings::shown(&settings),
        openapi: S::openapi,
        start: Box::new(move |ctx| Box::pin(S::start(ctx, settings))),
    })
}
