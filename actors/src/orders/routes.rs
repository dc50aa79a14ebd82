//! `/api/v1/orders`: each handler parses the request into typed values, asks
//! an [`OrdersMsg`] and maps the reply to a response.

use http::{HeaderName, HeaderValue, StatusCode};
use supervision::ServiceHandle;

use super::messages::{Created, OrdersMsg};
use super::model::{Currency, NewOrder};
use crate::api::Access::User;
use crate::api::{ApiRequest, ApiResponse, RequestContext, Route, Routes};
use crate::idempotency::IdempotencyKey;
use crate::ServiceError;

/// What the handlers share: the service, and the currency of an order that
/// names none (`orders.default_currency`).
#[derive(Clone)]
struct Orders {
    service: ServiceHandle<OrdersMsg, RequestContext>,
    default_currency: Currency,
}

pub fn routes(
    service: ServiceHandle<OrdersMsg, RequestContext>,
    default_currency: Currency,
) -> Vec<Route> {
    let shared = service.shared().clone();
    let r = Routes::new(
        shared,
        Orders {
            service,
            default_currency,
        },
    );
    vec![
        r.post("/api/v1/orders", User, create),
        r.get("/api/v1/orders", User, list),
        r.get("/api/v1/orders/{id}", User, get),
        r.post("/api/v1/orders/{id}/cancel", User, cancel),
    ]
}

async fn create(orders: Orders, req: ApiRequest) -> Result<ApiResponse, ServiceError> {
    let body = req.json_object()?;
    let order =
        NewOrder::parse(&body, &orders.default_currency).map_err(ServiceError::Validation)?;
    let scope = format!("{}:POST /api/v1/orders", req.caller()?.user_id);
    let idempotency = IdempotencyKey::from_request(&req.headers, scope, &req.body)?;
    let created = req
        .ask(&orders.service, |reply| OrdersMsg::Create {
            order,
            idempotency,
            reply,
        })
        .await?;
    match created {
        Created::New(order) => ApiResponse::json(StatusCode::CREATED, &order),
        Created::Replayed { status, body } => {
            let status = StatusCode::from_u16(status).map_err(ServiceError::internal)?;
            Ok(ApiResponse::raw(status, body.into()).with_header(
                HeaderName::from_static("idempotent-replayed"),
                HeaderValue::from_static("true"),
            ))
        }
    }
}

async fn list(orders: Orders, req: ApiRequest) -> Result<ApiResponse, ServiceError> {
    let (page, user_id) = (req.page_request()?, req.uuid_query("user_id")?);
    let page = req
        .ask(&orders.service, |reply| OrdersMsg::List {
            user_id,
            page,
            reply,
        })
        .await?;
    ApiResponse::json(StatusCode::OK, &page)
}

async fn get(orders: Orders, req: ApiRequest) -> Result<ApiResponse, ServiceError> {
    let id = req.uuid_param("id", "order")?;
    let order = req
        .ask(&orders.service, |reply| OrdersMsg::Get { id, reply })
        .await?;
    ApiResponse::json(StatusCode::OK, &order)
}

async fn cancel(orders: Orders, req: ApiRequest) -> Result<ApiResponse, ServiceError> {
    let id = req.uuid_param("id", "order")?;
    let order = req
        .ask(&orders.service, |reply| OrdersMsg::Cancel { id, reply })
        .await?;
    ApiResponse::json(StatusCode::OK, &order)
}
