//! The admin listener (loopback by default): Prometheus metrics, the live
//! supervision tree with operator actions (restart an actor, force a
//! circuit), the event flow (per subscriber, dead letters, replay), and the
//! admin page with its live stream and history ([`crate::dashboard`]).
//! A bearer token guards it when `admin.token` is set; the page and its
//! static assets are served without it (they reveal nothing).

use std::net::SocketAddr;
use std::sync::Arc;

use http::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use http::{Method, StatusCode};
use hyper::body::Incoming;
use metrics_exporter_prometheus::PrometheusHandle;
use subtle::ConstantTimeEq;
use supervision::{ControlError, Tree};

use actors::admin_actions::{AdminAction, AdminActions};
use actors::events::bus::ReplayError;
use actors::events::EventBus;
use actors::storage::Dependency;
use actors::ServiceError;

use super::request_id;
use super::response;
use super::router::{Resolved, RouteError, Router};
use super::server::Handler;
use super::Response;
use crate::dashboard::Dashboard;
use crate::telemetry::metrics;

/// The admin page: static HTML, its script and its style, which read
/// `/admin/stream` and `/admin/history` with the token the operator types
/// in, so serving them needs no token itself.
const LIVE_PAGE: &str = include_str!("assets/admin.html");
const PAGE_SCRIPT: &str = include_str!("assets/admin.js");
const PAGE_STYLE: &str = include_str!("assets/admin.css");

/// The page loads its script and style from this listener alone; no inline
/// code, no other origin, no framing, no forms.
const PAGE_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

pub struct Admin {
    routes: Router<Action>,
    tree: Tree,
    dependencies: Vec<Arc<dyn Dependency>>,
    metrics: PrometheusHandle,
    events: EventBus,
    token: Option<String>,
    /// Where the operator's actions are recorded (the audit service, if it runs).
    actions: AdminActions,
    dashboard: Dashboard,
}

/// How many dead letters one listing shows (newest first).
const DEAD_LETTER_PAGE: u32 = 100;

impl Admin {
    pub fn new(
        tree: Tree,
        dependencies: Vec<Arc<dyn Dependency>>,
        metrics: PrometheusHandle,
        events: EventBus,
        token: Option<String>,
        actions: AdminActions,
        dashboard: Dashboard,
    ) -> Result<Self, RouteError> {
        Ok(Self {
            routes: admin_routes()?,
            tree,
            dependencies,
            metrics,
            events,
            token: token.filter(|t| !t.is_empty()),
            actions,
            dashboard,
        })
    }

    /// Ends the live streams and the history's sampler (at shutdown, before
    /// the listener drains).
    pub fn close_dashboard(&self) {
        self.dashboard.close();
    }

    fn authorized(&self, headers: &http::HeaderMap) -> bool {
        let Some(token) = &self.token else {
            return true;
        };
        // The same reading as the public edge's (scheme in any case); sent
        // twice, the header authorises nobody.
        let mut values = headers.get_all(AUTHORIZATION).iter();
        let presented = match (values.next(), values.next()) {
            (Some(value), None) => value
                .to_str()
                .ok()
                .and_then(super::auth::bearer_token)
                .unwrap_or(""),
            _ => "",
        };
        presented.as_bytes().ct_eq(token.as_bytes()).into()
    }

    /// The page or one of its assets, if `path` names one.
    fn page_asset(path: &str) -> Option<Response> {
        let (body, content_type) = match path {
            "/admin" | "/admin/" => (LIVE_PAGE, "text/html; charset=utf-8"),
            "/admin/admin.js" => (PAGE_SCRIPT, "text/javascript; charset=utf-8"),
            "/admin/admin.css" => (PAGE_STYLE, "text/css; charset=utf-8"),
            _ => return None,
        };
        let mut response = response::json(StatusCode::OK, body);
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
        headers.insert(
            "content-security-policy",
            HeaderValue::from_static(PAGE_POLICY),
        );
        headers.insert(
            "x-content-type-options",
            HeaderValue::from_static("nosniff"),
        );
        headers.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
        headers.insert("cache-control", HeaderValue::from_static("no-cache"));
        Some(response)
    }

    /// `GET /admin/stream`: server-sent events, or 503 past `admin.max_streams`.
    fn stream(&self) -> Result<Response, ServiceError> {
        let body = self
            .dashboard
            .streams
            .open()
            .map_err(|err| ServiceError::Unavailable {
                message: err.to_string(),
                retry_after: std::time::Duration::from_secs(5),
            })?;
        let content_type = body.content_type.clone();
        let mut response = http::Response::new(super::Body::Stream(body));
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, content_type);
        headers.insert("cache-control", HeaderValue::from_static("no-store"));
        // Proxies that buffer (nginx) would hold the events back.
        headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
        Ok(response)
    }

    async fn route(
        &self,
        method: &Method,
        path: &str,
        query: Option<&str>,
        request_id: &str,
    ) -> Result<Response, ServiceError> {
        let path = match path.trim_end_matches('/') {
            "" => "/",
            trimmed => trimmed,
        };
        let (action, params) = match self.routes.resolve(method, path) {
            Resolved::Found {
                endpoint, params, ..
            } => (*endpoint, params),
            Resolved::MethodNotAllowed { allow, .. } => {
                return Err(ServiceError::MethodNotAllowed { allow })
            }
            Resolved::NotFound => {
                return Err(ServiceError::NotFound(format!("no admin route for {path}")))
            }
        };
        let param = |name: &str| {
            params
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
                .unwrap_or("")
        };
        match action {
            Action::Metrics => {
                self.tree.publish_gauges();
                for dependency in &self.dependencies {
                    dependency.publish_gauges();
                }
                let mut response = response::json(StatusCode::OK, metrics::render(&self.metrics));
                response.headers_mut().insert(
                    CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                );
                Ok(response)
            }
            Action::Tree => {
                #[derive(serde::Serialize)]
                struct Tree {
                    root: supervision::ActorNode,
                }
                node(
                    StatusCode::OK,
                    &Tree {
                        root: self.tree.snapshot(),
                    },
                )
            }
            Action::Actor => {
                let name = param("name");
                let found = self.tree.node(name).ok_or_else(|| not_found(name))?;
                node(StatusCode::OK, &found)
            }
            Action::Restart => {
                let restarted = self
                    .tree
                    .restart(param("name"))
                    .await
                    .map_err(control_error)?;
                self.record(
                    "admin.actor_restarted",
                    "actor",
                    param("name"),
                    request_id,
                    &restarted,
                )
                .await;
                node(StatusCode::ACCEPTED, &restarted)
            }
            Action::Circuit { open } => {
                let forced = self
                    .tree
                    .force_circuit(param("service"), open)
                    .await
                    .map_err(control_error)?;
                let action = if open {
                    "admin.circuit_opened"
                } else {
                    "admin.circuit_closed"
                };
                self.record(action, "circuit", param("service"), request_id, &forced)
                    .await;
                node(StatusCode::OK, &forced)
            }
            Action::Stream => self.stream(),
            Action::History => node(StatusCode::OK, &self.dashboard.history.view()),
            Action::Events => node(StatusCode::OK, &self.events.overview().await),
            Action::DeadLetters => {
                let all = form_urlencoded::parse(query.unwrap_or("").as_bytes())
                    .any(|(k, v)| k == "all" && v == "true");
                let letters = self
                    .events
                    .dead_letters(all, DEAD_LETTER_PAGE)
                    .await
                    .map_err(ServiceError::internal)?;
                node(StatusCode::OK, &serde_json::json!({ "data": letters }))
            }
            Action::Replay => {
                let id = param("id");
                let id = uuid::Uuid::parse_str(id)
                    .map_err(|_| ServiceError::NotFound(format!("no dead letter `{id}`")))?;
                let letter = self.events.replay(id).await.map_err(replay_error)?;
                self.record(
                    "admin.dead_letter_replayed",
                    "dead_letter",
                    &id.to_string(),
                    request_id,
                    &letter,
                )
                .await;
                node(StatusCode::OK, &letter)
            }
            #[cfg(feature = "fault-injection")]
            Action::Poison => {
                let user = param("user");
                let user = uuid::Uuid::parse_str(user)
                    .map_err(|_| ServiceError::NotFound(format!("`{user}` is not a user id")))?;
                actors::fault::poison::set(param("subscriber"), user, method == Method::PUT);
                Ok(response::json(StatusCode::NO_CONTENT, ""))
            }
            #[cfg(feature = "fault-injection")]
            Action::JobFault => {
                let (job, fault) = (param("job"), param("fault"));
                let fault = actors::fault::jobs::parse(fault).ok_or_else(|| {
                    ServiceError::NotFound(format!("`{fault}` is not a job fault (error, panic)"))
                })?;
                actors::fault::jobs::set(job, (method == Method::PUT).then_some(fault));
                Ok(response::json(StatusCode::NO_CONTENT, ""))
            }
            #[cfg(feature = "fault-injection")]
            Action::Inject => {
                // The event as JSON in `?event=` (the admin listener reads no
                // bodies): id, topic, occurred_at, request_id, actor_id, data.
                let json = form_urlencoded::parse(query.unwrap_or("").as_bytes())
                    .find(|(k, _)| k == "event")
                    .map(|(_, v)| v.into_owned())
                    .unwrap_or_default();
                let event = actors::events::Event::from_json(&json)
                    .map_err(|e| ServiceError::validation("event", e.to_string()))?;
                let producer = param("producer");
                self.events
                    .inject(producer, &event)
                    .await
                    .ok_or_else(|| ServiceError::NotFound(format!("no producer `{producer}`")))?
                    .map_err(ServiceError::internal)?;
                node(StatusCode::ACCEPTED, &event)
            }
        }
    }
}

impl Admin {
    /// Records an action that succeeded, with what it answered, before the
    /// operator hears of it (so the record is there once they do).
    async fn record(
        &self,
        action: &'static str,
        resource_type: &'static str,
        resource_id: &str,
        request_id: &str,
        answer: &impl serde::Serialize,
    ) {
        // The live streams show the change at once, not at their next tick.
        self.dashboard.streams.poke();
        self.actions
            .record(AdminAction {
                action,
                resource_type,
                resource_id: resource_id.to_owned(),
                request_id: request_id.to_owned(),
                data: serde_json::to_value(answer).unwrap_or_default(),
            })
            .await;
    }
}

/// What an admin route does.
#[derive(Clone, Copy, Debug)]
enum Action {
    Metrics,
    Tree,
    Actor,
    Restart,
    Circuit {
        open: bool,
    },
    Stream,
    History,
    Events,
    DeadLetters,
    Replay,
    #[cfg(feature = "fault-injection")]
    Poison,
    #[cfg(feature = "fault-injection")]
    JobFault,
    #[cfg(feature = "fault-injection")]
    Inject,
}

/// The admin listener's routes (the page, `/admin/`, and its assets are
/// served before routing: they need no token).
fn admin_routes() -> Result<Router<Action>, RouteError> {
    let mut routes = Router::new();
    routes.add(Method::GET, "/metrics", Action::Metrics)?;
    routes.add(Method::GET, "/admin/actors", Action::Tree)?;
    routes.add(Method::GET, "/admin/actors/{name}", Action::Actor)?;
    routes.add(
        Method::POST,
        "/admin/actors/{name}/restart",
        Action::Restart,
    )?;
    routes.add(
        Method::POST,
        "/admin/circuits/{service}/open",
        Action::Circuit { open: true },
    )?;
    routes.add(
        Method::POST,
        "/admin/circuits/{service}/close",
        Action::Circuit { open: false },
    )?;
    routes.add(Method::GET, "/admin/stream", Action::Stream)?;
    routes.add(Method::GET, "/admin/history", Action::History)?;
    routes.add(Method::GET, "/admin/events", Action::Events)?;
    routes.add(
        Method::GET,
        "/admin/events/dead-letters",
        Action::DeadLetters,
    )?;
    routes.add(
        Method::POST,
        "/admin/events/dead-letters/{id}/replay",
        Action::Replay,
    )?;
    #[cfg(feature = "fault-injection")]
    for method in [Method::PUT, Method::DELETE] {
        routes.add(
            method,
            "/admin/faults/poison/{subscriber}/{user}",
            Action::Poison,
        )?;
    }
    #[cfg(feature = "fault-injection")]
    for method in [Method::PUT, Method::DELETE] {
        routes.add(method, "/admin/faults/jobs/{job}/{fault}", Action::JobFault)?;
    }
    #[cfg(feature = "fault-injection")]
    routes.add(
        Method::POST,
        "/admin/faults/events/{producer}",
        Action::Inject,
    )?;
    Ok(routes)
}

fn node(status: StatusCode, value: &impl serde::Serialize) -> Result<Response, ServiceError> {
    let body = serde_json::to_vec(value).map_err(ServiceError::internal)?;
    Ok(response::json(status, body))
}

fn not_found(name: &str) -> ServiceError {
    ServiceError::NotFound(format!("no actor named `{name}`"))
}

fn replay_error(err: ReplayError) -> ServiceError {
    match err {
        ReplayError::NotFound => ServiceError::NotFound(err.to_string()),
        ReplayError::AlreadyReplayed
        | ReplayError::NoSubscriber(_)
        | ReplayError::FailedAgain(_) => ServiceError::Conflict(err.to_string()),
        ReplayError::Unavailable { retry_after, .. } => ServiceError::Unavailable {
            message: err.to_string(),
            retry_after,
        },
        ReplayError::Store(store) => ServiceError::internal(store),
    }
}

fn control_error(err: ControlError) -> ServiceError {
    match err {
        ControlError::NotFound(name) => not_found(&name),
        ControlError::NotRunning(_) => ServiceError::Unavailable {
            message: err.to_string(),
            retry_after: std::time::Duration::from_secs(1),
        },
    }
}

impl Handler for Admin {
    async fn handle(self: Arc<Self>, req: http::Request<Incoming>, _peer: SocketAddr) -> Response {
        let request_id = request_id::from_headers(req.headers());
        let page = (req.method() == Method::GET)
            .then(|| Self::page_asset(req.uri().path()))
            .flatten();
        let mut response = if let Some(page) = page {
            page
        } else if self.authorized(req.headers()) {
            self.route(
                req.method(),
                req.uri().path(),
                req.uri().query(),
                &request_id,
            )
            .await
            .unwrap_or_else(|err| response::error(&err))
        } else {
            let mut r = response::error(&ServiceError::Unauthenticated(
                "a valid admin bearer token is required".into(),
            ));
            r.headers_mut()
                .insert("www-authenticate", HeaderValue::from_static("Bearer"));
            r
        };
        if let Ok(value) = HeaderValue::from_str(&request_id) {
            response.headers_mut().insert(request_id::HEADER, value);
        }
        response
    }
}
