//! The admin page's data: the live snapshot pushed over server-sent events
//! ([`stream`], `GET /admin/stream`) and the bounded in-memory history a
//! sampler task keeps for the charts ([`history`], `GET /admin/history`).
//! Both read what the process measures already (the supervision tree, the
//! event bus's overview, the Prometheus recorder, `/proc`): nothing is
//! added to the request path.

pub mod history;
mod prometheus;
pub mod snapshot;
pub mod stream;

use std::sync::Arc;
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusHandle;
use supervision::Tree;
use tokio::sync::watch;

use actors::events::EventBus;

use history::History;
use stream::Streams;

/// What the admin page's routes serve from, made once per app.
pub struct Dashboard {
    pub history: Arc<History>,
    pub streams: Streams,
    closing: watch::Sender<bool>,
}

/// The `[admin]` settings the dashboard takes.
#[derive(Clone, Copy, Debug)]
pub struct DashboardSettings {
    pub history_every: Duration,
    pub history_samples: usize,
    pub max_streams: usize,
}

impl Dashboard {
    /// Starts the history's sampler; streams start as clients open them.
    pub fn start(
        settings: DashboardSettings,
        tree: Tree,
        events: EventBus,
        metrics: PrometheusHandle,
    ) -> Self {
        metrics::describe_gauge!(
            "admin_streams_open",
            "Live streams of the admin page (/admin/stream) open now"
        );
        metrics::gauge!("admin_streams_open").set(0.0);
        let (closing, closed) = watch::channel(false);
        let history = Arc::new(History::new(
            settings.history_every,
            settings.history_samples,
        ));
        history::spawn_sampler(
            history.clone(),
            history::Sources {
                tree: tree.clone(),
                events: events.clone(),
                metrics,
            },
            closed.clone(),
        );
        Self {
            history,
            streams: Streams::new(settings.max_streams, tree, events, closed),
            closing,
        }
    }

    /// Ends every stream and the sampler (the app is shutting down: an open
    /// stream would hold the admin listener's drain).
    pub fn close(&self) {
        let _ = self.closing.send(true);
    }
}
