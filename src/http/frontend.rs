//! The public front-end: every request gets a request id and a span, is routed
//! (404/405 first), authenticated for user routes, refused at once when its
//! service's circuit is open, size-limited, turned into the service's message
//! and answered within the request timeout. Every answer is counted in
//! `http_requests_total` and `http_request_duration_seconds` by route pattern.
//!
//! The front-end enforces the request's size limits itself (target length,
//! header fields) below hyper's own, so that an oversized request is
//! answered here, in the contract's shape, with a request id and the
//! security headers; what hyper refuses by itself on HTTP/1 is answered
//! with [`Frontend::refused`] (see `server.rs`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{HeaderMap, HeaderValue, CONNECTION, CONTENT_LENGTH};
use http::{Method, StatusCode, Uri, Version};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use tracing::Instrument;

use actors::api::{Access, ApiRequest, RequestContext, Route};
use actors::fault::Fault;
use actors::kv::RateDecision;
use actors::ServiceError;
use supervision::Admission;

use super::auth::Authenticator;
use super::docs::Docs;
use super::edge::{self, Cors};
use super::probes::Probes;
use super::rate_limit::{self, RateLimiter};
use super::request_id;
use super::response;
use super::router::{Endpoint, Resolved, Router};
use super::server::Handler;
use super::Response;
use crate::config::ServerConfig;
use crate::telemetry::traces;

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

/// The longest request target (path and query, with the authority when the
/// client sends one) answered: longer is 414. nginx reads 8 KiB lines by
/// default; hyper's own limit (64 KiB, HTTP/1 only) is far above.
pub const MAX_URI_BYTES: usize = 8 * 1024;

/// The most header fields a request may have: more is 431. hyper's HTTP/1
/// parser refuses past 100 by itself (answered by [`Frontend::refused`]);
/// this bounds HTTP/2, where only the size is limited.
pub const MAX_HEADER_FIELDS: usize = 100;

/// The most bytes of header fields a request may have, counted as HTTP/2
/// does (name + value + 32 per field): more is 431. Below what hyper lets
/// through on HTTP/2 (its `max_header_list_size`, set in `server.rs` to
/// twice this) and on HTTP/1 (its ~400 KiB read buffer).
pub const MAX_HEADER_BYTES: usize = 32 * 1024;

pub struct Frontend {
    router: Router,
    probes: Probes,
    docs: Docs,
    auth: Authenticator,
    limiter: RateLimiter,
    cors: Cors,
    max_body_bytes: u64,
    request_timeout: Duration,
    body_read_timeout: Duration,
}

impl Frontend {
    pub fn new(
        router: Router,
        probes: Probes,
        docs: Docs,
        auth: Authenticator,
        limiter: RateLimiter,
        cors: Cors,
        server: &ServerConfig,
    ) -> Self {
        Self {
            router,
            probes,
            docs,
            auth,
            limiter,
            cors,
            max_body_bytes: server.max_body_bytes,
            request_timeout: server.request_timeout,
            body_read_timeout: server.body_read_limit(),
        }
    }

    async fn dispatch(
        &self,
        req: http::Request<Incoming>,
        peer: SocketAddr,
        request_id: &str,
    ) -> (&'static str, Response) {
        let (parts, body) = req.into_parts();
        if let Err(err) = within_limits(&parts.uri, &parts.headers) {
            return (UNMATCHED, response::error(&err));
        }
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
        let version = parts.version;
        let answer = match endpoint {
            Endpoint::Live => Ok(self.probes.live()),
            Endpoint::Ready => Ok(self.probes.ready().await),
            Endpoint::Health => Ok(self.probes.health().await),
            Endpoint::OpenApi => Ok(self.docs.document()),
            Endpoint::Docs => self.docs.page(
                params
                    .iter()
                    .find(|(k, _)| k == "file")
                    .map(|(_, v)| v.as_str()),
            ),
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
            let mut response = response::error(&err);
            // The rest of the body was never read, so the connection cannot
            // carry another request: say so rather than let the client find
            // out. HTTP/2 has no such header (the stream is reset instead).
            if matches!(err, ServiceError::RequestTimeout(_)) && version < Version::HTTP_2 {
                response
                    .headers_mut()
                    .insert(CONNECTION, HeaderValue::from_static("close"));
            }
            response
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
        let limit = route
            .max_body_bytes
            .map_or(self.max_body_bytes, |own| own.max(self.max_body_bytes));
        let body = self.read_body(&parts, body, limit).await?;
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

    /// Reads the body, refusing it with 413 as soon as it is known to be too
    /// large, and with 408 if it is not whole within the body read timeout.
    /// The timeout bounds the whole body, not the gap between chunks: a
    /// client trickling a byte at a time would pass any gap timer while
    /// holding the request (and a worker's patience) for ever.
    async fn read_body(
        &self,
        parts: &http::request::Parts,
        body: Incoming,
        max_bytes: u64,
    ) -> Result<Bytes, ServiceError> {
        let too_large = || ServiceError::PayloadTooLarge { limit: max_bytes };
        let declared = parts
            .headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|len| len > max_bytes) {
            return Err(too_large());
        }
        let limit = usize::try_from(max_bytes).unwrap_or(usize::MAX);
        let read = Limited::new(body, limit).collect();
        let Ok(read) = tokio::time::timeout(self.body_read_timeout, read).await else {
            return Err(ServiceError::RequestTimeout(format!(
                "the request body was not received within {} ms",
                self.body_read_timeout.as_millis()
            )));
        };
        match read {
            Ok(collected) => Ok(collected.to_bytes()),
            Err(err) if err.is::<http_body_util::LengthLimitError>() => Err(too_large()),
            Err(err) => Err(ServiceError::BadRequest(format!(
                "could not read the request body: {err}"
            ))),
        }
    }
}

/// 414 for a request target longer than [`MAX_URI_BYTES`], 431 for more
/// header fields than [`MAX_HEADER_FIELDS`] or bytes of them than
/// [`MAX_HEADER_BYTES`].
fn within_limits(uri: &Uri, headers: &HeaderMap) -> Result<(), ServiceError> {
    let target = uri.path_and_query().map_or(0, |p| p.as_str().len())
        + uri.authority().map_or(0, |a| a.as_str().len());
    if target > MAX_URI_BYTES {
        return Err(ServiceError::UriTooLong(format!(
            "the request target is longer than {MAX_URI_BYTES} bytes"
        )));
    }
    if headers.len() > MAX_HEADER_FIELDS {
        return Err(ServiceError::HeadersTooLarge(format!(
            "the request has more than {MAX_HEADER_FIELDS} header fields"
        )));
    }
    let bytes: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 32)
        .sum();
    if bytes > MAX_HEADER_BYTES {
        return Err(ServiceError::HeadersTooLarge(format!(
            "the request's header fields are larger than {MAX_HEADER_BYTES} bytes"
        )));
    }
    Ok(())
}

impl Handler for Frontend {
    /// What every public answer carries, on an error hyper found before a
    /// request existed: the contract's shape, a new request id (the
    /// client's could not be read), the security headers.
    fn refused(&self, err: &ServiceError) -> Response {
        let request_id = request_id::from_headers(&HeaderMap::new());
        let mut response = response::error(err);
        edge::secure(response.headers_mut());
        self.cors.decorate(None, response.headers_mut());
        if let Ok(value) = HeaderValue::from_str(&request_id) {
            response.headers_mut().insert(request_id::HEADER, value);
        }
        let status = response.status();
        // No method was read: counted with the extension methods.
        count("OTHER", UNMATCHED, status, Duration::ZERO);
        tracing::info!(
            request_id = %request_id,
            status = status.as_u16(),
            error = %err,
            "request refused before it could be read"
        );
        response
    }

    async fn handle(self: Arc<Self>, req: http::Request<Incoming>, peer: SocketAddr) -> Response {
        let started = Instant::now();
        let request_id = request_id::from_headers(req.headers());
        let method = req.method().clone();
        let origin = req.headers().get(http::header::ORIGIN).cloned();
        let traced = traces::enabled();
        let span = if traced {
            // The span is named when it starts (its first entry), so the
            // route is looked up here already (matchit: well under a µs).
            let route = match self.router.resolve(&method, req.uri().path()) {
                Resolved::Found { pattern, .. } | Resolved::MethodNotAllowed { pattern, .. } => {
                    Some(pattern)
                }
                Resolved::NotFound => None,
            };
            server_span(&request_id, &method, route, req.uri().path(), req.headers())
        } else {
            tracing::info_span!("request", request_id = %request_id, method = %method, path = %req.uri().path())
        };
        let (pattern, mut response) = self
            .dispatch(req, peer, &request_id)
            .instrument(span.clone())
            .await;
        if traced {
            answered(&span, response.status());
            if let Some(value) = traces::traceparent(&span) {
                response.headers_mut().insert(traces::TRACEPARENT, value);
            }
        }
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

/// The request's span when traces are on: the log span's fields and the
/// server span's (OpenTelemetry's HTTP conventions), named after its route
/// template (`POST /api/v1/orders`; the method alone for a path that matches
/// none), continuing the client's `traceparent` if it sent a well-formed one.
fn server_span(
    request_id: &str,
    method: &Method,
    route: Option<&'static str>,
    path: &str,
    headers: &HeaderMap,
) -> tracing::Span {
    let method = method_label(method);
    let name = match route {
        Some(route) => format!("{method} {route}"),
        None => method.to_owned(),
    };
    let span = tracing::info_span!(
        "request",
        request_id = %request_id,
        method = method,
        path = %path,
        otel.name = name.as_str(),
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        http.request.method = method,
        http.route = route,
        http.response.status_code = tracing::field::Empty,
        url.path = %path,
    );
    traces::continue_trace(&span, headers);
    span
}

/// Records the answer's status on the server span (5xx: an error).
fn answered(span: &tracing::Span, status: StatusCode) {
    span.record("http.response.status_code", status.as_u16());
    if status.is_server_error() {
        span.record("otel.status_code", "error");
    }
}

fn record(method: &Method, route: &'static str, status: StatusCode, elapsed: Duration) {
    count(method_label(method), route, status, elapsed);
}

/// Extension methods are the client's to invent: one label for them all
/// keeps the series count (and span names) bounded.
fn method_label(method: &Method) -> &str {
    match *method {
        Method::GET
        | Method::POST
        | Method::PUT
        | Method::PATCH
        | Method::DELETE
        | Method::HEAD
        | Method::OPTIONS => method.as_str(),
        _ => "OTHER",
    }
}

fn count(method: &str, route: &'static str, status: StatusCode, elapsed: Duration) {
    let labels = [
        ("method", method.to_owned()),
        ("route", route.to_owned()),
        ("status", status.as_u16().to_string()),
    ];
    metrics::counter!("http_requests_total", &labels).increment(1);
    metrics::histogram!("http_request_duration_seconds", &labels).record(elapsed.as_secs_f64());
}
