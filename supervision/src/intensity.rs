//! Restart intensity: at most `max_restarts` failures within a sliding window.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// The failures seen within the last `within`; more than `max_restarts` of them
/// means the service is failing faster than restarting can help.
#[derive(Clone, Debug)]
pub struct RestartWindow {
    max_restarts: u32,
    within: Duration,
    failures: VecDeque<Instant>,
}

/// What recording a failure says about the window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Intensity {
    /// Still within the limit: restart, this being the `n`th failure in the window.
    Within(u32),
    /// Over the limit: stop restarting (open the circuit).
    Exceeded,
}

impl RestartWindow {
    pub fn new(max_restarts: u32, within: Duration) -> Self {
        Self {
            max_restarts,
            within,
            failures: VecDeque::new(),
        }
    }

    /// Records a failure at `now` and says whether the window still allows a restart.
    pub fn record(&mut self, now: Instant) -> Intensity {
        self.prune(now);
        self.failures.push_back(now);
        let count = self.failures.len() as u32;
        if count > self.max_restarts {
            Intensity::Exceeded
        } else {
            Intensity::Within(count)
        }
    }

    /// Failures still inside the window at `now`.
    pub fn count(&self, now: Instant) -> u32 {
        self.failures
            .iter()
            .filter(|at| now.saturating_duration_since(**at) < self.within)
            .count() as u32
    }

    /// Forgets every failure: a half-open service starts with a clean slate.
    pub fn clear(&mut self) {
        self.failures.clear();
    }

    fn prune(&mut self, now: Instant) {
        while let Some(oldest) = self.failures.front() {
            if now.saturating_duration_since(*oldest) >= self.within {
                self.failures.pop_front();
            } else {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_max_restarts_then_exceeds() {
        let start = Instant::now();
        let mut window = RestartWindow::new(3, Duration::from_secs(10));
        assert_eq!(window.record(start), Intensity::Within(1));
        assert_eq!(window.record(start), Intensity::Within(2));
        assert_eq!(window.record(start), Intensity::Within(3));
        assert_eq!(window.record(start), Intensity::Exceeded);
    }

    #[test]
    fn failures_older_than_the_window_do_not_count() {
        let start = Instant::now();
        let mut window = RestartWindow::new(2, Duration::from_secs(10));
        window.record(start);
        window.record(start + Duration::from_secs(5));
        let later = start + Duration::from_secs(11);
        assert_eq!(window.count(later), 1);
        assert_eq!(window.record(later), Intensity::Within(2));
        assert_eq!(
            window.record(later + Duration::from_secs(1)),
            Intensity::Exceeded
        );
    }

    #[test]
    fn zero_max_restarts_trips_on_the_first_failure() {
        let mut window = RestartWindow::new(0, Duration::from_secs(1));
        assert_eq!(window.record(Instant::now()), Intensity::Exceeded);
    }

    #[test]
    fn clear_forgets_everything() {
        let now = Instant::now();
        let mut window = RestartWindow::new(1, Duration::from_secs(10));
        window.record(now);
        window.clear();
        assert_eq!(window.count(now), 0);
        assert_eq!(window.record(now), Intensity::Within(1));
    }
}
