//! [`Ticket`]: what a caller and the worker share about one message, so that
//! waiting and failing are told apart. A message is *queued* until a worker
//! takes it, then *started*, then *finished*; a caller that gives up first
//! (its wait ran out, or it went away) marks it *abandoned*, and the worker
//! that later takes it skips it. Only a message that has started and runs
//! past the call timeout is the worker's failure; one that waited too long
//! in the queue is the queue's, and nobody restarts a worker for that.

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

const QUEUED: u8 = 0;
const STARTED: u8 = 1;
const FINISHED: u8 = 2;
const ABANDONED: u8 = 3;

/// What a message's context may tell the worker: until when its caller waits.
/// A message picked up after its deadline is skipped.
pub trait Deadline {
    fn deadline(&self) -> Option<Instant>;
}

impl Deadline for () {
    fn deadline(&self) -> Option<Instant> {
        None
    }
}

#[derive(Debug)]
pub(crate) struct Ticket {
    state: AtomicU8,
    sent_at: Instant,
    /// The caller waits until then, at most.
    deadline: Instant,
    started_at: Mutex<Option<Instant>>,
    /// Whether the message no longer counts as in flight on its worker.
    released: AtomicBool,
}

/// What the worker does with a message it takes.
pub(crate) enum Pickup {
    /// Handle it: it waited this long in the queue.
    Handle { waited: Duration },
    /// Skip it: its caller has gone, or its deadline has passed.
    Skip { waited: Duration },
}

impl Ticket {
    pub(crate) fn new(deadline: Instant) -> Self {
        Self {
            state: AtomicU8::new(QUEUED),
            sent_at: Instant::now(),
            deadline,
            started_at: Mutex::new(None),
            released: AtomicBool::new(false),
        }
    }

    /// The worker takes the message: it starts, unless its caller gave up.
    pub(crate) fn pick_up(&self) -> Pickup {
        let now = Instant::now();
        let waited = now.duration_since(self.sent_at);
        if now >= self.deadline {
            self.state.store(ABANDONED, Ordering::Release);
            return Pickup::Skip { waited };
        }
        *self
            .started_at
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(now);
        match self
            .state
            .compare_exchange(QUEUED, STARTED, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => Pickup::Handle { waited },
            Err(_) => Pickup::Skip { waited },
        }
    }

    pub(crate) fn finish(&self) {
        self.state.store(FINISHED, Ordering::Release);
    }

    /// The message stops counting as in flight on its worker: `true` the
    /// first time only. Both the caller (on the reply) and the worker (after
    /// the handler) release it, so that whichever comes first frees the
    /// worker for balancing and the count is decremented once.
    pub(crate) fn release(&self) -> bool {
        !self.released.swap(true, Ordering::AcqRel)
    }

    /// The caller gives up: `true` if the message had not started (it never
    /// will), `false` if a worker is on it.
    pub(crate) fn abandon(&self) -> bool {
        self.state
            .compare_exchange(QUEUED, ABANDONED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    pub(crate) fn started(&self) -> bool {
        matches!(self.state.load(Ordering::Acquire), STARTED | FINISHED)
    }

    pub(crate) fn finished(&self) -> bool {
        self.state.load(Ordering::Acquire) == FINISHED
    }

    /// How long the handler has been running, if it has started.
    pub(crate) fn running_for(&self) -> Option<Duration> {
        self.started_at
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .map(|at| at.elapsed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_abandoned_before_it_starts_is_skipped() {
        let ticket = Ticket::new(Instant::now() + Duration::from_secs(5));
        assert!(ticket.abandon());
        assert!(matches!(ticket.pick_up(), Pickup::Skip { .. }));
        assert!(!ticket.started());
    }

    #[test]
    fn a_started_message_cannot_be_abandoned() {
        let ticket = Ticket::new(Instant::now() + Duration::from_secs(5));
        assert!(matches!(ticket.pick_up(), Pickup::Handle { .. }));
        assert!(!ticket.abandon());
        assert!(ticket.started());
        assert!(ticket.running_for().is_some());
        ticket.finish();
        assert!(ticket.finished());
    }

    #[test]
    fn a_message_is_released_once() {
        let ticket = Ticket::new(Instant::now() + Duration::from_secs(5));
        assert!(ticket.release());
        assert!(!ticket.release(), "the second release counts for nothing");
    }

    #[test]
    fn a_message_past_its_deadline_is_skipped() {
        let ticket = Ticket::new(Instant::now());
        assert!(matches!(ticket.pick_up(), Pickup::Skip { .. }));
        assert!(!ticket.abandon(), "already given up");
    }
}
