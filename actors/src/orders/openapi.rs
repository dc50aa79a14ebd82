//! The orders service's part of the OpenAPI document: its four routes
//! (`routes.rs`), the [`Order`] it answers and the [`NewOrderBody`] its
//! parser accepts.

use utoipa::openapi::schema::{ObjectBuilder, Schema, SchemaType, Type};
use utoipa::openapi::RefOr;

use super::model::{NewOrderBody, Order};
use crate::api::openapi::{self, page_of, schema_ref, Document, Fail, Op};

/// Every code [`super::model::Currency::parse`] accepts, as an enum: a
/// client (or a fuzzer) that keeps to the document is never refused.
fn currency_codes() -> Vec<String> {
    let mut codes = Vec::new();
    for a in b'A'..=b'Z' {
        for b in b'A'..=b'Z' {
            for c in b'A'..=b'Z' {
                let code = String::from_utf8_lossy(&[a, b, c]).into_owned();
                if iso_currency::Currency::from_code(&code).is_some() {
                    codes.push(code);
                }
            }
        }
    }
    codes
}

/// `currency` of a new order: an ISO 4217 code, or `null` for the default.
pub fn currency_or_null() -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(SchemaType::from_iter([Type::String, Type::Null]))
        .enum_values(Some(
            currency_codes()
                .into_iter()
                .map(serde_json::Value::from)
                .chain([serde_json::Value::Null]),
        ))
        .into()
}

pub fn document() -> Document {
    let mut doc = openapi::document();
    openapi::schemas::<Order>(&mut doc);
    openapi::schemas::<NewOrderBody>(&mut doc);
    let tag = "orders";
    Op::post("/api/v1/orders", "Create an order")
        .tag(tag)
        .user()
        .json_body(schema_ref("NewOrder"))
        .idempotent()
        .ok("201", "The new order", schema_ref("Order"))
        .add_to(&mut doc);
    Op::get("/api/v1/orders", "List orders, newest first")
        .tag(tag)
        .user()
        .describe("The caller's orders; an admin sees everyone's, or one user's with `user_id`.")
        .paginated()
        .user_filter()
        .ok("200", "A page of orders", page_of("Order"))
        .add_to(&mut doc);
    Op::get("/api/v1/orders/{id}", "An order")
        .tag(tag)
        .user()
        .describe("The owner's or an admin's; another user's order is a 404.")
        .path_uuid("id", "order")
        .ok("200", "The order", schema_ref("Order"))
        .add_to(&mut doc);
    Op::post("/api/v1/orders/{id}/cancel", "Cancel an order")
        .tag(tag)
        .user()
        .describe("The owner or an admin; 409 once it is cancelled or paid.")
        .path_uuid("id", "order")
        .fails(&[Fail::Conflict])
        .ok("200", "The cancelled order", schema_ref("Order"))
        .add_to(&mut doc);
    doc
}
