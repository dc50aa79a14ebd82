//! Trace context for the call path, without a dependency on OpenTelemetry.
//!
//! The binary installs the OpenTelemetry bridge (`src/telemetry/traces.rs`)
//! and, when traces are on, registers its [`Propagation`] here once per
//! process. Libraries (this crate, `actors`) only ever ask [`enabled`]
//! before making a span meant for traces, and go through these functions
//! to read the current span's W3C `traceparent` (to put into an event) or
//! to make a span continue a `traceparent` (an event's delivery). With no
//! propagation installed — traces off — every function here is a relaxed
//! atomic load and nothing else: no span is made, no context read.
//!
//! Spans meant only for traces (an actor call, a database operation) use
//! [`TARGET`] as their target: the log layer leaves them out, so a log line
//! written inside an actor still names the request's span as its own.

use std::sync::OnceLock;

use tracing::Span;

/// The target of spans that exist for traces only (left out of the logs).
pub const TARGET: &str = "otel";

/// What the OpenTelemetry bridge provides: plain function pointers, so
/// that reading them costs no allocation or dynamic dispatch.
#[derive(Clone, Copy, Debug)]
pub struct Propagation {
    /// The current span's context as a W3C `traceparent`, if it has one.
    pub current: fn() -> Option<String>,
    /// Makes `span` (not yet entered) a child of the context in `traceparent`;
    /// a malformed value is ignored.
    pub set_parent: fn(&Span, &str),
    /// Links `span` (not yet entered) to the context in `traceparent`.
    pub add_link: fn(&Span, &str),
}

static PROPAGATION: OnceLock<Propagation> = OnceLock::new();

/// Registers the process's propagation; false if one was already (the first
/// one stays: the tracing subscriber it belongs to is process-global too).
pub fn install(propagation: Propagation) -> bool {
    PROPAGATION.set(propagation).is_ok()
}

/// Whether traces are being recorded in this process.
#[inline]
pub fn enabled() -> bool {
    PROPAGATION.get().is_some()
}

/// The current span's `traceparent`; `None` when traces are off or the
/// current span is not traced.
pub fn current_traceparent() -> Option<String> {
    PROPAGATION.get().and_then(|p| (p.current)())
}

/// Makes `span` continue the trace of `traceparent` (no-op when off).
pub fn set_parent(span: &Span, traceparent: &str) {
    if let Some(p) = PROPAGATION.get() {
        (p.set_parent)(span, traceparent);
    }
}

/// Links `span` to the span of `traceparent` (no-op when off).
pub fn add_link(span: &Span, traceparent: &str) {
    if let Some(p) = PROPAGATION.get() {
        (p.add_link)(span, traceparent);
    }
}
