//! `/api/v1/orders`: turns each request into an [`OrdersMsg`] and the reply into
//! a response. Input is parsed here, at the edge, into typed values.

use http::{HeaderValue, Method, StatusCode};
use supervision::ServiceHandle;

use super::messages::{Created, OrdersMsg};
use super::model::{Currency, NewOrder};
use crate::api::{Access, ApiRequest, ApiResponse, Route};
use crate::idempotency::IdempotencyKey;
use crate::ServiceError;

pub fn routes(orders: ServiceHandle<OrdersMsg>, default_currency: Currency) -> Vec<Route> {
    let shared = orders.shared().clone();
    vec![
        Route::new(Method::POST, "/api/v1/orders", Access::User, shared.clone(), {
            let orders = orders.clone();
            move |req| create(orders.clone(), default_currency.clone(), req)
        }),
        Route::new(Method::GET, "/api/v1/orders", Access::User, shared.clone(), {
            let orders = orders.clone();
            move |req| list(orders.clone(), req)
        }),
        Route::new(Method::GET, "/api/v1/orders/{id}", Access::User, shared.clone(), {
            let orders = orders.clone();
            move |req| get(orders.clone(), req)
        }),
        Route::new(Method::POST, "/api/v1/orders/{id}/cancel", Access::User, shared, {
            move |req| cancel(orders.clone(), req)
        }),
    ]
}

async fn create(
    orders: ServiceHandle<OrdersMsg>,
    default_currency: Currency,
    req: ApiRequest,
) -> Result<ApiResponse, ServiceError> {
    let caller = req.caller()?.clone();
    let body = req.json_object()?;
    let order = NewOrder::parse(&body, &default_currency).map_err(ServiceError::Validation)?;
    let scope = format!("{}:POST /api/v1/orders", caller.user_id);
    let idempotency = IdempotencyKey::from_request(&req.headers, scope, &req.body)?;
    let ctx = req.ctx;
    let created = orders
        .call(|reply| OrdersMsg::Create {
            ctx,
            caller,
            order,
            idempotency,
            reply,
        })
        .await??;
    match created {
        Created::New(order) => ApiResponse::json(StatusCode::CREATED, &order),
        Created::Replayed { status, body } => {
            let status = StatusCode::from_u16(status).map_err(ServiceError::internal)?;
            Ok(ApiResponse::raw(status, body.into()).with_header(
                http::HeaderName::from_static("idempotent-replayed"),
                HeaderValue::from_static("true"),
            ))
        }
    }
}

async fn list(orders: ServiceHandle<OrdersMsg>, req: ApiRequest) -> Result<ApiResponse, ServiceError> {
    let caller = req.caller()?.clone();
    let page = req.page_request()?;
    let user_id = req.uuid_query("user_id")?;
    let ctx = req.ctx;
    let page = orders
        .call(|reply| OrdersMsg::List {
            ctx,
            caller,
            user_id,
            page,
            reply,
        })
        .await??;
    ApiResponse::json(StatusCode::OK, &page)
}

async fn get(orders: ServiceHandle<OrdersMsg>, req: ApiRequest) -> Result<ApiResponse, ServiceError> {
    let caller = req.caller()?.clone();
    let id = req.uuid_param("id", "order")?;
    let ctx = req.ctx;
    let order = orders
        .call(|reply| OrdersMsg::Get {
            ctx,
            caller,
            id,
            reply,
        })
        .await??;
    ApiResponse::json(StatusCode::OK, &order)
}

async fn cancel(orders: ServiceHandle<OrdersMsg>, req: ApiRequest) -> Result<ApiResponse, ServiceError> {
    let caller = req.caller()?.clone();
    let id = req.uuid_param("id", "order")?;
    let ctx = req.ctx;
    let order = orders
        .call(|reply| OrdersMsg::Cancel {
            ctx,
            caller,
            id,
            reply,
        })
        .await??;
    ApiResponse::json(StatusCode::OK, &order)
}
