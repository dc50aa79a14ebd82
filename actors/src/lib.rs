//! The Stageworks services: one module folder per service, plus what they share.
//!
//! A service folder holds its messages (`messages.rs`, the service's API), its
//! worker actor (`actor.rs`), its store and migrations (`store.rs`,
//! `migrations/`), its typed input values (`model.rs`) and the mapping from
//! HTTP routes to its messages (`routes.rs`), its settings (`settings.rs`)
//! and the topics it publishes (`topics.rs`). It exposes one
//! [`ServiceDefinition`] named `SERVICE` ([`service::Service`] on a type of
//! its own, erased).
//!
//! Adding a built-in service: create its folder, declare its module below
//! and add its `SERVICE` to [`BUILTIN`]. Nothing else changes: the app wires every
//! registered service into the supervision tree, the router, the probes and
//! the configuration (`[services.<name>]`). A program that embeds
//! Stageworks registers its own the same way, with `App::builder().service(…)`.

pub mod access;
pub mod admin_actions;
pub mod api;
pub mod error;
pub mod events;
pub mod fault;
pub mod idempotency;
pub mod instance;
pub mod kv;
pub mod service;
pub mod storage;
pub mod text;

pub use error::{FieldError, ServiceError};
pub use service::{ServiceContext, ServiceDefinition, StartedService};

// The built-in services, each a folder (declared plainly, not by a macro, so
// that `cargo fmt` sees them).
pub mod analytics;
pub mod audit;
pub mod auth;
pub mod billing;
pub mod notifications;
pub mod orders;

/// The built-in services, in start order (stopped in reverse).
pub const BUILTIN: &[ServiceDefinition] = &[
    auth::SERVICE,
    orders::SERVICE,
    billing::SERVICE,
    notifications::SERVICE,
    analytics::SERVICE,
    audit::SERVICE,
];

#[cfg(test)]
mod tests {
    #[test]
    fn the_built_in_services_topics_are_well_formed() {
        let all = [
            crate::auth::topics::ALL,
            crate::orders::topics::ALL,
            crate::billing::topics::ALL,
            crate::notifications::topics::ALL,
            crate::analytics::topics::ALL,
            crate::audit::topics::ALL,
        ];
        for topic in all.concat() {
            assert!(
                crate::events::Topic::parse(topic.as_str()).is_ok(),
                "{topic}"
            );
        }
    }
}
