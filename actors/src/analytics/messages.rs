//! The analytics service's API: the messages its workers handle, from its
//! routes and from the event bus, and the messages of its jobs' supervised
//! part (`analytics-jobs`). Who asks travels beside each message, in its
//! [`crate::api::RequestContext`].

use uuid::Uuid;

use super::jobs::Job;
use super::model::{JobView, Range, Series, SeriesQuery, Stats, UserFigures};
use crate::events::{Applied, AppliedAll, Event};

pub use crate::api::Reply;

pub enum AnalyticsMsg {
    Stats {
        range: Range,
        reply: Reply<Stats>,
    },
    Timeseries {
        query: SeriesQuery,
        reply: Reply<Series>,
    },
    /// A user's figures; the worker checks the caller may see them.
    User {
        user_id: Uuid,
        reply: Reply<UserFigures>,
    },
    Jobs {
        reply: Reply<Vec<JobView>>,
    },
    /// A consumed event; `Ok` once applied or found applied before.
    Apply {
        event: Event,
        reply: Applied,
    },
    /// The events the bus had waiting, applied in one transaction.
    ApplyAll {
        events: Vec<Event>,
        reply: AppliedAll,
    },
}

/// What the scheduler asks the jobs' worker: run `job` for its `tick`
/// (unix seconds), which this instance won.
pub enum JobMsg {
    Run {
        job: Job,
        tick: i64,
        reply: Reply<u64>,
    },
}
