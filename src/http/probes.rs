//! `/live`, `/ready` and `/health` (API.md): liveness without dependency
//! checks; readiness when every service runs with a closed circuit and every
//! dependency answers; health with the details and system figures.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actors::storage::Dependency;
use http::StatusCode;
use serde::Serialize;
use supervision::{CircuitState, ServiceStatus, Tree};

use super::response;
use super::Response;
use crate::telemetry::process;

/// How long one dependency may take to answer a ping before it counts as down.
const PING_TIMEOUT: Duration = Duration::from_secs(2);

pub struct Probes {
    tree: Tree,
    dependencies: Vec<Arc<dyn Dependency>>,
    shutting_down: Arc<AtomicBool>,
    started_at: Instant,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Overall {
    Ok,
    Degraded,
    Down,
}

/// What `/ready` and `/health` answer (the OpenAPI document's `Health`).
#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct Health {
    status: Overall,
    #[schema(value_type = String)]
    version: &'static str,
    uptime_seconds: f64,
    system: System,
    dependencies: Vec<DependencyHealth>,
    services: Vec<ServiceHealth>,
}

#[derive(Serialize, utoipa::ToSchema)]
struct System {
    /// The 1, 5 and 15 minute load averages.
    #[schema(value_type = Option<Vec<f64>>, min_items = 3, max_items = 3)]
    load_avg: Option<[f64; 3]>,
    rss_bytes: Option<u64>,
}

#[derive(Serialize, utoipa::ToSchema)]
struct DependencyHealth {
    name: String,
    #[schema(value_type = String, pattern = "^(up|down)$")]
    status: &'static str,
    latency_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
struct ServiceHealth {
    name: String,
    #[schema(value_type = String, pattern = "^(running|restarting|stopped|failed)$")]
    status: ServiceStatus,
    #[schema(value_type = String)]
    circuit: &'static str,
    restarts: u64,
}

impl Probes {
    pub fn new(
        tree: Tree,
        dependencies: Vec<Arc<dyn Dependency>>,
        shutting_down: Arc<AtomicBool>,
    ) -> Self {
        Self {
            tree,
            dependencies,
            shutting_down,
            started_at: Instant::now(),
        }
    }

    pub fn live(&self) -> Response {
        response::json(StatusCode::OK, r#"{"status":"ok"}"#)
    }

    pub async fn ready(&self) -> Response {
        let health = self.check().await;
        let ready = !self.shutting_down.load(Ordering::Acquire)
            && health.status == Overall::Ok
            && health
                .services
                .iter()
                .all(|s| s.status == ServiceStatus::Running);
        self.answer(health, ready)
    }

    pub async fn health(&self) -> Response {
        let health = self.check().await;
        let serving = health.status != Overall::Down;
        self.answer(health, serving)
    }

    fn answer(&self, health: Health, good: bool) -> Response {
        let status = if good {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        match serde_json::to_vec(&health) {
            Ok(body) => response::json(status, body),
            Err(_) => response::json(StatusCode::INTERNAL_SERVER_ERROR, r#"{"status":"down"}"#),
        }
    }

    async fn check(&self) -> Health {
        let pings = self.dependencies.iter().map(|d| async move {
            let outcome = tokio::time::timeout(PING_TIMEOUT, d.ping()).await;
            let (status, latency_ms, error) = match outcome {
                Ok(Ok(latency)) => ("up", Some(latency.as_secs_f64() * 1000.0), None),
                Ok(Err(err)) => ("down", None, Some(err)),
                Err(_) => (
                    "down",
                    None,
                    Some(format!("no answer within {PING_TIMEOUT:?}")),
                ),
            };
            DependencyHealth {
                name: d.name(),
                status,
                latency_ms,
                error,
            }
        });
        let dependencies = futures::future::join_all(pings).await;
        let services: Vec<ServiceHealth> = self
            .tree
            .services()
            .iter()
            .map(|s| ServiceHealth {
                name: s.name().to_owned(),
                status: s.status(),
                circuit: s.circuit_state().as_str(),
                restarts: s.restarts(),
            })
            .collect();
        let status = overall(
            self.shutting_down.load(Ordering::Acquire),
            &services,
            &dependencies,
        );
        Health {
            status,
            version: env!("CARGO_PKG_VERSION"),
            uptime_seconds: self.started_at.elapsed().as_secs_f64(),
            system: System {
                load_avg: process::load_avg(),
                rss_bytes: process::rss_bytes(),
            },
            dependencies,
            services,
        }
    }
}

/// `down` while shutting down (the process is going away); `degraded` when a
/// circuit is not closed, a service is not running or a dependency is down
/// (the process still serves everything else); `ok` otherwise.
fn overall(
    shutting_down: bool,
    services: &[ServiceHealth],
    dependencies: &[DependencyHealth],
) -> Overall {
    if shutting_down {
        return Overall::Down;
    }
    let all_closed = services
        .iter()
        .all(|s| s.circuit == CircuitState::Closed.as_str() && s.status == ServiceStatus::Running);
    let all_up = dependencies.iter().all(|d| d.status == "up");
    if all_closed && all_up {
        Overall::Ok
    } else {
        Overall::Degraded
    }
}
