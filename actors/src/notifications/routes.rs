//! `/api/v1/notifications`: each handler parses the request into typed
//! values, asks a [`NotificationsMsg`] and maps the reply to a response.
//! Who may call what (admin, owner) is the worker's to check, beside the data.

use http::{HeaderName, HeaderValue, Method, StatusCode};
use supervision::ServiceHandle;

use super::messages::{Accepted, NotificationsMsg};
use super::model::{
    Channel, NewBulk, NewSend, NewSubscription, NotificationFilter, Preferences, Status,
    TemplateInput,
};
use crate::api::Access::User;
use crate::api::{ApiRequest, ApiResponse, RequestContext, Route, Routes};
use crate::idempotency::IdempotencyKey;
use crate::ServiceError;

type Notifications = ServiceHandle<NotificationsMsg, RequestContext>;

const BASE: &str = "/api/v1/notifications";

/// A bulk send's body limit: 10,000 recipients, each with an address and
/// a little data of its own (~1.6 KB), is more than the server's 1 MiB.
const BULK_BODY_BYTES: u64 = 16 * 1024 * 1024;

pub fn routes(service: Notifications) -> Vec<Route> {
    let r = Routes::new(service.shared().clone(), service);
    vec![
        r.post("/api/v1/notifications/send", User, send),
        r.post("/api/v1/notifications/send-bulk", User, send_bulk)
            .with_body_limit(BULK_BODY_BYTES),
        r.get("/api/v1/notifications/batches/{id}", User, batch),
        r.get("/api/v1/notifications", User, list),
        r.get("/api/v1/notifications/{id}", User, get),
        r.get("/api/v1/notifications/templates", User, templates),
        r.post("/api/v1/notifications/templates", User, create_template),
        r.get("/api/v1/notifications/templates/{name}", User, template),
        r.route(
            Method::PUT,
            "/api/v1/notifications/templates/{name}",
            User,
            replace_template,
        ),
        r.delete(
            "/api/v1/notifications/templates/{name}",
            User,
            delete_template,
        ),
        r.post("/api/v1/notifications/subscriptions", User, subscribe),
        r.delete(
            "/api/v1/notifications/subscriptions/{id}",
            User,
            unsubscribe,
        ),
        r.get("/api/v1/notifications/preferences", User, preferences),
        r.route(
            Method::PUT,
            "/api/v1/notifications/preferences",
            User,
            put_preferences,
        ),
        r.get("/api/v1/notifications/dead-letters", User, dead_letters),
        r.post(
            "/api/v1/notifications/dead-letters/{id}/retry",
            User,
            retry_dead,
        ),
    ]
}

async fn send(service: Notifications, req: ApiRequest) -> Result<ApiResponse, ServiceError> {
    let body = req.json_object()?;
    let send = NewSend::parse(&body).map_err(ServiceError::Validation)?;
    let scope = format!("{}:POST {BASE}/send", req.caller()?.user_id);
    let idempotency = IdempotencyKey::from_request(&req.headers, scope, &req.body)?;
    let accepted = req
        .ask(&service, |reply| NotificationsMsg::Send {
            send,
            idempotency,
            reply,
        })
        .await?;
    match accepted {
        Accepted::New(notification) => ApiResponse::json(StatusCode::ACCEPTED, &notification),
        Accepted::Replayed { status, body } => {
            let status = StatusCode::from_u16(status).map_err(ServiceError::internal)?;
            Ok(ApiResponse::raw(status, body.into()).with_header(
                HeaderName::from_static("idempotent-replayed"),
                HeaderValue::from_static("true"),
            ))
        }
    }
}

async fn send_bulk(service: Notifications, req: ApiRequest) -> Result<ApiResponse, ServiceError> {
    let body = req.json_object()?;
    let bulk = NewBulk::parse(&body).map_err(ServiceError::Validation)?;
    let accepted = req
        .ask(&service, |reply| NotificationsMsg::SendBulk { bulk, reply })
        .await?;
    ApiResponse::json(StatusCode::ACCEPTED, &accepted)
}

async fn batch(service: Notifications, req: ApiRequest) -> Result<ApiResponse, ServiceError> {
    let id = req.uuid_param("id", "batch")?;
    let progress = req
        .ask(&service, |reply| NotificationsMsg::Batch { id, reply })
        .await?;
    ApiResponse::json(StatusCode::OK, &progress)
}

/// `?status=&channel=&user_id=` (the last for admins; a user's list is theirs).
fn filter(req: &ApiRequest) -> Result<NotificationFilter, ServiceError> {
    let mut filter = NotificationFilter {
        user_id: req.uuid_query("user_id")?,
        ..NotificationFilter::default()
    };
    for (key, value) in req.query_pairs() {
        match key.as_str() {
            "status" => {
                filter.status = Some(Status::parse(&value).ok_or_else(|| {
                    ServiceError::validation(
                        "status",
                        "must be one of queued, sending, sent, retrying, skipped, dead",
                    )
                })?)
            }
            "channel" => {
                filter.channel = Some(value.parse::<Channel>().map_err(|_| {
                    ServiceError::validation("channel", "must be one of email, sms, push, webhook")
                })?)
            }
            _ => {}
        }
    }
    Ok(filter)
}

async fn list(service: Notifications, req: ApiRequest) -> Result<ApiResponse, ServiceError> {
    let (page, filter) = (req.page_request()?, filter(&req)?);
    let page = req
        .ask(&service, |reply| NotificationsMsg::List {
            filter,
            page,
            reply,
        })
        .await?;
    ApiResponse::json(StatusCode::OK, &page)
}

async fn get(service: Notifications, req: ApiRequest) -> Result<ApiResponse, ServiceError> {
    let id = req.uuid_param("id", "notification")?;
    let found = req
        .ask(&service, |reply| NotificationsMsg::Get { id, reply })
        .await?;
    ApiResponse::json(StatusCode::OK, &found)
}

fn name_param(req: &ApiRequest) -> String {
    req.params
        .iter()
        .find(|(k, _)| k == "name")
        .map(|(_, v)| v.clone())
        .unwrap_or_default()
}

async fn templates(service: Notifications, req: ApiRequest) -> Result<ApiResponse, ServiceError> {
    let list = req
        .ask(&service, |reply| NotificationsMsg::Templates { reply })
        .await?;
    ApiResponse::json(StatusCode::OK, &serde_json::json!({ "data": list }))
}

async fn template(service: Notifications, req: ApiRequest) -> Result<ApiResponse, ServiceError> {
    let name = name_param(&req);
    let found = req
        .ask(&service, |reply| NotificationsMsg::Template { name, reply })
        .await?;
    ApiResponse::json(StatusCode::OK, &found)
}

async fn create_template(
    service: Notifications,
    req: ApiRequest,
) -> Result<ApiResponse, ServiceError> {
    let input =
        TemplateInput::parse(&req.json_object()?, None).map_err(ServiceError::Validation)?;
    let created = req
        .ask(&service, |reply| NotificationsMsg::CreateTemplate {
            input,
            reply,
        })
        .await?;
    ApiResponse::json(StatusCode::CREATED, &created)
}

async fn replace_template(
    service: Notifications,
    req: ApiRequest,
) -> Result<ApiResponse, ServiceError> {
    let name = name_param(&req);
    let input =
        TemplateInput::parse(&req.json_object()?, Some(&name)).map_err(ServiceError::Validation)?;
    let replaced = req
        .ask(&service, |reply| NotificationsMsg::ReplaceTemplate {
            input,
            reply,
        })
        .await?;
    ApiResponse::json(StatusCode::OK, &replaced)
}

async fn delete_template(
    service: Notifications,
    req: ApiRequest,
) -> Result<ApiResponse, ServiceError> {
    let name = name_param(&req);
    req.ask(&service, |reply| NotificationsMsg::DeleteTemplate {
        name,
        reply,
    })
    .await?;
    Ok(ApiResponse::raw(
        StatusCode::NO_CONTENT,
        bytes::Bytes::new(),
    ))
}

async fn subscribe(service: Notifications, req: ApiRequest) -> Result<ApiResponse, ServiceError> {
    let subscription =
        NewSubscription::parse(&req.json_object()?).map_err(ServiceError::Validation)?;
    let created = req
        .ask(&service, |reply| NotificationsMsg::Subscribe {
            subscription,
            reply,
        })
        .await?;
    ApiResponse::json(StatusCode::CREATED, &created)
}

async fn unsubscribe(service: Notifications, req: ApiRequest) -> Result<ApiResponse, ServiceError> {
    let id = req.uuid_param("id", "subscription")?;
    req.ask(&service, |reply| NotificationsMsg::Unsubscribe {
        id,
        reply,
    })
    .await?;
    Ok(ApiResponse::raw(
        StatusCode::NO_CONTENT,
        bytes::Bytes::new(),
    ))
}

async fn preferences(service: Notifications, req: ApiRequest) -> Result<ApiResponse, ServiceError> {
    let found = req
        .ask(&service, |reply| NotificationsMsg::Preferences { reply })
        .await?;
    ApiResponse::json(StatusCode::OK, &found)
}

async fn put_preferences(
    service: Notifications,
    req: ApiRequest,
) -> Result<ApiResponse, ServiceError> {
    let preferences = Preferences::parse(&req.json_object()?).map_err(ServiceError::Validation)?;
    let saved = req
        .ask(&service, |reply| NotificationsMsg::PutPreferences {
            preferences,
            reply,
        })
        .await?;
    ApiResponse::json(StatusCode::OK, &saved)
}

async fn dead_letters(
    service: Notifications,
    req: ApiRequest,
) -> Result<ApiResponse, ServiceError> {
    let page = req.page_request()?;
    let list = req
        .ask(&service, |reply| NotificationsMsg::DeadLetters {
            page,
            reply,
        })
        .await?;
    ApiResponse::json(StatusCode::OK, &list)
}

async fn retry_dead(service: Notifications, req: ApiRequest) -> Result<ApiResponse, ServiceError> {
    let id = req.uuid_param("id", "notification")?;
    let queued = req
        .ask(&service, |reply| NotificationsMsg::RetryDead { id, reply })
        .await?;
    ApiResponse::json(StatusCode::ACCEPTED, &queued)
}
