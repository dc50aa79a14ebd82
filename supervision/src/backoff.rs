//! Exponential backoff with jitter between restarts.

use std::time::Duration;

use rand::Rng;

/// Restart delays: the ceiling doubles with each restart in the current window,
/// from `min` up to `max`, and the actual delay is drawn uniformly between `min`
/// and the ceiling ("full jitter" above a floor), so replicas that fail together
/// do not restart in lockstep.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    pub min: Duration,
    pub max: Duration,
}

impl Backoff {
    /// The upper bound of the delay before restart number `attempt` (1-based).
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1).min(31);
        self.min
            .checked_mul(1u32 << doublings)
            .unwrap_or(self.max)
            .min(self.max)
            .max(self.min)
    }

    /// The delay before restart number `attempt` (1-based): always within
    /// `[min, max]`.
    pub fn delay(&self, attempt: u32, rng: &mut impl Rng) -> Duration {
        let ceiling = self.ceiling(attempt);
        if ceiling <= self.min {
            return self.min;
        }
        rng.random_range(self.min..=ceiling)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BACKOFF: Backoff = Backoff {
        min: Duration::from_millis(100),
        max: Duration::from_secs(5),
    };

    #[test]
    fn ceiling_doubles_from_min_and_is_capped_at_max() {
        assert_eq!(BACKOFF.ceiling(1), Duration::from_millis(100));
        assert_eq!(BACKOFF.ceiling(2), Duration::from_millis(200));
        assert_eq!(BACKOFF.ceiling(3), Duration::from_millis(400));
        assert_eq!(BACKOFF.ceiling(7), Duration::from_secs(5));
        assert_eq!(BACKOFF.ceiling(u32::MAX), Duration::from_secs(5));
    }

    #[test]
    fn delay_stays_within_bounds_and_is_jittered() {
        let mut rng = rand::rng();
        let mut seen = std::collections::HashSet::new();
        for attempt in 0..40 {
            for _ in 0..50 {
                let d = BACKOFF.delay(attempt, &mut rng);
                assert!(d >= BACKOFF.min, "{d:?} below min");
                assert!(d <= BACKOFF.ceiling(attempt), "{d:?} above ceiling");
                assert!(d <= BACKOFF.max, "{d:?} above max");
                seen.insert(d);
            }
        }
        assert!(seen.len() > 10, "delays are not jittered: {seen:?}");
    }

    #[test]
    fn equal_min_and_max_gives_a_fixed_delay() {
        let fixed = Backoff {
            min: Duration::from_millis(50),
            max: Duration::from_millis(50),
        };
        assert_eq!(fixed.delay(5, &mut rand::rng()), Duration::from_millis(50));
    }
}
