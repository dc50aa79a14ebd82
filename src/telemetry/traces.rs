//! Traces: `tracing` spans exported as OpenTelemetry spans over OTLP/HTTP
//! (protobuf), when `telemetry.otlp_endpoint` is set; nothing at all
//! otherwise (no exporter, no layer, no extra span).
//!
//! * [`layer`] builds the exporter, a batch span processor and the
//!   `tracing-opentelemetry` layer that [`super::logs::init`] adds to the
//!   process's subscriber. Only spans that declare `otel.kind` become
//!   OpenTelemetry spans (the request's server span, the actor, database and
//!   event-delivery spans), and only warnings and errors become span
//!   events: the rest of the logs stay logs.
//! * Once that subscriber is installed, [`activate`] registers the
//!   W3C trace-context propagation the libraries use
//!   ([`supervision::trace`]): an event takes the current span's
//!   `traceparent`, and its delivery continues it.
//! * The front-end continues a client's `traceparent` ([`continue_trace`])
//!   and answers with its own span's ([`traceparent`]).
//! * The provider is process-global, like the subscriber: [`flush`] exports
//!   what is buffered (an app's shutdown), [`shutdown`] stops it (the
//!   process's end).

use std::sync::OnceLock;
use std::time::Duration;

use http::{HeaderMap, HeaderValue};
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry::Context;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracer, SdkTracerProvider,
};
use opentelemetry_sdk::Resource;
use supervision::trace::Propagation;
use tracing::Span;
use tracing_opentelemetry::{OpenTelemetryLayer, OpenTelemetrySpanExt};

use crate::config::TelemetryConfig;

/// How long one export may take before it is given up.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// How often the batch processor exports what it has (it also exports as
/// soon as a batch is full).
const EXPORT_EVERY: Duration = Duration::from_secs(1);

/// Spans kept waiting for export at most; past that new ones are dropped
/// (a collector that is down costs memory up to this, not more).
const MAX_QUEUED_SPANS: usize = 8192;

/// Spans per export request.
const MAX_EXPORT_BATCH: usize = 512;

/// The header of W3C trace context.
pub const TRACEPARENT: &str = "traceparent";

static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();

#[derive(Debug, thiserror::Error)]
pub enum TracesError {
    #[error("cannot build the OTLP span exporter: {0}")]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
}

/// The layer for the subscriber, and the provider behind it.
pub type Parts<S> = (OpenTelemetryLayer<S, SdkTracer>, SdkTracerProvider);

/// The traces layer for `config`, or `None` when traces are off.
pub fn layer<S>(config: &TelemetryConfig) -> Result<Option<Parts<S>>, TracesError>
where
    S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
{
    let Some(url) = config.traces_url() else {
        return Ok(None);
    };
    // The exporter's default client is reqwest's blocking one, which the
    // processor's own thread drives: exports need no tokio runtime, so they
    // go on after the runtime that started the app is gone (tests start
    // several apps, each on its own runtime, in one process).
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(url)
        .with_timeout(EXPORT_TIMEOUT)
        .build()?;
    let processor = BatchSpanProcessor::builder(exporter)
        .with_batch_config(
            BatchConfigBuilder::default()
                .with_scheduled_delay(EXPORT_EVERY)
                .with_max_queue_size(MAX_QUEUED_SPANS)
                .with_max_export_batch_size(MAX_EXPORT_BATCH)
                .build(),
        )
        .build();
    let provider = SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            config.sample_ratio,
        ))))
        .with_resource(
            Resource::builder()
                .with_service_name(config.service_name.clone())
                .build(),
        )
        .build();
    let tracer = provider.tracer("stageworks");
    let layer = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_location(false)
        .with_threads(false)
        .with_target(false)
        .with_level(false)
        .with_tracked_inactivity(false);
    Ok(Some((layer, provider)))
}

/// The subscriber holding the layer is installed: keep its provider (for
/// [`flush`] and [`shutdown`]) and let the libraries propagate trace
/// context. Once per process; a later call changes nothing.
pub fn activate(provider: SdkTracerProvider) {
    if PROVIDER.set(provider).is_ok() {
        supervision::trace::install(Propagation {
            current: current_traceparent,
            set_parent,
            add_link,
        });
    }
}

/// Whether traces are on in this process.
pub fn enabled() -> bool {
    supervision::trace::enabled()
}

/// Exports every span ended so far (an app's shutdown). Off the async
/// runtime: the processor's flush blocks until its thread has exported.
pub async fn flush() {
    if let Some(provider) = PROVIDER.get() {
        let provider = provider.clone();
        let flushed = tokio::task::spawn_blocking(move || provider.force_flush()).await;
        if let Ok(Err(err)) = flushed {
            tracing::warn!(error = %err, "could not export the last spans");
        }
    }
}

/// Exports what is left and stops the exporter (the process's end).
pub async fn shutdown() {
    if let Some(provider) = PROVIDER.get() {
        let provider = provider.clone();
        let _ = tokio::task::spawn_blocking(move || provider.shutdown()).await;
    }
}

/// Makes `span` (the request's, not yet entered) continue the trace of the
/// request's `traceparent` (and `tracestate`). A missing or malformed
/// header is ignored: the span starts a trace of its own.
pub fn continue_trace(span: &Span, headers: &HeaderMap) {
    let Some(value) = headers.get(TRACEPARENT).and_then(|v| v.to_str().ok()) else {
        return;
    };
    if !well_formed(value) {
        return;
    }
    let cx = TraceContextPropagator::new().extract(&HeaderCarrier(headers));
    if cx.span().span_context().is_valid() {
        let _ = span.set_parent(cx);
    }
}

/// The `traceparent` header value of `span`'s context, if it is traced.
pub fn traceparent(span: &Span) -> Option<HeaderValue> {
    traceparent_of(&span.context()).and_then(|value| HeaderValue::from_str(&value).ok())
}

fn traceparent_of(cx: &Context) -> Option<String> {
    if !cx.span().span_context().is_valid() {
        return None;
    }
    let mut carrier = Traceparent(None);
    TraceContextPropagator::new().inject_context(cx, &mut carrier);
    carrier.0
}

fn current_traceparent() -> Option<String> {
    traceparent_of(&Span::current().context())
}

fn extract(traceparent: &str) -> Context {
    if !well_formed(traceparent) {
        return Context::new();
    }
    TraceContextPropagator::new().extract(&Traceparent(Some(traceparent.to_owned())))
}

/// The field widths W3C trace context requires (`2-32-16-2` lowercase hex),
/// which the propagator does not check itself (it reads a 31-digit trace id
/// as a number). The all-zero ids and unknown versions it refuses.
fn well_formed(traceparent: &str) -> bool {
    let hex = |part: &str, len: usize| {
        part.len() == len
            && part
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let mut parts = traceparent.trim().split('-');
    matches!(
        (parts.next(), parts.next(), parts.next(), parts.next()),
        (Some(version), Some(trace), Some(span), Some(flags))
            if hex(version, 2) && hex(trace, 32) && hex(span, 16) && hex(flags, 2)
    )
}

fn set_parent(span: &Span, traceparent: &str) {
    let cx = extract(traceparent);
    if cx.span().span_context().is_valid() {
        let _ = span.set_parent(cx);
    }
}

fn add_link(span: &Span, traceparent: &str) {
    let cx = extract(traceparent);
    span.add_link(cx.span().span_context().clone());
}

/// A carrier of one `traceparent` value (what an event holds).
struct Traceparent(Option<String>);

impl Injector for Traceparent {
    fn set(&mut self, key: &str, value: String) {
        if key == TRACEPARENT {
            self.0 = Some(value);
        }
    }
}

impl Extractor for Traceparent {
    fn get(&self, key: &str) -> Option<&str> {
        (key == TRACEPARENT).then_some(self.0.as_deref()).flatten()
    }

    fn keys(&self) -> Vec<&str> {
        vec![TRACEPARENT]
    }
}

/// A request's headers as a carrier.
struct HeaderCarrier<'a>(&'a HeaderMap);

impl Extractor for HeaderCarrier<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_traceparent_round_trips_through_the_propagator() {
        let value = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let cx = extract(value);
        assert!(cx.span().span_context().is_valid());
        assert_eq!(traceparent_of(&cx).as_deref(), Some(value));
    }

    #[test]
    fn malformed_traceparents_are_ignored() {
        for value in [
            "",
            "garbage",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
        ] {
            assert!(
                !extract(value).span().span_context().is_valid(),
                "{value:?} was accepted"
            );
        }
    }
}
