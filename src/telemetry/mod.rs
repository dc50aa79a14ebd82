//! Telemetry: logs (tracing), traces (OpenTelemetry), metrics (Prometheus)
//! and process figures.

pub mod logs;
pub mod metrics;
pub mod process;
pub mod traces;
