//! Fault injection for tests: an `x-fault` header makes a service's worker
//! panic, fail or stall before it handles the request's message (struck once,
//! in its `WorkerHandler::before`, by [`crate::api::RequestContext::strike_fault`]).
//! Only builds with the `fault-injection` feature parse the header; release
//! builds leave it out and [`Fault::from_headers`] always answers `None`.

use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// `x-fault: panic`: the worker panics.
    Panic,
    /// `x-fault: error`: the worker fails (an internal error).
    Error,
    /// `x-fault: delay=250`: the worker sleeps this many milliseconds.
    Delay(Duration),
}

impl Fault {
    #[cfg(feature = "fault-injection")]
    pub fn from_headers(headers: &http::HeaderMap) -> Option<Fault> {
        let value = headers.get("x-fault")?.to_str().ok()?;
        match value {
            "panic" => Some(Fault::Panic),
            "error" => Some(Fault::Error),
            other => other
                .strip_prefix("delay=")
                .and_then(|ms| ms.parse().ok())
                .map(|ms| Fault::Delay(Duration::from_millis(ms))),
        }
    }

    #[cfg(not(feature = "fault-injection"))]
    pub fn from_headers(_headers: &http::HeaderMap) -> Option<Fault> {
        None
    }

    /// Acts the fault out. `Err` for [`Fault::Error`].
    pub async fn strike(fault: Option<Fault>) -> Result<(), crate::ServiceError> {
        match fault {
            None => Ok(()),
            Some(Fault::Panic) => panic!("injected fault: panic"),
            Some(Fault::Error) => Err(crate::ServiceError::internal("injected fault: error")),
            Some(Fault::Delay(d)) => {
                tokio::time::sleep(d).await;
                Ok(())
            }
        }
    }
}

/// Poisoned events, for tests of the dead-letter path: in a
/// `fault-injection` build an operator (a test) marks a subscriber and a
/// user through the admin listener, and the subscriber panics on every event
/// that user caused until the mark is removed. Other builds never panic here.
pub mod poison {
    #[cfg(feature = "fault-injection")]
    use uuid::Uuid;

    use crate::events::Event;

    #[cfg(feature = "fault-injection")]
    static POISONED: std::sync::Mutex<Vec<(String, Uuid)>> = std::sync::Mutex::new(Vec::new());

    /// Marks (or unmarks) the events `actor` causes as poison for `subscriber`.
    #[cfg(feature = "fault-injection")]
    pub fn set(subscriber: &str, actor: Uuid, poisoned: bool) {
        let mut marks = POISONED
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        marks.retain(|(s, a)| !(s == subscriber && *a == actor));
        if poisoned {
            marks.push((subscriber.to_owned(), actor));
        }
    }

    /// Panics if `event` is poison for `subscriber`.
    #[cfg(feature = "fault-injection")]
    pub fn strike(subscriber: &str, event: &Event) {
        let hit = event.actor_id.is_some_and(|actor| {
            POISONED
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .iter()
                .any(|(s, a)| s == subscriber && *a == actor)
        });
        if hit {
            panic!(
                "injected fault: {subscriber} is poisoned for event {}",
                event.id
            );
        }
    }

    #[cfg(not(feature = "fault-injection"))]
    pub fn strike(_subscriber: &str, _event: &Event) {}
}

/// Scheduled jobs made to fail, for tests of the jobs' supervision: in a
/// `fault-injection` build an operator (a test) marks a job through the
/// admin listener (`PUT /admin/faults/jobs/{job}/{fault}`, `fault` being
/// `error` or `panic`), and every run of it fails that way until the mark is
/// removed (`DELETE`). Other builds never fail here.
pub mod jobs {
    #[cfg(feature = "fault-injection")]
    static MARKED: std::sync::Mutex<Vec<(String, super::Fault)>> =
        std::sync::Mutex::new(Vec::new());

    /// The fault a mark names: `error` or `panic`.
    pub fn parse(fault: &str) -> Option<super::Fault> {
        match fault {
            "error" => Some(super::Fault::Error),
            "panic" => Some(super::Fault::Panic),
            _ => None,
        }
    }

    /// Marks (`Some`) or unmarks (`None`) `job`.
    #[cfg(feature = "fault-injection")]
    pub fn set(job: &str, fault: Option<super::Fault>) {
        let mut marks = MARKED
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        marks.retain(|(j, _)| j != job);
        if let Some(fault) = fault {
            marks.push((job.to_owned(), fault));
        }
    }

    /// Acts out `job`'s mark, if it has one: panics, or answers `Err`.
    #[cfg(feature = "fault-injection")]
    pub async fn strike(job: &str) -> Result<(), crate::ServiceError> {
        let fault = MARKED
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .find(|(j, _)| j == job)
            .map(|(_, f)| *f);
        super::Fault::strike(fault).await
    }

    #[cfg(not(feature = "fault-injection"))]
    pub async fn strike(_job: &str) -> Result<(), crate::ServiceError> {
        Ok(())
    }
}
