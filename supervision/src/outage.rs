//! A dependency outage: what a service does when something it cannot work
//! without (its database) is unreachable. A handler that fails with
//! [`DependencyDown`] puts the service in an outage: from then on calls are
//! refused at once ([`crate::CallError::DependencyDown`], a 503 the client
//! may retry), and messages already queued are dropped unstarted, instead of
//! each waiting its own connect timeout. A probe (the service's
//! [`Probe`], pinged every [`PROBE_EVERY`]) ends the outage as soon as the
//! dependency answers again. This is passive detection with active
//! recovery, as Envoy's outlier detection does per host; the circuit still
//! counts the failures that started it, so a long outage also opens it.
//!
//! A service with no probe set has no outage state: its failures are only
//! counted by the circuit, as any other.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;

use crate::snapshot::OutageView;

/// How often a service in an outage pings its dependency.
pub const PROBE_EVERY: Duration = Duration::from_millis(200);
/// How long one ping may take before it counts as "still down".
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// The `retry-after` of a call refused during an outage.
pub const OUTAGE_RETRY_AFTER: Duration = Duration::from_secs(1);

/// The error a handler returns when a dependency it needs is unreachable
/// (rather than the request or the handler being wrong).
#[derive(Debug, thiserror::Error)]
#[error("{dependency} unavailable: {detail}")]
pub struct DependencyDown {
    pub dependency: String,
    pub detail: String,
}

/// Checks whether what the service depends on answers again.
pub trait Probe: Send + Sync + 'static {
    fn probe(&self) -> BoxFuture<'_, Result<(), String>>;
}

/// A service's outage state, kept in its [`crate::ServiceShared`].
#[derive(Default)]
pub(crate) struct Outage {
    probe: OnceLock<Arc<dyn Probe>>,
    /// Set while the dependency is down: lock-free for every call.
    down: AtomicBool,
    /// Outages begun over the service's life.
    count: AtomicU64,
    since: Mutex<Option<(Instant, String)>>,
}

impl Outage {
    pub(crate) fn set_probe(&self, probe: Arc<dyn Probe>) {
        let _ = self.probe.set(probe);
    }

    pub(crate) fn is_down(&self) -> bool {
        self.down.load(Ordering::Acquire)
    }

    /// The admin view: none for a service without a probe.
    pub(crate) fn view(&self) -> Option<OutageView> {
        self.probe.get()?;
        let since = self.since.lock().unwrap_or_else(PoisonError::into_inner);
        let now = since.as_ref().filter(|_| self.is_down());
        Some(OutageView {
            down: now.is_some(),
            down_for_ms: now.map(|(at, _)| at.elapsed().as_secs_f64() * 1000.0),
            reason: now.map(|(_, reason)| reason.clone()),
            outages: self.count.load(Ordering::Relaxed),
        })
    }

    /// A handler found the dependency down. The first to say so starts the
    /// probe (holding the state weakly, so a dropped service's probe ends);
    /// the others find it running.
    pub(crate) fn begin(self: &Arc<Self>, service: &str, failure: &DependencyDown) {
        let Some(probe) = self.probe.get().cloned() else {
            return;
        };
        if self.down.swap(true, Ordering::AcqRel) {
            return;
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        *self.since.lock().unwrap_or_else(PoisonError::into_inner) =
            Some((Instant::now(), failure.to_string()));
        metrics::gauge!("dependency_outage", "service" => service.to_owned()).set(1.0);
        tracing::warn!(service, dependency = %failure.dependency, detail = %failure.detail,
            "dependency down: refusing calls at once until it answers again");
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let outage = Arc::downgrade(self);
        runtime.spawn(probe_until_back(outage, probe, service.to_owned()));
    }

    fn end(&self, service: &str) {
        let took = self
            .since
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
            .map(|(at, _)| at.elapsed());
        self.down.store(false, Ordering::Release);
        metrics::gauge!("dependency_outage", "service" => service.to_owned()).set(0.0);
        tracing::info!(service, ?took, "dependency answers again: calls go through");
    }
}

impl std::fmt::Debug for Outage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outage")
            .field("down", &self.is_down())
            .finish_non_exhaustive()
    }
}

async fn probe_until_back(outage: Weak<Outage>, probe: Arc<dyn Probe>, service: String) {
    loop {
        tokio::time::sleep(PROBE_EVERY).await;
        let Some(outage) = outage.upgrade() else {
            return;
        };
        if let Ok(Ok(())) = tokio::time::timeout(PROBE_TIMEOUT, probe.probe()).await {
            outage.end(&service);
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    struct Flaky {
        fails: AtomicUsize,
    }

    impl Probe for Flaky {
        fn probe(&self) -> BoxFuture<'_, Result<(), String>> {
            Box::pin(async move {
                let left = self.fails.load(Ordering::SeqCst);
                if left == 0 {
                    return Ok(());
                }
                self.fails.store(left - 1, Ordering::SeqCst);
                Err("connection refused".into())
            })
        }
    }

    fn down() -> DependencyDown {
        DependencyDown {
            dependency: "postgres:orders".into(),
            detail: "connection refused".into(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_outage_lasts_until_the_probe_answers() {
        let outage = Arc::new(Outage::default());
        outage.set_probe(Arc::new(Flaky {
            fails: AtomicUsize::new(3),
        }));
        outage.begin("orders", &down());
        assert!(outage.is_down());
        let view = outage.view().unwrap();
        assert!(view.down && view.outages == 1, "{view:?}");
        assert!(view.reason.unwrap().contains("postgres:orders"));
        // Three failed pings, then one that answers.
        tokio::time::sleep(PROBE_EVERY * 3 + PROBE_EVERY / 2).await;
        assert!(outage.is_down(), "still down after three failed pings");
        tokio::time::sleep(PROBE_EVERY).await;
        assert!(!outage.is_down(), "back after the first ping that answers");
        let view = outage.view().unwrap();
        assert!(
            !view.down && view.reason.is_none() && view.outages == 1,
            "{view:?}"
        );
    }

    #[tokio::test]
    async fn without_a_probe_there_is_no_outage() {
        let outage = Arc::new(Outage::default());
        outage.begin("orders", &down());
        assert!(!outage.is_down());
        assert!(outage.view().is_none());
    }
}
