//! Telemetry: logs (tracing), metrics (Prometheus) and process figures.

pub mod logs;
pub mod metrics;
pub mod process;
