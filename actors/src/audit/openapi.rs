//! The audit service's part of the OpenAPI document: its five routes
//! (`routes.rs`), all for admins, the entries and verification they answer,
//! the body and the filters its parsers accept (`model.rs`).

use utoipa::openapi::schema::{ObjectBuilder, Type};

use super::model::{Entry, PostedEntryBody, Verified};
use crate::api::openapi::{self, date_time_schema, page_of, schema_ref, uuid_schema, Document, Op};

fn text_1_to_200() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .max_length(Some(200))
}

/// The filters of `search` and `export.csv` ([`super::model::Filter::parse`]).
fn filtered(op: Op) -> Op {
    op.query(
        "action",
        false,
        "One action (`order.created`) or a prefix ending in `.*` (`order.*`)",
        ObjectBuilder::new()
            .schema_type(Type::String)
            .max_length(Some(100))
            .pattern(Some(
                r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*(\.\*|(\.[a-z][a-z0-9_]*))$",
            )),
    )
    .query("actor_id", false, "Who did it", uuid_schema())
    .query(
        "resource_type",
        false,
        "A lowercase word (`order`)",
        ObjectBuilder::new()
            .schema_type(Type::String)
            .max_length(Some(64))
            .pattern(Some("^[a-z][a-z0-9_]*$")),
    )
    .query("resource_id", false, "1 to 200 characters", text_1_to_200())
    .query("request_id", false, "1 to 200 characters", text_1_to_200())
    .query(
        "q",
        false,
        "A substring of the data, case-insensitive; 1 to 200 characters",
        text_1_to_200(),
    )
    .query(
        "from",
        false,
        "Inclusive, on `occurred_at` (RFC 3339)",
        date_time_schema(),
    )
    .query(
        "to",
        false,
        "Exclusive, on `occurred_at` (RFC 3339)",
        date_time_schema(),
    )
}

pub fn document() -> Document {
    let mut doc = openapi::document();
    openapi::schemas::<Entry>(&mut doc);
    openapi::schemas::<PostedEntryBody>(&mut doc);
    openapi::schemas::<Verified>(&mut doc);
    let tag = "audit";
    Op::post("/api/v1/audit", "Record an audit entry")
        .tag(tag)
        .admin_only()
        .json_body(schema_ref("NewAuditEntry"))
        .idempotent()
        .ok("201", "The recorded entry", schema_ref("AuditEntry"))
        .add_to(&mut doc);
    filtered(
        Op::get("/api/v1/audit/search", "Search the audit log")
            .tag(tag)
            .admin_only(),
    )
    .paginated()
    .ok("200", "A page of entries", page_of("AuditEntry"))
    .add_to(&mut doc);
    filtered(
        Op::get("/api/v1/audit/export.csv", "Export the audit log as CSV")
            .tag(tag)
            .admin_only()
            .describe("RFC 4180 CSV, streamed row by row, with the search's filters."),
    )
    .ok_as(
        "200",
        "The matching entries, oldest first",
        "text/csv; charset=utf-8",
        ObjectBuilder::new().schema_type(Type::String),
    )
    .add_to(&mut doc);
    Op::get("/api/v1/audit/verify", "Verify the hash chain")
        .tag(tag)
        .admin_only()
        .ok("200", "What the check found", schema_ref("Verified"))
        .add_to(&mut doc);
    Op::get("/api/v1/audit/{id}", "An audit entry")
        .tag(tag)
        .admin_only()
        .path_uuid("id", "audit entry")
        .ok("200", "The entry", schema_ref("AuditEntry"))
        .add_to(&mut doc);
    doc
}
