//! `/api/v1/invoices`: turns each request into a [`BillingMsg`] and the reply
//! into a response. Invoices are created by events, not by requests, so
//! every route reads, except paying.

use http::{Method, StatusCode};
use supervision::ServiceHandle;

use super::messages::BillingMsg;
use crate::api::{Access, ApiRequest, ApiResponse, Route};
use crate::ServiceError;

pub fn routes(billing: ServiceHandle<BillingMsg>) -> Vec<Route> {
    let shared = billing.shared().clone();
    vec![
        Route::new(
            Method::GET,
            "/api/v1/invoices",
            Access::User,
            shared.clone(),
            {
                let billing = billing.clone();
                move |req| list(billing.clone(), req)
            },
        ),
        Route::new(
            Method::GET,
            "/api/v1/invoices/{id}",
            Access::User,
            shared.clone(),
            {
                let billing = billing.clone();
                move |req| get(billing.clone(), req)
            },
        ),
        // A static segment: matchit prefers it to `{id}` above.
        Route::new(
            Method::GET,
            "/api/v1/invoices/by-order/{order_id}",
            Access::User,
            shared.clone(),
            {
                let billing = billing.clone();
                move |req| by_order(billing.clone(), req)
            },
        ),
        Route::new(
            Method::POST,
            "/api/v1/invoices/{id}/pay",
            Access::User,
            shared,
            move |req| pay(billing.clone(), req),
        ),
    ]
}

async fn list(
    billing: ServiceHandle<BillingMsg>,
    req: ApiRequest,
) -> Result<ApiResponse, ServiceError> {
    let caller = req.caller()?.clone();
    let page = req.page_request()?;
    let user_id = req.uuid_query("user_id")?;
    let ctx = req.ctx;
    let page = billing
        .call(|reply| BillingMsg::List {
            ctx,
            caller,
            user_id,
            page,
            reply,
        })
        .await??;
    ApiResponse::json(StatusCode::OK, &page)
}

async fn get(
    billing: ServiceHandle<BillingMsg>,
    req: ApiRequest,
) -> Result<ApiResponse, ServiceError> {
    let caller = req.caller()?.clone();
    let id = req.uuid_param("id", "invoice")?;
    let ctx = req.ctx;
    let invoice = billing
        .call(|reply| BillingMsg::Get {
            ctx,
            caller,
            id,
            reply,
        })
        .await??;
    ApiResponse::json(StatusCode::OK, &invoice)
}

async fn by_order(
    billing: ServiceHandle<BillingMsg>,
    req: ApiRequest,
) -> Result<ApiResponse, ServiceError> {
    let caller = req.caller()?.clone();
    let order_id = req.uuid_param("order_id", "invoice")?;
    let ctx = req.ctx;
    let invoice = billing
        .call(|reply| BillingMsg::ByOrder {
            ctx,
            caller,
            order_id,
            reply,
        })
        .await??;
    ApiResponse::json(StatusCode::OK, &invoice)
}

async fn pay(
    billing: ServiceHandle<BillingMsg>,
    req: ApiRequest,
) -> Result<ApiResponse, ServiceError> {
    let caller = req.caller()?.clone();
    let id = req.uuid_param("id", "invoice")?;
    let ctx = req.ctx;
    let invoice = billing
        .call(|reply| BillingMsg::Pay {
            ctx,
            caller,
            id,
            reply,
        })
        .await??;
    ApiResponse::json(StatusCode::OK, &invoice)
}
