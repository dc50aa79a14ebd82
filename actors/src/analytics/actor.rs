//! The analytics worker: handles one [`AnalyticsMsg`] at a time against the
//! store, whether it came from a route or from the event bus.

use std::sync::Arc;

use supervision::{BoxError, WorkerHandler};
use time::OffsetDateTime;

use super::jobs::Job;
use super::messages::AnalyticsMsg;
use super::model::{rfc3339, Fact, JobView, Point, Range, Series, SeriesQuery, Stats};
use super::settings::AnalyticsSettings;
use super::store::{boundary, job_view, AnalyticsStore};
use crate::api::RequestContext;
use crate::events::Event;
use crate::service::{respond, respond_all};
use crate::ServiceError;

/// What every worker shares.
#[derive(Clone)]
pub struct Analytics {
    pub store: AnalyticsStore,
    pub settings: Arc<AnalyticsSettings>,
}

pub struct AnalyticsWorker;

impl WorkerHandler for AnalyticsWorker {
    type Msg = AnalyticsMsg;
    type Context = RequestContext;
    type State = Analytics;
    type Args = Analytics;

    fn kind(msg: &AnalyticsMsg) -> &'static str {
        match msg {
            AnalyticsMsg::Stats { .. } => "Stats",
            AnalyticsMsg::Timeseries { .. } => "Timeseries",
            AnalyticsMsg::User { .. } => "User",
            AnalyticsMsg::Jobs { .. } => "Jobs",
            AnalyticsMsg::Apply { .. } => "Apply",
            AnalyticsMsg::ApplyAll { .. } => "ApplyAll",
        }
    }

    async fn init(analytics: &Analytics, _index: usize) -> Result<Analytics, BoxError> {
        analytics.store.ensure_ready().await?;
        Ok(analytics.clone())
    }

    async fn before(ctx: &RequestContext) -> Result<(), BoxError> {
        ctx.strike_fault().await
    }

    async fn handle(
        msg: AnalyticsMsg,
        ctx: &RequestContext,
        analytics: &mut Analytics,
    ) -> Result<(), BoxError> {
        let a: &Analytics = analytics;
        match msg {
            AnalyticsMsg::Stats { range, reply } => respond(reply, stats(a, range).await),
            AnalyticsMsg::Timeseries { query, reply } => respond(reply, series(a, &query).await),
            AnalyticsMsg::User { user_id, reply } => {
                let result = async {
                    let caller = ctx.caller()?;
                    if !caller.may_access(user_id) {
                        return Err(ServiceError::Forbidden(
                            "only an admin may see another user's figures".into(),
                        ));
                    }
                    a.store.user(user_id).await.map_err(internal)
                }
                .await;
                respond(reply, result)
            }
            AnalyticsMsg::Jobs { reply } => respond(reply, jobs(a).await),
            AnalyticsMsg::Apply { event, reply } => {
                crate::fault::poison::strike("analytics", &event);
                respond(reply, apply(a, &event).await)
            }
            AnalyticsMsg::ApplyAll { events, reply } => {
                for event in &events {
                    crate::fault::poison::strike("analytics", event);
                }
                // Submitted together, so the writer commits them in one transaction.
                let results =
                    futures::future::join_all(events.iter().map(|event| apply(a, event))).await;
                respond_all(reply, results)
            }
        }
    }
}

fn internal(err: crate::storage::StoreError) -> ServiceError {
    ServiceError::from_store("analytics", err)
}

fn now() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

async fn apply(a: &Analytics, event: &Event) -> Result<(), ServiceError> {
    let fact = Fact::from_event(event)?;
    if !a.store.apply(fact).await.map_err(internal)? {
        tracing::debug!(event_id = %event.id, "event applied before, nothing to do");
    }
    Ok(())
}

async fn stats(a: &Analytics, range: Range) -> Result<Stats, ServiceError> {
    let kept_from = boundary(now(), a.settings.hourly_retention);
    let (sums, active) = a.store.totals(range, kept_from).await.map_err(internal)?;
    Ok(Stats::of(range, &sums, active))
}

async fn series(a: &Analytics, query: &SeriesQuery) -> Result<Series, ServiceError> {
    let values = a.store.series(query).await.map_err(internal)?;
    Ok(Series {
        metric: query.metric.as_str().to_owned(),
        interval: query.grain,
        from: rfc3339(query.range.from),
        to: rfc3339(query.range.to),
        points: query
            .buckets()
            .map(|t| Point {
                t: rfc3339(t),
                value: values.get(&t).copied().unwrap_or(0),
            })
            .collect(),
    })
}

async fn jobs(a: &Analytics) -> Result<Vec<JobView>, ServiceError> {
    let mut views = Vec::new();
    for job in Job::ALL {
        let schedule = job.schedule(&a.settings);
        let last = a.store.last_run(job.name()).await.map_err(internal)?;
        views.push(job_view(
            job.name(),
            schedule.as_str().to_owned(),
            last,
            schedule.next_after(now()),
        ));
    }
    Ok(views)
}
