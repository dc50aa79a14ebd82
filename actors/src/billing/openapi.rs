//! The billing service's part of the OpenAPI document: its four routes
//! (`routes.rs`) and the [`Invoice`] they answer.

use super::model::Invoice;
use crate::api::openapi::{self, page_of, schema_ref, Document, Fail, Op};

pub fn document() -> Document {
    let mut doc = openapi::document();
    openapi::schemas::<Invoice>(&mut doc);
    let tag = "billing";
    Op::get("/api/v1/invoices", "List invoices, newest first")
        .tag(tag)
        .user()
        .describe("The caller's invoices; an admin sees everyone's, or one user's with `user_id`.")
        .paginated()
        .user_filter()
        .ok("200", "A page of invoices", page_of("Invoice"))
        .add_to(&mut doc);
    Op::get("/api/v1/invoices/{id}", "An invoice")
        .tag(tag)
        .user()
        .describe("The owner's or an admin's; another user's invoice is a 404.")
        .path_uuid("id", "invoice")
        .ok("200", "The invoice", schema_ref("Invoice"))
        .add_to(&mut doc);
    Op::get("/api/v1/invoices/by-order/{order_id}", "An order's invoice")
        .tag(tag)
        .user()
        .describe("404 until billing has applied the order's `order.created` event.")
        .path_uuid("order_id", "order")
        .ok("200", "The invoice", schema_ref("Invoice"))
        .add_to(&mut doc);
    Op::post("/api/v1/invoices/{id}/pay", "Pay an invoice")
        .tag(tag)
        .user()
        .describe("The owner or an admin; 409 if it is already paid, void or refunded.")
        .path_uuid("id", "invoice")
        .fails(&[Fail::Conflict])
        .ok("200", "The paid invoice", schema_ref("Invoice"))
        .add_to(&mut doc);
    doc
}
