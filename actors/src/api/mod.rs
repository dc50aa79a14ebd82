//! What a service's routes see of an HTTP request and give back, free of hyper:
//! the front-end builds an [`ApiRequest`] after routing, size limits and
//! authentication, and turns the [`ApiResponse`] (or [`ServiceError`]) into HTTP.
//!
//! The request's [`RequestContext`] (request id, caller, client address,
//! deadline, injected fault) is set once by the front-end and travels to the
//! service's worker beside the message, in its envelope ([`ApiRequest::ask`]);
//! messages carry only what the operation itself needs. [`route`] holds the
//! route table a service declares with [`Routes`].

pub mod json;
pub mod openapi;
mod route;

pub use route::{Access, LimitGroup, Route, Routes};

use std::net::IpAddr;
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use ractor::RpcReplyPort;
use serde::Serialize;
use supervision::{BoxError, Lane, ServiceHandle};
use uuid::Uuid;

use crate::fault::Fault;
use crate::{FieldError, ServiceError};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    User,
    Admin,
}

/// How roles are stored and carried in tokens.
pub fn role_str(role: Role) -> &'static str {
    match role {
        Role::User => "user",
        Role::Admin => "admin",
    }
}

pub fn parse_role(value: &str) -> Option<Role> {
    match value {
        "user" => Some(Role::User),
        "admin" => Some(Role::Admin),
        _ => None,
    }
}

/// Who is calling, as the front-end established it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    pub user_id: Uuid,
    pub role: Role,
    /// The session the caller's access token belongs to.
    pub session_id: Option<Uuid>,
}

impl Caller {
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }

    /// Owner-or-admin rule: may this caller see a resource owned by `owner`?
    pub fn may_access(&self, owner: Uuid) -> bool {
        self.is_admin() || self.user_id == owner
    }
}

/// What travels with every message a request sends to a service, in the
/// envelope beside it (the worker's `WorkerHandler::Context`). Event
/// deliveries carry the default: no caller, no request id of their own (the
/// bus's span carries the event's).
#[derive(Clone, Debug, Default)]
pub struct RequestContext {
    /// For the logs and for the causes stored with what the request wrote.
    pub request_id: String,
    /// Set by the front-end on [`Access::User`] routes.
    pub caller: Option<Caller>,
    /// The client's address as the edge established it (the peer, or the
    /// configured proxy header's value); never read from a client's header.
    pub client_ip: Option<IpAddr>,
    /// When the front-end stops waiting for the answer (its
    /// `server.request_timeout` runs out).
    pub deadline: Option<Instant>,
    /// The fault to inject, in `fault-injection` builds.
    pub fault: Option<Fault>,
}

/// A worker that takes a message after this deadline skips it: the
/// front-end has answered 504 already.
impl supervision::Deadline for RequestContext {
    fn deadline(&self) -> Option<Instant> {
        self.deadline
    }
}

impl RequestContext {
    /// The caller, for operations that need one: 401 without.
    pub fn caller(&self) -> Result<&Caller, ServiceError> {
        self.caller
            .as_ref()
            .ok_or_else(|| ServiceError::Unauthenticated("authentication required".into()))
    }

    /// What a service's worker does before every message of a request (its
    /// `WorkerHandler::before`): strikes the injected fault, if any, so that
    /// no handler has to. An `Err` (and a panic) is the worker's failure.
    pub async fn strike_fault(&self) -> Result<(), BoxError> {
        Fault::strike(self.fault).await.map_err(BoxError::from)
    }
}

/// The reply port of a message that answers `T` or a [`ServiceError`].
pub type Reply<T> = RpcReplyPort<Result<T, ServiceError>>;

pub struct ApiRequest {
    /// `GET` and `HEAD` are asked on the service's read lane.
    pub method: http::Method,
    pub ctx: RequestContext,
    pub params: Vec<(String, String)>,
    pub query: Option<String>,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl ApiRequest {
    /// The caller ([`RequestContext::caller`]): 401 without.
    pub fn caller(&self) -> Result<&Caller, ServiceError> {
        self.ctx.caller()
    }

    /// Asks `service` the message built around a reply port, with this
    /// request's context in the envelope, and flattens both ways it can
    /// fail: the call's ([`supervision::CallError`], mapped to its status)
    /// and the service's answer. A `GET` or `HEAD` goes to the service's
    /// read workers ([`Lane::Reads`]), if it has any: reads only read, so
    /// they are safe to keep apart from the writes a flood brings.
    pub async fn ask<M, R, F>(
        &self,
        service: &ServiceHandle<M, RequestContext>,
        build: F,
    ) -> Result<R, ServiceError>
    where
        M: Send + 'static,
        R: Send + 'static,
        F: FnOnce(Reply<R>) -> M,
    {
        let lane = if self.method == http::Method::GET || self.method == http::Method::HEAD {
            Lane::Reads
        } else {
            Lane::Main
        };
        service.call_on(lane, self.ctx.clone(), build).await?
    }

    /// A path parameter (`{id}`) parsed as a UUID; a malformed one names no
    /// existing resource, so it is a 404.
    pub fn uuid_param(&self, name: &str, what: &str) -> Result<Uuid, ServiceError> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| Uuid::parse_str(v).ok())
            .ok_or_else(|| ServiceError::NotFound(format!("{what} not found")))
    }

    /// The body as a JSON object ([`json::parse_object`]): 400 for a wrong
    /// content type, malformed JSON or a key given twice (at any depth); 422
    /// for JSON that is not an object, and for a number out of f64's range,
    /// naming its field.
    pub fn json_object(&self) -> Result<serde_json::Map<String, serde_json::Value>, ServiceError> {
        let content_type = self
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let essence = content_type.split(';').next().unwrap_or("").trim();
        if !essence.eq_ignore_ascii_case("application/json") {
            return Err(ServiceError::BadRequest(
                "content-type must be application/json".into(),
            ));
        }
        json::parse_object(&self.body).map_err(|err| match err {
            json::BodyError::NotAnObject => {
                ServiceError::validation("body", "must be a JSON object")
            }
            json::BodyError::NumberOutOfRange { path } => {
                ServiceError::validation(path, json::OUT_OF_RANGE)
            }
            err @ (json::BodyError::Malformed(_) | json::BodyError::DuplicateKey { .. }) => {
                ServiceError::BadRequest(err.to_string())
            }
        })
    }

    /// Query parameters, decoded.
    pub fn query_pairs(&self) -> Vec<(String, String)> {
        self.query
            .as_deref()
            .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
            .unwrap_or_default()
    }

    /// An optional UUID query parameter (`?user_id=`); a malformed one is a
    /// 422 naming it.
    pub fn uuid_query(&self, name: &str) -> Result<Option<Uuid>, ServiceError> {
        self.query_pairs()
            .into_iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| {
                Uuid::parse_str(&v).map_err(|_| ServiceError::validation(name, "must be a UUID"))
            })
            .transpose()
    }

    /// `?page=&limit=`: page ≥ 1 (default 1), limit 1..=100 (default 20).
    pub fn page_request(&self) -> Result<PageRequest, ServiceError> {
        let mut page = PageRequest::default();
        let mut errors = Vec::new();
        for (key, value) in self.query_pairs() {
            match key.as_str() {
                "page" => match value.parse::<u32>() {
                    Ok(p) if p >= 1 => page.page = p,
                    _ => errors.push(FieldError::new("page", "must be an integer of at least 1")),
                },
                "limit" => match value.parse::<u32>() {
                    Ok(l) if (1..=100).contains(&l) => page.limit = l,
                    _ => errors.push(FieldError::new("limit", "must be an integer from 1 to 100")),
                },
                _ => {}
            }
        }
        if errors.is_empty() {
            Ok(page)
        } else {
            Err(ServiceError::Validation(errors))
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageRequest {
    pub page: u32,
    pub limit: u32,
}

impl Default for PageRequest {
    fn default() -> Self {
        Self { page: 1, limit: 20 }
    }
}

impl PageRequest {
    pub fn offset(&self) -> i64 {
        i64::from(self.page - 1) * i64::from(self.limit)
    }
}

/// A page of a list, in the list shape of API.md.
#[derive(Clone, Debug, Serialize)]
pub struct Page<T> {
    pub data: Vec<T>,
    pub pagination: Pagination,
}

#[derive(Clone, Copy, Debug, Serialize, utoipa::ToSchema)]
pub struct Pagination {
    pub page: u32,
    pub limit: u32,
    pub total: u64,
    pub pages: u64,
}

impl<T> Page<T> {
    pub fn new(data: Vec<T>, request: PageRequest, total: u64) -> Self {
        Self {
            data,
            pagination: Pagination {
                page: request.page,
                limit: request.limit,
                total,
                pages: total.div_ceil(u64::from(request.limit)),
            },
        }
    }
}

#[derive(Debug)]
pub struct ApiResponse {
    pub status: StatusCode,
    /// JSON, or empty for 204.
    pub body: Bytes,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// A body sent as it is produced, in place of `body` (an export).
    pub stream: Option<BodyStream>,
}

/// A response body written while it is sent: chunks through a bounded
/// channel, so a producer (a query over a million rows) runs at the pace
/// of the client and holds at most the channel's chunks in memory. A
/// client that goes away drops the receiving end: the producer's next
/// [`ChunkSender::send`] fails and it stops.
#[derive(Debug)]
pub struct BodyStream {
    pub content_type: HeaderValue,
    chunks: tokio::sync::mpsc::Receiver<Bytes>,
}

/// The producing end of a [`BodyStream`].
#[derive(Clone, Debug)]
pub struct ChunkSender(tokio::sync::mpsc::Sender<Bytes>);

/// The client is gone: nothing more will be read.
#[derive(Debug, thiserror::Error)]
#[error("the client stopped reading the response")]
pub struct ClientGone;

impl ChunkSender {
    /// Waits for room in the channel, then hands the chunk on.
    pub async fn send(&self, chunk: Bytes) -> Result<(), ClientGone> {
        self.0.send(chunk).await.map_err(|_| ClientGone)
    }

    /// Whether the client is gone (nothing sent).
    pub fn is_closed(&self) -> bool {
        self.0.is_closed()
    }

    /// Resolves once the client is gone (its body dropped): for a producer
    /// that waits between chunks, so it stops without a send to find out.
    pub async fn closed(&self) {
        self.0.closed().await
    }
}

impl BodyStream {
    /// A stream of `content_type` holding at most `capacity` chunks.
    pub fn channel(content_type: HeaderValue, capacity: usize) -> (ChunkSender, BodyStream) {
        let (tx, chunks) = tokio::sync::mpsc::channel(capacity.max(1));
        (
            ChunkSender(tx),
            BodyStream {
                content_type,
                chunks,
            },
        )
    }

    /// The next chunk; `None` once the producer finished (or dropped its end).
    pub fn poll_chunk(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Bytes>> {
        self.chunks.poll_recv(cx)
    }
}

impl ApiResponse {
    pub fn json(status: StatusCode, value: &impl Serialize) -> Result<Self, ServiceError> {
        let body = serde_json::to_vec(value).map_err(ServiceError::internal)?;
        Ok(Self::raw(status, Bytes::from(body)))
    }

    pub fn raw(status: StatusCode, body: Bytes) -> Self {
        Self {
            status,
            body,
            headers: Vec::new(),
            stream: None,
        }
    }

    /// A 200 whose body is `stream`'s chunks, sent as they come.
    pub fn streamed(stream: BodyStream) -> Self {
        Self {
            status: StatusCode::OK,
            body: Bytes::new(),
            headers: Vec::new(),
            stream: Some(stream),
        }
    }

    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }
}
