//! The supervision settings of one service.

use std::time::Duration;

use crate::backoff::Backoff;
use crate::strategy::Strategy;

/// How a service supervisor restarts its workers and when it gives up on them
/// for a while (opens the circuit).
#[derive(Clone, Debug)]
pub struct SupervisionPolicy {
    pub strategy: Strategy,
    /// Failures allowed within `within` before the circuit opens.
    pub max_restarts: u32,
    pub within: Duration,
    pub backoff: Backoff,
    /// How long the circuit stays open after its first trip.
    pub open_for: Duration,
    /// The cap for `open_for` as it doubles on consecutive trips.
    pub open_for_max: Duration,
    /// How long a stopping worker may take to finish its message before it is killed.
    pub shutdown_timeout: Duration,
}

impl Default for SupervisionPolicy {
    fn default() -> Self {
        Self {
            strategy: Strategy::OneForOne,
            max_restarts: 3,
            within: Duration::from_secs(10),
            backoff: Backoff {
                min: Duration::from_millis(100),
                max: Duration::from_secs(5),
            },
            open_for: Duration::from_secs(30),
            open_for_max: Duration::from_secs(300),
            shutdown_timeout: Duration::from_secs(5),
        }
    }
}
