//! Logs: JSON lines (`log.format = "json"`, the container default) or readable
//! text, filtered by `RUST_LOG` if set, else by `log.level`. Each line carries
//! the fields of the spans it was written in, so every line of a request
//! (including those written inside actors) has its `request_id`.
//!
//! With traces on (`telemetry.otlp_endpoint`), the same subscriber also
//! holds the OpenTelemetry layer ([`super::traces`]). Each layer then has its
//! own filter: the log filter for the log lines, which leave out the spans
//! made for traces alone (target [`supervision::trace::TARGET`]), so a line
//! written inside an actor still shows the request's span; the traces layer
//! takes the spans that declare `otel.kind`, whatever the log level.

use std::io::IsTerminal;

use tracing::{Level, Metadata};
use tracing_subscriber::filter::{filter_fn, FilterExt};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, EnvFilter, Layer, Registry};

use super::traces;
use crate::config::{LogConfig, LogFormat, TelemetryConfig};

/// Installs the global subscriber, with the traces layer when
/// `telemetry.otlp_endpoint` is set. Returns false if one was already
/// installed (tests start several apps in one process: the first one's
/// subscriber, and its traces setting, stays).
pub fn init(config: &LogConfig, telemetry: &TelemetryConfig) -> bool {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let traces = match traces::layer::<Registry>(telemetry) {
        Ok(traces) => traces,
        Err(err) => {
            // The configuration was checked: this is the exporter's own
            // set-up failing. Serve without traces rather than not at all.
            eprintln!("warning: traces are off: {err}");
            None
        }
    };
    let Some((otel, provider)) = traces else {
        return init_logs_only(config, filter);
    };
    let logs = fmt_layer(config.format)
        .with_filter(filter.and(filter_fn(not_trace_only)))
        .boxed();
    let otel = otel.with_filter(filter_fn(for_traces)).boxed();
    let installed = tracing_subscriber::registry()
        .with(vec![logs, otel])
        .try_init()
        .is_ok();
    if installed {
        traces::activate(provider);
    }
    installed
}

/// Traces off: the subscriber as it always was, one global filter.
fn init_logs_only(config: &LogConfig, filter: EnvFilter) -> bool {
    let registry = tracing_subscriber::registry().with(filter);
    match config.format {
        LogFormat::Json => registry
            .with(
                fmt::layer()
                    .json()
                    .with_current_span(true)
                    .with_span_list(false),
            )
            .try_init()
            .is_ok(),
        LogFormat::Text => registry
            .with(fmt::layer().with_ansi(std::io::stdout().is_terminal()))
            .try_init()
            .is_ok(),
    }
}

fn fmt_layer(format: LogFormat) -> Box<dyn Layer<Registry> + Send + Sync> {
    match format {
        LogFormat::Json => fmt::layer()
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .boxed(),
        LogFormat::Text => fmt::layer()
            .with_ansi(std::io::stdout().is_terminal())
            .boxed(),
    }
}

/// The log lines' filter: not the spans made for traces alone.
fn not_trace_only(meta: &Metadata<'_>) -> bool {
    !(meta.is_span() && meta.target() == supervision::trace::TARGET)
}

/// The traces layer's filter: spans that declare `otel.kind`, and warnings
/// and errors (as events of the span they happen in).
fn for_traces(meta: &Metadata<'_>) -> bool {
    if meta.is_span() {
        meta.fields().field("otel.kind").is_some()
    } else {
        *meta.level() <= Level::WARN
    }
}
