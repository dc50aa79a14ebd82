//! The scheduled jobs: the hourly close (distinct active users of the hour
//! that ended), the daily roll-up (the day that ended, from its hours) and
//! the purge of hourly rows past `hourly_retention`.
//!
//! Each job has a scheduler task that sleeps until its next cron tick, takes
//! the tick's lease (a `job_runs` row per (job, tick), insert-if-absent: of
//! several replicas, one wins each tick) and asks the `analytics-jobs`
//! supervised part to run it. The part is a service of its own in the
//! supervision tree: a job that panics takes its worker down, the
//! supervisor restarts it, and the next tick runs the job again; the run is
//! recorded as failed (`last_error`, `analytics_job_runs_total{outcome="error"}`).
//! A tick missed while the process was down is not run late: each job
//! catches up on its own (the close closes every finished bucket not
//! closed yet).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use supervision::{BoxError, ServiceHandle, WorkerHandler};

use super::messages::JobMsg;
use super::model::Grain;
use super::settings::{AnalyticsSettings, Schedule};
use super::store::{boundary, AnalyticsStore};
use crate::service::respond;
use crate::storage::upkeep::is_closed;
use crate::ServiceError;

/// A scheduled job.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Job {
    HourlyClose,
    DailyRollup,
    Purge,
}

impl Job {
    pub const ALL: [Job; 3] = [Job::HourlyClose, Job::DailyRollup, Job::Purge];

    pub fn name(self) -> &'static str {
        match self {
            Job::HourlyClose => "hourly_close",
            Job::DailyRollup => "daily_rollup",
            Job::Purge => "purge",
        }
    }

    pub fn schedule(self, settings: &AnalyticsSettings) -> &Schedule {
        match self {
            Job::HourlyClose => &settings.hourly_close,
            Job::DailyRollup => &settings.daily_rollup,
            Job::Purge => &settings.purge,
        }
    }

    /// Does the job's work for `tick`: answers how many buckets or rows it
    /// touched.
    async fn run(self, jobs: &Jobs, tick: i64) -> Result<u64, ServiceError> {
        let internal = |e| ServiceError::from_store("analytics-jobs", e);
        let retention = boundary(tick, jobs.retention);
        match self {
            Job::HourlyClose => jobs
                .store
                .close(Grain::Hour, Grain::Hour.floor(tick), None)
                .await
                .map_err(internal),
            Job::DailyRollup => jobs
                .store
                .close(Grain::Day, Grain::Day.floor(tick), Some(retention))
                .await
                .map_err(internal),
            Job::Purge => jobs.store.purge(retention).await.map_err(internal),
        }
    }
}

/// What the jobs' worker needs.
#[derive(Clone)]
pub struct Jobs {
    pub store: AnalyticsStore,
    pub retention: Duration,
}

pub type JobsHandle = ServiceHandle<JobMsg, ()>;

/// The `analytics-jobs` worker: runs one job at a time.
pub struct JobWorker;

impl WorkerHandler for JobWorker {
    type Msg = JobMsg;
    type Context = ();
    type State = Jobs;
    type Args = Jobs;

    async fn init(jobs: &Jobs, _index: usize) -> Result<Jobs, BoxError> {
        Ok(jobs.clone())
    }

    async fn handle(msg: JobMsg, _ctx: &(), jobs: &mut Jobs) -> Result<(), BoxError> {
        let JobMsg::Run { job, tick, reply } = msg;
        let result = async {
            // Fault-injection builds: a test made this job fail or panic.
            crate::fault::jobs::strike(job.name()).await?;
            job.run(jobs, tick).await
        }
        .await;
        respond(reply, result)
    }
}

/// Unix time now, in milliseconds.
fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// One job's scheduler (a task per job).
pub struct Scheduler {
    pub job: Job,
    pub schedule: Schedule,
    pub store: AnalyticsStore,
    pub jobs: JobsHandle,
    /// This instance's id, written into the leases it wins.
    pub holder: Arc<str>,
}

/// How one tick went, for the metrics.
enum Outcome {
    Ran,
    /// Another instance won the tick.
    NotOurs,
    /// The store is closed: the process is stopping.
    Stopped,
}

impl Scheduler {
    /// Registers the job's metrics at 0, so they are there before the first run.
    /// Described here, with the service, rather than in the binary's list:
    /// the recorder is installed before services start.
    pub fn register_metrics(job: Job) {
        metrics::describe_counter!(
            "analytics_job_runs_total",
            "Runs of an analytics scheduled job this instance won, by job and outcome (ok, error)"
        );
        metrics::describe_histogram!(
            "analytics_job_duration_seconds",
            metrics::Unit::Seconds,
            "Time one run of an analytics scheduled job took, by job"
        );
        for outcome in ["ok", "error"] {
            metrics::counter!("analytics_job_runs_total", "job" => job.name(), "outcome" => outcome)
                .increment(0);
        }
    }

    pub async fn run(self) {
        loop {
            let now = now_ms();
            let Some(tick) = self.schedule.next_after(now.div_euclid(1000)) else {
                tracing::warn!(job = self.job.name(), "schedule never matches again");
                return;
            };
            let wait = u64::try_from(tick * 1000 - now).unwrap_or(0);
            tokio::time::sleep(Duration::from_millis(wait)).await;
            if let Outcome::Stopped = self.tick(tick).await {
                return;
            }
        }
    }

    async fn tick(&self, tick: i64) -> Outcome {
        let name = self.job.name();
        let claimed = async {
            self.store.ensure_ready().await?;
            self.store
                .claim_tick(name, tick, &self.holder, now_ms() / 1000)
                .await
        }
        .await;
        match claimed {
            Ok(true) => {}
            Ok(false) => return Outcome::NotOurs,
            Err(err) if is_closed(&err) => return Outcome::Stopped,
            Err(err) => {
                // No lease, no run: the next tick tries again.
                tracing::warn!(job = name, error = %err, "job tick not claimed");
                return Outcome::NotOurs;
            }
        }
        let started = Instant::now();
        let result = self
            .jobs
            .call(|reply| JobMsg::Run {
                job: self.job,
                tick,
                reply,
            })
            .await;
        let elapsed = started.elapsed();
        let error = match result {
            Ok(Ok(touched)) => {
                tracing::info!(job = name, tick, touched, "job ran");
                None
            }
            Ok(Err(err)) => Some(err.to_string()),
            Err(err) => Some(err.to_string()),
        };
        if let Some(error) = &error {
            tracing::warn!(job = name, tick, %error, "job failed; it runs again at the next tick");
        }
        let outcome = if error.is_some() { "error" } else { "ok" };
        metrics::counter!("analytics_job_runs_total", "job" => name, "outcome" => outcome)
            .increment(1);
        metrics::histogram!("analytics_job_duration_seconds", "job" => name)
            .record(elapsed.as_secs_f64());
        let ms = i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX);
        match self
            .store
            .finish_tick(name, tick, now_ms() / 1000, ms, error.as_deref())
            .await
        {
            Ok(()) => Outcome::Ran,
            Err(err) if is_closed(&err) => Outcome::Stopped,
            Err(err) => {
                tracing::warn!(job = name, error = %err, "job run not recorded");
                Outcome::Ran
            }
        }
    }
}
