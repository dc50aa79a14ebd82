//! What the admin listener did, for the record: a hook the app hands to the
//! admin listener ([`AdminActions`], a shared resource), which a service that
//! keeps records (audit) fills with its [`AdminActionRecorder`] when it
//! starts. The admin listener only names what it did; it never learns who
//! stores it, or how, and a process without such a service records nothing.

use std::sync::{Arc, RwLock};

use futures::future::BoxFuture;

/// One operator action, as the admin listener saw it succeed.
#[derive(Clone, Debug, PartialEq)]
pub struct AdminAction {
    /// `admin.<what>`: `admin.circuit_opened`, `admin.actor_restarted`, …
    pub action: &'static str,
    /// What it acted on: `circuit`, `actor`, `dead_letter`.
    pub resource_type: &'static str,
    /// Its name or id (a service, an actor, a dead letter).
    pub resource_id: String,
    /// The admin request's `x-request-id`.
    pub request_id: String,
    /// What else is worth keeping (the node or letter the action answered).
    pub data: serde_json::Value,
}

/// Stores admin actions (the audit service's).
pub trait AdminActionRecorder: Send + Sync + 'static {
    /// Records `action`; an error says why it could not.
    fn record(&self, action: AdminAction) -> BoxFuture<'_, Result<(), String>>;
}

/// The slot shared by the admin listener and the services (cheap to clone).
#[derive(Clone, Default)]
pub struct AdminActions(Arc<RwLock<Option<Arc<dyn AdminActionRecorder>>>>);

impl AdminActions {
    /// Sets the recorder (the last service to set one wins).
    pub fn set(&self, recorder: Arc<dyn AdminActionRecorder>) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Some(recorder);
    }

    /// Records `action` if a recorder is set. A failure is logged, not
    /// returned: the action itself happened, and the operator's answer
    /// says so.
    pub async fn record(&self, action: AdminAction) {
        let recorder = self.0.read().unwrap_or_else(|e| e.into_inner()).clone();
        let Some(recorder) = recorder else {
            return;
        };
        let what = action.action;
        if let Err(error) = recorder.record(action).await {
            tracing::warn!(action = what, %error, "could not record an admin action");
        }
    }
}
