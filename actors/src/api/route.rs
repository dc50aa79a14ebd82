//! A service's route table: each [`Route`] names its method, path pattern,
//! who may call it and its handler, declared in one line through [`Routes`],
//! which binds the handlers to the service (whose circuit the front-end
//! checks first) and to the state they share.

use std::future::Future;
use std::sync::Arc;

use futures::future::BoxFuture;
use http::Method;
use supervision::ServiceShared;

use super::{ApiRequest, ApiResponse};
use crate::ServiceError;

/// Which per-IP rate limit a route counts against.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum LimitGroup {
    /// The public API (`rate_limit.api`).
    #[default]
    Api,
    /// Sign-up and sign-in, stricter (`rate_limit.auth`).
    Auth,
}

/// Who may call a route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Public,
    /// An authenticated user (any role).
    User,
}

type Handler =
    dyn Fn(ApiRequest) -> BoxFuture<'static, Result<ApiResponse, ServiceError>> + Send + Sync;

/// One route of a service: method, path pattern (matchit syntax, `{id}`), who
/// may call it, and the function that turns the request into messages.
#[derive(Clone)]
pub struct Route {
    pub method: Method,
    pub path: &'static str,
    pub access: Access,
    pub limit: LimitGroup,
    /// The largest body it reads, when its contract needs more than the
    /// server's `max_body_bytes` (a 10,000-recipient bulk send).
    pub max_body_bytes: Option<u64>,
    /// The service behind the route, whose circuit the front-end checks first.
    pub service: Arc<ServiceShared>,
    handler: Arc<Handler>,
}

impl Route {
    pub fn new<F, Fut>(
        method: Method,
        path: &'static str,
        access: Access,
        service: Arc<ServiceShared>,
        handler: F,
    ) -> Self
    where
        F: Fn(ApiRequest) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<ApiResponse, ServiceError>> + Send + 'static,
    {
        Self {
            method,
            path,
            access,
            limit: LimitGroup::Api,
            max_body_bytes: None,
            service,
            handler: Arc::new(move |req| Box::pin(handler(req))),
        }
    }

    /// Counts the route against another rate-limit group.
    pub fn limited_as(mut self, group: LimitGroup) -> Self {
        self.limit = group;
        self
    }

    /// Reads bodies of up to `bytes` (or the server's `max_body_bytes`,
    /// whichever is larger).
    pub fn with_body_limit(mut self, bytes: u64) -> Self {
        self.max_body_bytes = Some(bytes);
        self
    }

    pub fn call(&self, req: ApiRequest) -> BoxFuture<'static, Result<ApiResponse, ServiceError>> {
        (self.handler)(req)
    }
}

/// Declares a service's routes: each handler is an
/// `async fn(state: S, req: ApiRequest) -> Result<ApiResponse, ServiceError>`
/// that parses the request, asks the service and maps the answer; `state` is
/// what its handlers share (the service's handle, and whatever else they
/// need), cloned into every call.
pub struct Routes<S> {
    service: Arc<ServiceShared>,
    state: S,
}

impl<S: Clone + Send + Sync + 'static> Routes<S> {
    pub fn new(service: Arc<ServiceShared>, state: S) -> Self {
        Self { service, state }
    }

    pub fn get<F, Fut>(&self, path: &'static str, access: Access, handler: F) -> Route
    where
        F: Fn(S, ApiRequest) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<ApiResponse, ServiceError>> + Send + 'static,
    {
        self.route(Method::GET, path, access, handler)
    }

    pub fn post<F, Fut>(&self, path: &'static str, access: Access, handler: F) -> Route
    where
        F: Fn(S, ApiRequest) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<ApiResponse, ServiceError>> + Send + 'static,
    {
        self.route(Method::POST, path, access, handler)
    }

    pub fn delete<F, Fut>(&self, path: &'static str, access: Access, handler: F) -> Route
    where
        F: Fn(S, ApiRequest) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<ApiResponse, ServiceError>> + Send + 'static,
    {
        self.route(Method::DELETE, path, access, handler)
    }

    /// A route with any other method.
    pub fn route<F, Fut>(
        &self,
        method: Method,
        path: &'static str,
        access: Access,
        handler: F,
    ) -> Route
    where
        F: Fn(S, ApiRequest) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<ApiResponse, ServiceError>> + Send + 'static,
    {
        let state = self.state.clone();
        Route::new(method, path, access, self.service.clone(), move |req| {
            handler(state.clone(), req)
        })
    }
}
