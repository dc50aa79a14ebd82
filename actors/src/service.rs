//! How a service plugs into the process: a [`ServiceDefinition`] (its name and
//! start function) listed in [`crate::SERVICES`], started with a
//! [`ServiceContext`] into a [`StartedService`].

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use supervision::{ServiceStarter, SupervisionPolicy};

use crate::api::Route;
use crate::events::{Outbox, Subscription};
use crate::kv::KvStore;
use crate::storage::{Dependency, StorageSettings, StoreError};

/// Everything a service needs from the configuration to start.
#[derive(Clone)]
pub struct ServiceContext {
    pub name: &'static str,
    pub policy: SupervisionPolicy,
    pub workers: usize,
    pub call_timeout: Duration,
    pub data_dir: PathBuf,
    pub storage: StorageSettings,
    /// ISO 4217 code used when a request names none.
    pub default_currency: String,
    /// What invoice numbers start with (`billing.invoice_prefix`, `INV-`).
    pub invoice_prefix: String,
    /// The shared key-value store (memory, or Redis shared by replicas).
    pub kv: Arc<dyn KvStore>,
    /// Sign-in attempts allowed per email (`rate_limit.auth_email`); `None`
    /// when rate limiting is off.
    pub per_email_limit: Option<crate::kv::RateLimit>,
    /// The keys access tokens are signed and verified with (the front-end
    /// verifies with the same).
    pub tokens: Arc<crate::auth::TokenKeys>,
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
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("service {service}: {source}")]
    Store {
        service: &'static str,
        #[source]
        source: StoreError,
    },
}

pub type StartFn = fn(ServiceContext) -> BoxFuture<'static, Result<StartedService, StartError>>;

/// Sends a worker's reply; an internal error is also the worker's failure
/// (returned for the supervisor), so that a broken dependency trips the
/// service's circuit instead of failing request by request.
pub fn respond<T>(
    reply: ractor::RpcReplyPort<Result<T, crate::ServiceError>>,
    result: Result<T, crate::ServiceError>,
) -> Result<(), supervision::BoxError> {
    let failure = match &result {
        Err(crate::ServiceError::Internal(detail)) => Some(detail.clone()),
        _ => None,
    };
    // The caller may have timed out and gone: nothing left to tell it.
    let _ = reply.send(result);
    match failure {
        Some(detail) => Err(detail.into()),
        None => Ok(()),
    }
}

/// Sends the replies to a batch (one per item); an internal error among
/// them is also the worker's failure, as in [`respond`].
pub fn respond_all<T>(
    reply: ractor::RpcReplyPort<Vec<Result<T, crate::ServiceError>>>,
    results: Vec<Result<T, crate::ServiceError>>,
) -> Result<(), supervision::BoxError> {
    let failure = results.iter().find_map(|result| match result {
        Err(crate::ServiceError::Internal(detail)) => Some(detail.clone()),
        _ => None,
    });
    let _ = reply.send(results);
    match failure {
        Some(detail) => Err(detail.into()),
        None => Ok(()),
    }
}

/// A registered service.
#[derive(Clone, Copy)]
pub struct ServiceDefinition {
    pub name: &'static str,
    pub start: StartFn,
}
