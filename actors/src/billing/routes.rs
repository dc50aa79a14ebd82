//! `/api/v1/invoices`: each handler parses the request, asks a [`BillingMsg`]
//! and maps the reply to a response. Invoices are created by events, not by
//! requests, so every route reads, except paying.

use http::StatusCode;
use supervision::ServiceHandle;

use super::messages::BillingMsg;
use crate::api::Access::User;
use crate::api::{ApiRequest, ApiResponse, RequestContext, Route, Routes};
use crate::ServiceError;

type Billing = ServiceHandle<BillingMsg, RequestContext>;

pub fn routes(billing: Billing) -> Vec<Route> {
    let r = Routes::new(billing.shared().clone(), billing);
    vec![
        r.get("/api/v1/invoices", User, list),
        r.get("/api/v1/invoices/{id}", User, get),
        // A static segment: matchit prefers it to `{id}` above.
        r.get("/api/v1/invoices/by-order/{order_id}", User, by_order),
        r.post("/api/v1/invoices/{id}/pay", User, pay),
    ]
}

async fn list(billing: Billing, req: ApiRequest) -> Result<ApiResponse, ServiceError> {
    let (page, user_id) = (req.page_request()?, req.uuid_query("user_id")?);
    let page = req
        .ask(&billing, |reply| BillingMsg::List {
            user_id,
            page,
            reply,
        })
        .await?;
    ApiResponse::json(StatusCode::OK, &page)
}

async fn get(billing: Billing, req: ApiRequest) -> Result<ApiResponse, ServiceError> {
    let id = req.uuid_param("id", "invoice")?;
    let invoice = req
        .ask(&billing, |reply| BillingMsg::Get { id, reply })
        .await?;
    ApiResponse::json(StatusCode::OK, &invoice)
}

async fn by_order(billing: Billing, req: ApiRequest) -> Result<ApiResponse, ServiceError> {
    let order_id = req.uuid_param("order_id", "invoice")?;
    let invoice = req
        .ask(&billing, |reply| BillingMsg::ByOrder { order_id, reply })
        .await?;
    ApiResponse::json(StatusCode::OK, &invoice)
}

async fn pay(billing: Billing, req: ApiRequest) -> Result<ApiResponse, ServiceError> {
    let id = req.uuid_param("id", "invoice")?;
    let invoice = req
        .ask(&billing, |reply| BillingMsg::Pay { id, reply })
        .await?;
    ApiResponse::json(StatusCode::OK, &invoice)
}
