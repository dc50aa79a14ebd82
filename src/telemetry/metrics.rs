//! Metrics: the `metrics` facade, rendered by metrics-exporter-prometheus on
//! the admin listener.
//!
//! Two traps of the exporter are handled here: histograms are exported as real
//! histograms with explicit buckets (its default is a summary, which cannot be
//! aggregated across replicas), and its upkeep runs on a timer (without it,
//! histogram data accumulates between scrapes and memory grows under load).
//! The recorder is process-global, so it is installed once.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use super::process;

/// Latency buckets in seconds: 1 ms to 10 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Event delivery lag spans retries and outages: up to minutes.
const EVENT_LAG_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0,
];

/// Writes per group-commit transaction: 1 when idle, up to `database.write_batch`.
const WRITE_BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];

const UPKEEP_EVERY: Duration = Duration::from_secs(5);

static HANDLE: Mutex<Option<PrometheusHandle>> = Mutex::new(None);

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("cannot build the Prometheus recorder: {0}")]
    Build(#[from] metrics_exporter_prometheus::BuildError),
    #[error("another metrics recorder is already installed")]
    AlreadyInstalled,
    #[error("cannot start the metrics upkeep thread: {0}")]
    Upkeep(std::io::Error),
}

/// Installs the recorder (once per process) and starts its upkeep thread
/// (a thread, not a task: it must outlive whichever runtime installed it).
pub fn install() -> Result<PrometheusHandle, MetricsError> {
    let mut installed = HANDLE.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(handle) = installed.as_ref() {
        return Ok(handle.clone());
    }
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full("event_delivery_lag_seconds".into()),
            EVENT_LAG_BUCKETS,
        )?
        .set_buckets_for_metric(
            Matcher::Full("db_write_batch_size".into()),
            WRITE_BATCH_BUCKETS,
        )?
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)?
        .build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).map_err(|_| MetricsError::AlreadyInstalled)?;
    describe();
    register();
    let upkeep = handle.clone();
    std::thread::Builder::new()
        .name("metrics-upkeep".into())
        .spawn(move || loop {
            std::thread::sleep(UPKEEP_EVERY);
            upkeep.run_upkeep();
        })
        .map_err(MetricsError::Upkeep)?;
    *installed = Some(handle.clone());
    Ok(handle)
}

/// The text exposition format: the recorded metrics, then the process
/// figures sampled now.
pub fn render(handle: &PrometheusHandle) -> String {
    let mut text = handle.render();
    if !text.is_empty() && !text.ends_with("\n\n") {
        text.push('\n');
    }
    text.push_str(&process::exposition());
    text
}

/// Series that exist from the start: the build, and the counters that no
/// component owns a label set of (the others are registered at 0 where
/// their labels are known: per service, listener, subscriber).
fn register() {
    metrics::gauge!("stageworks_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    for counter in [
        "password_hashes_shed_total",
        "kv_memory_evictions_total",
        "rate_limit_errors_total",
    ] {
        metrics::counter!(counter).increment(0);
    }
}

fn describe() {
    describe_counter!(
        "http_requests_total",
        "HTTP requests answered, by method, route pattern and status"
    );
    describe_histogram!(
        "http_request_duration_seconds",
        Unit::Seconds,
        "Time to answer an HTTP request, by method, route pattern and status"
    );
    describe_gauge!(
        "http_connections_open",
        "Connections open on a listener (public, admin)"
    );
    describe_gauge!(
        "http_connections_limit",
        "The most connections a listener keeps open at once (server.max_connections, admin.max_connections)"
    );
    describe_counter!(
        "http_connections_rejected_total",
        "Connections accepted and closed at once because the listener was at its connection limit"
    );
    describe_counter!(
        "http_connections_timed_out_total",
        "Connections closed by the server: no first byte within server.first_byte_timeout (timeout=first_byte), an HTTP/1 request head not whole within server.header_read_timeout of its first byte (timeout=header), or no request for server.idle_timeout (timeout=idle)"
    );
    describe_counter!(
        "http_accept_errors_total",
        "Failed accepts on a listener (out of descriptors, of buffers), each followed by a back-off"
    );
    describe_counter!(
        "actor_messages_total",
        "Messages handled by a service's workers"
    );
    describe_histogram!(
        "actor_message_duration_seconds",
        Unit::Seconds,
        "Time a worker spent handling one message"
    );
    describe_gauge!(
        "actor_mailbox_depth",
        "Messages waiting in a service's worker mailboxes"
    );
    describe_counter!(
        "actor_restarts_total",
        "Restarts of a service's workers by its supervisor"
    );
    describe_counter!(
        "actor_failures_total",
        "Failures (panics, errors, failed starts, handlers running past the call timeout) of a service's workers"
    );
    describe_counter!(
        "actor_shed_total",
        "Calls refused at once because the service's queue was full (load, not failures)"
    );
    describe_counter!(
        "actor_expired_total",
        "Messages skipped because their caller had given up before a worker took them"
    );
    describe_histogram!(
        "actor_queue_wait_seconds",
        Unit::Seconds,
        "Time a message waited in the queue before a worker took it"
    );
    describe_gauge!(
        "actor_queue_limit",
        "How many messages may wait for a service's workers"
    );
    describe_counter!(
        "password_hashes_shed_total",
        "Password hashes refused at once because every core was busy and the hash queue full"
    );
    describe_counter!(
        "actor_refused_total",
        "Messages a worker dropped unstarted (reason=dependency_down: queued before its service's outage began)"
    );
    describe_gauge!(
        "dependency_outage",
        "1 while a service refuses calls at once because its database is down, else 0"
    );
    describe_counter!(
        "notifications_sent_total",
        "Notifications their provider took, by channel"
    );
    describe_counter!(
        "notifications_failed_total",
        "Failed notification attempts (retried or dead), by channel"
    );
    describe_gauge!(
        "notifications_queue_depth",
        "Notifications in the notifications service's queue, by status"
    );
    describe_histogram!(
        "notification_send_duration_seconds",
        Unit::Seconds,
        "Time one send through a notification provider took, by channel"
    );
    describe_counter!(
        "audit_exports_total",
        "Audit CSV exports, by how they ended (complete, client_gone, failed)"
    );
    describe_counter!(
        "audit_export_rows_total",
        "Rows written by audit CSV exports"
    );
    describe_gauge!(
        "circuit_state",
        "A service's circuit: 0 closed, 1 half-open, 2 open"
    );
    describe_counter!("circuit_trips_total", "Times a service's circuit opened");
    describe_gauge!(
        "stageworks_build_info",
        "1, labelled with the version of the running build"
    );
    describe_gauge!(
        "circuit_open",
        "1 while a service's circuit is open (calls refused at once), else 0"
    );
    describe_gauge!(
        "db_pool_connections",
        "A service's database connections, by state (in_use, idle)"
    );
    describe_gauge!(
        "db_pool_max_connections",
        "The most connections a service's database pools may open"
    );
    describe_histogram!(
        "db_pool_acquire_duration_seconds",
        Unit::Seconds,
        "Time a service waited for a database connection from its pool"
    );
    describe_histogram!(
        "db_write_batch_size",
        "Writes a service committed in one transaction (group commit)"
    );
    describe_histogram!(
        "db_write_batch_duration_seconds",
        Unit::Seconds,
        "Time to write and commit one group-commit transaction"
    );
    describe_counter!(
        "db_write_batch_retries_total",
        "Group-commit batches that failed and were written again one write at a time"
    );
    describe_counter!(
        "db_row_cache_lookups_total",
        "Reads of a row a service wrote, answered from its row cache (hit) or the database (miss)"
    );
    describe_histogram!(
        "redis_command_duration_seconds",
        Unit::Seconds,
        "Round-trip time of Redis commands, by command"
    );
    describe_counter!(
        "redis_errors_total",
        "Failed Redis commands, by command and kind (unavailable, other)"
    );
    describe_gauge!(
        "kv_memory_keys",
        "Keys held by the in-memory key-value store"
    );
    describe_counter!(
        "kv_memory_evictions_total",
        "Keys evicted from the full in-memory key-value store before they expired"
    );
    describe_counter!(
        "rate_limit_errors_total",
        "Requests let through because the rate-limit store could not answer"
    );
    describe_counter!(
        "events_published_total",
        "Events handed from an outbox to the event bus, by topic"
    );
    describe_counter!(
        "events_delivered_total",
        "Events applied by a subscribing service, by topic and subscriber"
    );
    describe_counter!(
        "events_failed_total",
        "Failed delivery attempts (retried, then dead-lettered), by topic and subscriber"
    );
    describe_histogram!(
        "event_delivery_lag_seconds",
        Unit::Seconds,
        "Time from an event's commit to its application by a subscriber"
    );
    describe_gauge!(
        "events_dead_letters",
        "Dead letters waiting for a replay, by subscriber"
    );
}
