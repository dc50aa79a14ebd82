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
    /// How many messages may wait for a worker at once; a call that finds
    /// the queue full is shed (refused at once, not a failure). `None`:
    /// [`SupervisionPolicy::default_queue_limit`].
    pub queue_limit: Option<usize>,
    /// How long the queue may make a new message wait, by its expected wait
    /// (the messages ahead of it over what the workers get through): a
    /// call that would wait longer is shed, however short the queue. `None`:
    /// [`SupervisionPolicy::default_max_queue_wait`].
    pub max_queue_wait: Option<Duration>,
    /// Workers, on top of the pool, that serve the read lane alone (see
    /// [`crate::Lane`]); 0: reads share the pool.
    pub read_workers: usize,
}

/// The shortest handling time the default queue limit assumes: a queue is
/// only worth what its workers can serve before the callers' timeout.
const ASSUMED_MESSAGE_TIME: Duration = Duration::from_millis(50);

impl SupervisionPolicy {
    /// What `workers` workers can take from their queue within
    /// `call_timeout` at [`ASSUMED_MESSAGE_TIME`] per message (at least one
    /// per worker): 100 per worker at the 5 s default. Deeper would only
    /// hold messages whose callers give up before a worker gets to them.
    pub fn default_queue_limit(workers: usize, call_timeout: Duration) -> usize {
        let per_worker = call_timeout.as_millis() / ASSUMED_MESSAGE_TIME.as_millis();
        workers.max(1) * usize::try_from(per_worker.max(1)).unwrap_or(usize::MAX)
    }

    /// A tenth of the call timeout (500 ms at the 5 s default): a caller
    /// admitted is answered well within its timeout, and one that would
    /// only wait is told at once to come back.
    pub fn default_max_queue_wait(call_timeout: Duration) -> Duration {
        call_timeout / 10
    }

    /// The longest expected queue wait in force.
    pub fn max_queue_wait(&self, call_timeout: Duration) -> Duration {
        self.max_queue_wait
            .unwrap_or_else(|| Self::default_max_queue_wait(call_timeout))
    }

    /// The queue limit in force.
    pub fn queue_limit(&self, workers: usize, call_timeout: Duration) -> usize {
        self.queue_limit
            .unwrap_or_else(|| Self::default_queue_limit(workers, call_timeout))
            .max(1)
    }
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
            queue_limit: None,
            max_queue_wait: None,
            read_workers: 0,
        }
    }
}
