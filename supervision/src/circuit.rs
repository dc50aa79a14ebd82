//! The circuit of one service: closed → open (intensity exceeded) → half-open
//! (after `open_for`) → closed (first success) or open again (a failure).
//!
//! A pure state machine: time is passed in, so every transition is unit-tested
//! without sleeping. [`crate::ServiceShared`] holds one behind a mutex.

use std::time::{Duration, Instant};

use serde::Serialize;
use time::OffsetDateTime;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CircuitState {
    Closed,
    Open,
    HalfOpen,
}

impl CircuitState {
    /// The value of the `circuit_state` gauge: 0 closed, 1 half-open, 2 open.
    pub fn gauge(self) -> f64 {
        match self {
            CircuitState::Closed => 0.0,
            CircuitState::HalfOpen => 1.0,
            CircuitState::Open => 2.0,
        }
    }
}

/// Whether a call may go through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    Admit,
    /// Refused; the client may retry after this long.
    Reject {
        retry_after: Duration,
    },
}

/// How long a forced-open circuit tells clients to wait: it has no timer.
const FORCED_RETRY_AFTER: Duration = Duration::from_secs(30);

#[derive(Clone, Debug)]
pub struct Circuit {
    state: CircuitState,
    base_open_for: Duration,
    max_open_for: Duration,
    /// Trips since the circuit last closed: the exponent of `open_for`.
    consecutive_trips: u32,
    /// Trips over the service's life.
    trips: u64,
    opened_at: Option<OffsetDateTime>,
    retry_at: Option<Instant>,
    retry_at_wall: Option<OffsetDateTime>,
    /// Opened by an operator: stays open until closed by one.
    forced: bool,
}

impl Circuit {
    pub fn new(open_for: Duration, open_for_max: Duration) -> Self {
        Self {
            state: CircuitState::Closed,
            base_open_for: open_for,
            max_open_for: open_for_max.max(open_for),
            consecutive_trips: 0,
            trips: 0,
            opened_at: None,
            retry_at: None,
            retry_at_wall: None,
            forced: false,
        }
    }

    pub fn state(&self) -> CircuitState {
        self.state
    }

    pub fn trips(&self) -> u64 {
        self.trips
    }

    pub fn is_forced(&self) -> bool {
        self.forced
    }

    pub fn opened_at(&self) -> Option<OffsetDateTime> {
        self.opened_at
    }

    pub fn retry_at(&self) -> Option<OffsetDateTime> {
        self.retry_at_wall
    }

    /// How long the next trip keeps the circuit open: `open_for` doubled per
    /// consecutive trip, capped.
    pub fn next_open_for(&self) -> Duration {
        let doublings = self.consecutive_trips.min(31);
        self.base_open_for
            .checked_mul(1u32 << doublings)
            .unwrap_or(self.max_open_for)
            .min(self.max_open_for)
    }

    /// Opens the circuit because the service failed beyond its intensity (or
    /// failed while half-open). Returns how long it stays open.
    pub fn trip(&mut self, now: Instant) -> Duration {
        let open_for = self.next_open_for();
        self.consecutive_trips = self.consecutive_trips.saturating_add(1);
        self.trips += 1;
        self.open(now, Some(open_for));
        open_for
    }

    /// Open → half-open: the supervisor restarts the workers and lets calls through.
    /// Returns false (and changes nothing) unless the circuit is open on a timer.
    pub fn half_open(&mut self) -> bool {
        if self.state != CircuitState::Open || self.forced {
            return false;
        }
        self.state = CircuitState::HalfOpen;
        self.retry_at = None;
        self.retry_at_wall = None;
        true
    }

    /// A message was handled successfully. Closes a half-open circuit; returns
    /// whether it did.
    pub fn record_success(&mut self) -> bool {
        if self.state != CircuitState::HalfOpen {
            return false;
        }
        self.close();
        true
    }

    /// An operator opened the circuit: it stays open until an operator closes it.
    pub fn force_open(&mut self) {
        self.open(Instant::now(), None);
        self.forced = true;
    }

    /// Closes the circuit whatever its state (an operator's decision, or a success).
    pub fn close(&mut self) {
        self.state = CircuitState::Closed;
        self.consecutive_trips = 0;
        self.opened_at = None;
        self.retry_at = None;
        self.retry_at_wall = None;
        self.forced = false;
    }

    /// Whether a call may go through now. Half-open admits: the first calls are
    /// the probe that closes (or re-opens) it.
    pub fn admit(&self, now: Instant) -> Admission {
        match self.state {
            CircuitState::Closed | CircuitState::HalfOpen => Admission::Admit,
            CircuitState::Open => Admission::Reject {
                retry_after: match self.retry_at {
                    Some(at) => at.saturating_duration_since(now),
                    None => FORCED_RETRY_AFTER,
                },
            },
        }
    }

    fn open(&mut self, now: Instant, open_for: Option<Duration>) {
        self.state = CircuitState::Open;
        self.forced = false;
        self.opened_at = Some(OffsetDateTime::now_utc());
        self.retry_at = open_for.map(|d| now + d);
        self.retry_at_wall = open_for.map(|d| OffsetDateTime::now_utc() + d);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn circuit() -> Circuit {
        Circuit::new(Duration::from_secs(10), Duration::from_secs(60))
    }

    #[test]
    fn starts_closed_and_admits() {
        let c = circuit();
        assert_eq!(c.state(), CircuitState::Closed);
        assert_eq!(c.admit(Instant::now()), Admission::Admit);
    }

    #[test]
    fn trip_opens_and_rejects_with_the_remaining_time() {
        let mut c = circuit();
        let now = Instant::now();
        assert_eq!(c.trip(now), Duration::from_secs(10));
        assert_eq!(c.state(), CircuitState::Open);
        assert_eq!(
            c.admit(now + Duration::from_secs(4)),
            Admission::Reject {
                retry_after: Duration::from_secs(6)
            }
        );
        assert!(c.opened_at().is_some() && c.retry_at().is_some());
    }

    #[test]
    fn open_goes_half_open_which_admits() {
        let mut c = circuit();
        c.trip(Instant::now());
        assert!(c.half_open());
        assert_eq!(c.state(), CircuitState::HalfOpen);
        assert_eq!(c.admit(Instant::now()), Admission::Admit);
    }

    #[test]
    fn success_closes_half_open_and_resets_the_doubling() {
        let mut c = circuit();
        let now = Instant::now();
        c.trip(now);
        c.half_open();
        assert!(c.record_success());
        assert_eq!(c.state(), CircuitState::Closed);
        assert_eq!(c.next_open_for(), Duration::from_secs(10));
        assert_eq!(c.trips(), 1);
    }

    #[test]
    fn success_while_closed_or_open_changes_nothing() {
        let mut c = circuit();
        assert!(!c.record_success());
        c.trip(Instant::now());
        assert!(!c.record_success());
        assert_eq!(c.state(), CircuitState::Open);
    }

    #[test]
    fn consecutive_trips_double_open_for_up_to_the_cap() {
        let mut c = circuit();
        let now = Instant::now();
        let mut periods = Vec::new();
        for _ in 0..5 {
            periods.push(c.trip(now).as_secs());
            c.half_open();
        }
        assert_eq!(periods, vec![10, 20, 40, 60, 60]);
        assert_eq!(c.trips(), 5);
    }

    #[test]
    fn forced_open_stays_open_until_closed() {
        let mut c = circuit();
        c.force_open();
        assert!(c.is_forced());
        assert!(!c.half_open(), "a forced circuit has no timer");
        assert_eq!(
            c.admit(Instant::now()),
            Admission::Reject {
                retry_after: FORCED_RETRY_AFTER
            }
        );
        c.close();
        assert_eq!(c.state(), CircuitState::Closed);
        assert!(!c.is_forced());
    }

    #[test]
    fn gauge_values_follow_the_metric_contract() {
        assert_eq!(CircuitState::Closed.gauge(), 0.0);
        assert_eq!(CircuitState::HalfOpen.gauge(), 1.0);
        assert_eq!(CircuitState::Open.gauge(), 2.0);
    }
}
