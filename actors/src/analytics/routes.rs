//! `/api/v1/analytics`: each handler checks who asks first (a non-admin is
//! refused before any parameter is read, so malformed parameters from a
//! non-admin are a 403, not a 422), then parses the query into typed values
//! and asks an [`AnalyticsMsg`].

use http::StatusCode;
use supervision::ServiceHandle;
use time::OffsetDateTime;
use uuid::Uuid;

use super::messages::AnalyticsMsg;
use super::model::{stats_query, SeriesQuery};
use crate::api::Access::User;
use crate::api::{ApiRequest, ApiResponse, RequestContext, Route, Routes};
use crate::ServiceError;

type Analytics = ServiceHandle<AnalyticsMsg, RequestContext>;

pub fn routes(analytics: Analytics) -> Vec<Route> {
    let r = Routes::new(analytics.shared().clone(), analytics);
    vec![
        r.get("/api/v1/analytics/stats", User, stats),
        r.get("/api/v1/analytics/timeseries", User, timeseries),
        r.get("/api/v1/analytics/users/{id}", User, user),
        r.get("/api/v1/analytics/jobs", User, jobs),
    ]
}

fn require_admin(req: &ApiRequest) -> Result<(), ServiceError> {
    if req.caller()?.is_admin() {
        Ok(())
    } else {
        Err(ServiceError::Forbidden("analytics are for admins".into()))
    }
}

fn now() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

async fn stats(analytics: Analytics, req: ApiRequest) -> Result<ApiResponse, ServiceError> {
    require_admin(&req)?;
    let range = stats_query(&req.query_pairs(), now())?;
    let stats = req
        .ask(&analytics, |reply| AnalyticsMsg::Stats { range, reply })
        .await?;
    ApiResponse::json(StatusCode::OK, &stats)
}

async fn timeseries(analytics: Analytics, req: ApiRequest) -> Result<ApiResponse, ServiceError> {
    require_admin(&req)?;
    let query = SeriesQuery::parse(&req.query_pairs(), now())?;
    let series = req
        .ask(&analytics, |reply| AnalyticsMsg::Timeseries {
            query,
            reply,
        })
        .await?;
    ApiResponse::json(StatusCode::OK, &series)
}

async fn user(analytics: Analytics, req: ApiRequest) -> Result<ApiResponse, ServiceError> {
    let caller = req.caller()?;
    let raw = req
        .params
        .iter()
        .find(|(k, _)| k == "id")
        .map(|(_, v)| v.as_str())
        .unwrap_or("");
    let parsed = Uuid::parse_str(raw).ok();
    // Authorisation first: a user asking for anyone else (or for something
    // that is no user id at all) is refused before the id is judged.
    if !caller.is_admin() && parsed != Some(caller.user_id) {
        return Err(ServiceError::Forbidden(
            "only an admin may see another user's figures".into(),
        ));
    }
    // As for every path id: a malformed one names no resource (404).
    let user_id = parsed.ok_or_else(|| ServiceError::NotFound("user not found".into()))?;
    let figures = req
        .ask(&analytics, |reply| AnalyticsMsg::User { user_id, reply })
        .await?;
    ApiResponse::json(StatusCode::OK, &figures)
}

async fn jobs(analytics: Analytics, req: ApiRequest) -> Result<ApiResponse, ServiceError> {
    require_admin(&req)?;
    let jobs = req
        .ask(&analytics, |reply| AnalyticsMsg::Jobs { reply })
        .await?;
    ApiResponse::json(StatusCode::OK, &jobs)
}
