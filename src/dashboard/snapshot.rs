//! One live snapshot, as the admin page's stream sends it every second:
//! each service's node (status, circuit with the time left before its
//! half-open attempt, restarts, queue, recent failures, workers), the event
//! flow and the process's resident memory.

use serde::Serialize;
use supervision::{ActorNode, Tree};
use time::OffsetDateTime;

use actors::events::bus::EventsOverview;
use actors::events::EventBus;

use crate::telemetry::process;

#[derive(Serialize)]
pub struct Live {
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    pub services: Vec<ServiceLive>,
    pub events: EventsOverview,
    pub rss_bytes: Option<u64>,
}

/// A service's node, with its recent failures, plus what the page would
/// otherwise reckon from a clock it does not share with the server.
#[derive(Serialize)]
pub struct ServiceLive {
    #[serde(flatten)]
    pub node: ActorNode,
    /// Seconds until an open circuit tries half-open; null when closed or
    /// forced open (no timer).
    pub retry_in_seconds: Option<f64>,
}

/// Takes the snapshot now (the event figures read the outboxes and the
/// dead-letter store: a few small queries).
pub async fn take(tree: &Tree, events: &EventBus) -> Live {
    let at = OffsetDateTime::now_utc();
    let services = tree
        .services()
        .iter()
        .map(|service| service_live(service.snapshot(true), at))
        .collect();
    Live {
        at,
        services,
        events: events.overview().await,
        rss_bytes: process::rss_bytes(),
    }
}

fn service_live(node: ActorNode, now: OffsetDateTime) -> ServiceLive {
    let retry_in_seconds = node
        .circuit
        .as_ref()
        .filter(|c| !c.forced)
        .and_then(|c| c.retry_at)
        .map(|at| (at - now).as_seconds_f64().max(0.0));
    ServiceLive {
        node,
        retry_in_seconds,
    }
}
