//! Stageworks: a microservice platform as supervised actors in one process.
//!
//! * [`config`] — layered configuration and its validation
//! * [`app`] — boot: wires services, supervision tree, listeners; shutdown
//! * [`http`] — the hyper front-end, probes and the admin listener
//! * [`telemetry`] — logs, metrics, process figures
//! * [`dashboard`] — the admin page's live stream and history
//!
//! The services themselves live in the `actors` crate, the supervision rules
//! in the `supervision` crate.

pub mod app;
pub mod config;
pub mod dashboard;
pub mod data_dir;
pub mod http;
pub mod telemetry;
