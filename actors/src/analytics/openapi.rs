//! The analytics service's part of the OpenAPI document: its four routes
//! (`routes.rs`), the figures they answer (`model.rs`) and the query
//! parameters its parsers accept.

use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Type};

use super::model::{JobView, Series, Stats, UserFigures, PLAIN};
use crate::api::openapi::{self, date_time_schema, schema_ref, Document, Op};

/// `from` and `to` of every query here: RFC 3339, `from` before `to`.
fn ranged(op: Op) -> Op {
    op.query(
        "from",
        false,
        "Inclusive (RFC 3339); default 30 days before `to`; must be before `to`",
        date_time_schema(),
    )
    .query(
        "to",
        false,
        "Exclusive (RFC 3339); default now",
        date_time_schema(),
    )
}

/// The metrics [`super::model::Metric::parse`] knows.
fn metric_pattern() -> String {
    let plain: Vec<String> = PLAIN.iter().map(|m| m.replace('.', r"\.")).collect();
    format!(
        r"^({}|revenue\.(invoiced|paid|refunded)\.[A-Z]{{3}})$",
        plain.join("|")
    )
}

pub fn document() -> Document {
    let mut doc = openapi::document();
    openapi::schemas::<Stats>(&mut doc);
    openapi::schemas::<Series>(&mut doc);
    openapi::schemas::<UserFigures>(&mut doc);
    openapi::schemas::<JobView>(&mut doc);
    let tag = "analytics";
    ranged(
        Op::get("/api/v1/analytics/stats", "Totals over a range")
            .tag(tag)
            .admin_only(),
    )
    .ok("200", "The totals", schema_ref("Stats"))
    .add_to(&mut doc);
    ranged(
        Op::get("/api/v1/analytics/timeseries", "One metric over time")
            .tag(tag)
            .admin_only()
            .describe("At most 1,000 points: a longer range at `hour` is a 422 on `from`."),
    )
    .query(
        "metric",
        true,
        "A metric name (`orders.created`, `revenue.paid.EUR`, …)",
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some(metric_pattern())),
    )
    .query(
        "interval",
        false,
        "Bucket size (default `day`)",
        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(["hour", "day"])),
    )
    .ok("200", "The series", schema_ref("Series"))
    .add_to(&mut doc);
    Op::get("/api/v1/analytics/users/{id}", "One user's figures")
        .tag(tag)
        .user()
        .describe("A user may ask for their own; an admin for anyone's. Anyone else gets 403.")
        .fails(&[openapi::Fail::Forbidden])
        .path_uuid("id", "user")
        .ok("200", "The user's figures", schema_ref("UserFigures"))
        .add_to(&mut doc);
    Op::get("/api/v1/analytics/jobs", "The scheduled jobs")
        .tag(tag)
        .admin_only()
        .ok(
            "200",
            "Every job, its schedule and last run",
            ArrayBuilder::new().items(schema_ref("JobView")).build(),
        )
        .add_to(&mut doc);
    doc
}
