//! `/api/v1/audit`: each handler parses the request into typed values
//! (filters, the posted entry), asks an [`AuditMsg`] and maps the reply to
//! a response. The CSV export is the exception: it streams from the store
//! in a task of its own (see `export.rs`), so that a long export holds no
//! worker.

use http::{HeaderName, HeaderValue, StatusCode};
use supervision::ServiceHandle;

use super::export;
use super::messages::AuditMsg;
use super::model::{Filter, PostedEntry};
use super::store::{AuditStore, Posted};
use crate::api::Access::User;
use crate::api::{ApiRequest, ApiResponse, RequestContext, Route, Routes};
use crate::idempotency::IdempotencyKey;
use crate::ServiceError;

/// What the handlers share: the service, and its store for exports.
#[derive(Clone)]
struct Audit {
    service: ServiceHandle<AuditMsg, RequestContext>,
    store: AuditStore,
}

pub fn routes(service: ServiceHandle<AuditMsg, RequestContext>, store: AuditStore) -> Vec<Route> {
    let r = Routes::new(service.shared().clone(), Audit { service, store });
    vec![
        r.post("/api/v1/audit", User, post),
        // Static segments: matchit prefers them to `{id}`.
        r.get("/api/v1/audit/search", User, search),
        r.get("/api/v1/audit/export.csv", User, export_csv),
        r.get("/api/v1/audit/verify", User, verify),
        r.get("/api/v1/audit/{id}", User, get),
    ]
}

async fn post(audit: Audit, req: ApiRequest) -> Result<ApiResponse, ServiceError> {
    let body = req.json_object()?;
    let entry = PostedEntry::parse(&body).map_err(ServiceError::Validation)?;
    let scope = format!("{}:POST /api/v1/audit", req.caller()?.user_id);
    let idempotency = IdempotencyKey::from_request(&req.headers, scope, &req.body)?;
    let posted = req
        .ask(&audit.service, |reply| AuditMsg::Post {
            entry,
            idempotency,
            reply,
        })
        .await?;
    match posted {
        Posted::New(entry) => ApiResponse::json(StatusCode::CREATED, &entry),
        Posted::Replayed { status, body } => {
            let status = StatusCode::from_u16(status).map_err(ServiceError::internal)?;
            Ok(ApiResponse::raw(status, body.into()).with_header(
                HeaderName::from_static("idempotent-replayed"),
                HeaderValue::from_static("true"),
            ))
        }
    }
}

/// The filters and the page, every malformed one named in one 422.
fn filter_of(req: &ApiRequest) -> Result<Filter, ServiceError> {
    Filter::parse(&req.query_pairs()).map_err(ServiceError::Validation)
}

async fn search(audit: Audit, req: ApiRequest) -> Result<ApiResponse, ServiceError> {
    let filter = filter_of(&req);
    let page = req.page_request();
    let (filter, page) = match (filter, page) {
        (Ok(filter), Ok(page)) => (filter, page),
        (Err(ServiceError::Validation(mut a)), Err(ServiceError::Validation(b))) => {
            a.extend(b);
            return Err(ServiceError::Validation(a));
        }
        (Err(err), _) | (_, Err(err)) => return Err(err),
    };
    let page = req
        .ask(&audit.service, |reply| AuditMsg::Search {
            filter,
            page,
            reply,
        })
        .await?;
    ApiResponse::json(StatusCode::OK, &page)
}

async fn get(audit: Audit, req: ApiRequest) -> Result<ApiResponse, ServiceError> {
    let raw = req
        .params
        .iter()
        .find(|(k, _)| k == "id")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    let id = uuid::Uuid::parse_str(&raw)
        .map_err(|_| ServiceError::NotFound(format!("no audit entry {raw}")))?;
    let entry = req
        .ask(&audit.service, |reply| AuditMsg::Get { id, reply })
        .await?;
    ApiResponse::json(StatusCode::OK, &entry)
}

async fn verify(audit: Audit, req: ApiRequest) -> Result<ApiResponse, ServiceError> {
    let verified = req
        .ask(&audit.service, |reply| AuditMsg::Verify { reply })
        .await?;
    ApiResponse::json(StatusCode::OK, &verified)
}

async fn export_csv(audit: Audit, req: ApiRequest) -> Result<ApiResponse, ServiceError> {
    super::actor::admin(&req.ctx)?;
    let filter = filter_of(&req)?;
    Ok(ApiResponse::streamed(export::start(audit.store, filter)))
}
