//! The public front-end: every request gets a request id and a span, is routed
//! (404/405 first), authenticated for user routes, refused at once when its
//! service's circuit is open, size-limited, turned into the service's message
//! and answered within the request timeout. Every answer is counted in
//! `http_requests_total` and `http_request_duration_seconds` by route pattern.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_LENGTH};
use http::{Method, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use tracing::Instrument;

use actors::api::{Access, ApiRequest, RequestContext, Route};
use actors::fault::Fault;
use actors::kv::RateDecision;
use actors::ServiceError;
use supervision::Admission;

use super::auth::Authenticator;
use super::edge::{self, Cors};
use super::probes::Probes;
use super::rate_limit::{self, RateLimiter};
use super::request_id;
use super::response;
use super::router::{Endpoint, Resolved, Router};
use super::server::Handler;
use super::Response;

/// Where a request came from: the connection's peer and the request's id,
/// and when the front-end stops waiting for it.
#[derive(Clone, Copy)]
struct Sender<'a> {
    peer: SocketAddr,
    request_id: &'a str,
    deadline: Instant,
}

/// The route label of requests that matched no route.
const UNMATCHED: &str = "unmatched";

pub struct Frontend {
    router: Router,
    probes: Probes,
    auth: Authenticator,
    limiter: RateLimiter,
    cors: Cors,
    max_body_bytes: u64,
    request_timeout: Duration,
}

impl Frontend {
    pub fn new(
        router: Router,
        probes: Probes,
        auth: Authenticator,
        limiter: RateLimiter,
        cors: Cors,
        max_body_bytes: u64,
        request_timeout: Duration,
    ) -> Self {
        Self {
            router,
            probes,
            auth,
            limiter,
            cors,
            max_body_bytes,
            request_timeout,
        }
    }

    async fn dispatch(
        &self,
        req: http::Request<Incoming>,
        peer: SocketAddr,
        request_id: &str,
    ) -> (&'static str, Response) {
        let (parts, body) = req.into_parts();
        if Cors::is_preflight(&parts.method, &parts.headers) {
            return self.preflight(&parts);
        }
        let (endpoint, pattern, params) = match self.router.resolve(&parts.method, parts.uri.path())
        {
            Resolved::Found {
                endpoint,
                pattern,
                params,
            } => (endpoint, pattern, params),
            Resolved::MethodNotAllowed { pattern, allow } => {
                return (
                    pattern,
                    response::error(&ServiceError::MethodNotAllowed { allow }),
                );
            }
            Resolved::NotFound => {
                let err = ServiceError::NotFound(format!("no route for {}", parts.uri.path()));
                return (UNMATCHED, response::error(&err));
            }
        };
        let mut quota = None;
        let answer = match endpoint {
            Endpoint::Live => Ok(self.probes.live()),
            Endpoint::Ready => Ok(self.probes.ready().await),
            Endpoint::Health => Ok(self.probes.health().await),
            Endpoint::Api(route) => {
                let from = Sender {
                    peer,
                    request_id,
                    deadline: Instant::now() + self.request_timeout,
                };
                let call = self.call_api(route, parts, body, params, from, &mut quota);
                match tokio::time::timeout(self.request_timeout, call).await {
                    Ok(result) => result,
                    Err(_) => Err(ServiceError::Timeout(format!(
                        "the request took longer than {} ms",
                        self.request_timeout.as_millis()
                    ))),
                }
            }
        };
        let mut response = answer.unwrap_or_else(|err| {
            if let ServiceError::Internal(detail) = &err {
                tracing::error!(%detail, "request failed");
            }
            response::error(&err)
        });
        if let Some(decision) = &quota {
            rate_limit::decision_headers(response.headers_mut(), decision);
        }
        (pattern, response)
    }

    /// A CORS preflight: 404 for an unknown path, else the policy's answer
    /// for the method it asks about.
    fn preflight(&self, parts: &http::request::Parts) -> (&'static str, Response) {
        let asked = Cors::requested_method(&parts.headers).unwrap_or(Method::OPTIONS);
        match self.router.resolve(&asked, parts.uri.path()) {
            Resolved::Found { pattern, .. } => {
                (pattern, self.cors.preflight(&parts.headers, &[asked]))
            }
            Resolved::MethodNotAllowed { pattern, allow } => {
                (pattern, self.cors.preflight(&parts.headers, &allow))
            }
            Resolved::NotFound => {
                let err = ServiceError::NotFound(format!("no route for {}", parts.uri.path()));
                (UNMATCHED, response::error(&err))
            }
        }
    }

    async fn call_api(
        &self,
        route: &Route,
        parts: http::request::Parts,
        body: Incoming,
        params: Vec<(String, String)>,
        from: Sender<'_>,
        quota: &mut Option<RateDecision>,
    ) -> Result<Response, ServiceError> {
        let request_id = from.request_id;
        // Services learn the client's address from the edge (in the request's
        // context), never from the client.
        let ip = self.limiter.client_ip(&parts.headers, from.peer);
        *quota = self.limiter.check_ip(route.limit, ip).await?;
        let caller = match route.access {
            Access::Public => None,
            Access::User => Some(self.auth.caller(&parts.headers).await?),
        };
        if let Some(caller) = &caller {
            *quota = rate_limit::tighter(*quota, self.limiter.check_user(caller.user_id).await?);
        }
        if let Admission::Reject { retry_after } = route.service.admit() {
            return Err(ServiceError::Unavailable {
                message: format!(
                    "the {} service is unavailable, try again later",
                    route.service.name()
                ),
                retry_after,
            });
        }
        let body = self.read_body(&parts, body).await?;
        let request = ApiRequest {
            method: parts.method.clone(),
            ctx: RequestContext {
                request_id: request_id.to_owned(),
                caller,
                client_ip: Some(ip),
                deadline: Some(from.deadline),
                fault: Fault::from_headers(&parts.headers),
            },
            params,
            query: parts.uri.query().map(str::to_owned),
            headers: parts.headers,
            body,
        };
        route.call(request).await.map(response::from_api)
    }

    /// Reads the body, refusing it with 413 as soon as it is known to be too large.
    async fn read_body(
        &self,
        parts: &http::request::Parts,
        body: Incoming,
    ) -> Result<Bytes, ServiceError> {
        let too_large = || ServiceError::PayloadTooLarge {
            limit: self.max_body_bytes,
        };
        let declared = parts
            .headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|len| len > self.max_body_bytes) {
            return Err(too_large());
        }
        let limit = usize::try_from(self.max_body_bytes).unwrap_or(usize::MAX);
        match Limited::new(body, limit).collect().await {
            Ok(collected) => Ok(collected.to_bytes()),
            Err(err) if err.is::<http_body_util::LengthLimitError>() => Err(too_large()),
            Err(err) => Err(ServiceError::BadRequest(format!(
                "could not read the request body: {err}"
            ))),
        }
    }
}

impl Handler for Frontend {
    async fn handle(self: Arc<Self>, req: http::Request<Incoming>, peer: SocketAddr) -> Response {
        let started = Instant::now();
        let request_id = request_id::from_headers(req.headers());
        let method = req.method().clone();
        let origin = req.headers().get(http::header::ORIGIN).cloned();
        let span = tracing::info_span!("request", request_id = %request_id, method = %method, path = %req.uri().path());
        let (pattern, mut response) = self
            .dispatch(req, peer, &request_id)
            .instrument(span.clone())
            .await;
        edge::secure(response.headers_mut());
        self.cors.decorate(origin.as_ref(), response.headers_mut());
        if let Ok(value) = HeaderValue::from_str(&request_id) {
            response.headers_mut().insert(request_id::HEADER, value);
        }
        let status = response.status();
        let elapsed = started.elapsed();
        record(&method, pattern, status, elapsed);
        span.in_scope(|| {
            tracing::info!(
                status = status.as_u16(),
                route = pattern,
                duration_ms = elapsed.as_secs_f64() * 1000.0,
                peer = %peer,
                "request answered"
            )
        });
        response
    }
}

fn record(method: &Method, route: &'static str, status: StatusCode, elapsed: Duration) {
    // Extension methods are the client's to invent: one label for them all
    // keeps the series count bounded.
    let method = match *method {
        Method::GET
        | Method::POST
        | Method::PUT
        | Method::PATCH
        | Method::DELETE
        | Method::HEAD
        | Method::OPTIONS => method.as_str(),
        _ => "OTHER",
    };
    let labels = [
        ("method", method.to_owned()),
        ("route", route.to_owned()),
        ("status", status.as_u16().to_string()),
    ];
    metrics::counter!("http_requests_total", &labels).increment(1);
    metrics::histogram!("http_request_duration_seconds", &labels).record(elapsed.as_secs_f64());
}
