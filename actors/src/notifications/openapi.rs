//! The notifications service's part of the OpenAPI document: its sixteen
//! routes (`routes.rs`), what they answer and the bodies its parsers accept
//! (`model.rs`). Who may call what is the worker's to check: sending,
//! batches, templates, dead letters and retries are for admins.

use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::RefOr;

use super::messages::BulkAccepted;
use super::model::{
    NewBulkBody, NewSendBody, NewSubscriptionBody, Notification, Preferences, PushSubscription,
    Status, Template, TemplateBody,
};
use super::providers::Channel;
use crate::api::openapi::{
    self, date_time_schema, page_of, schema_ref, uuid_schema, Document, Fail, Op,
};

/// `GET /batches/{id}`: the total, and how many are in each state
/// ([`super::model::BatchProgress`], whose counts are flattened in).
fn batch_progress() -> RefOr<Schema> {
    let count = || {
        ObjectBuilder::new()
            .schema_type(Type::Integer)
            .minimum(Some(0))
    };
    let mut schema = ObjectBuilder::new()
        .property("id", uuid_schema())
        .required("id")
        .property("total", count())
        .required("total")
        .property("created_at", date_time_schema())
        .required("created_at");
    for status in Status::ALL {
        schema = schema
            .property(status.as_str(), count())
            .required(status.as_str());
    }
    schema.into()
}

fn template_name() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some("^[a-z0-9][a-z0-9_.-]{0,63}$"))
}

pub fn document() -> Document {
    let mut doc = openapi::document();
    openapi::schemas::<Notification>(&mut doc);
    openapi::schemas::<Template>(&mut doc);
    openapi::schemas::<Preferences>(&mut doc);
    openapi::schemas::<PushSubscription>(&mut doc);
    openapi::schemas::<BulkAccepted>(&mut doc);
    openapi::schemas::<NewSendBody>(&mut doc);
    openapi::schemas::<NewBulkBody>(&mut doc);
    openapi::schemas::<TemplateBody>(&mut doc);
    openapi::schemas::<NewSubscriptionBody>(&mut doc);
    openapi::schemas::<Channel>(&mut doc);
    doc.components
        .get_or_insert_with(Default::default)
        .schemas
        .insert("BatchProgress".into(), batch_progress());
    let tag = "notifications";
    Op::post("/api/v1/notifications/send", "Send a notification")
        .tag(tag)
        .admin_only()
        .describe("422 on `channel` when no provider is configured for it.")
        .json_body(schema_ref("NewNotification"))
        .idempotent()
        .ok(
            "202",
            "Accepted: queued (or skipped for an opted-out user)",
            schema_ref("Notification"),
        )
        .add_to(&mut doc);
    Op::post(
        "/api/v1/notifications/send-bulk",
        "Send one template to many",
    )
    .tag(tag)
    .admin_only()
    .describe("Up to 10,000 recipients; bodies up to 16 MiB.")
    .json_body(schema_ref("NewBulk"))
    .fails(&[Fail::NotFound])
    .ok(
        "202",
        "Accepted: the batch and how many it holds",
        schema_ref("BulkAccepted"),
    )
    .add_to(&mut doc);
    Op::get("/api/v1/notifications/batches/{id}", "A batch's progress")
        .tag(tag)
        .admin_only()
        .path_uuid("id", "batch")
        .ok(
            "200",
            "How many are in each state",
            schema_ref("BatchProgress"),
        )
        .add_to(&mut doc);
    Op::get("/api/v1/notifications", "List notifications")
        .tag(tag)
        .user()
        .describe("A user sees those addressed to them; an admin everyone's, or one user's with `user_id`.")
        .paginated()
        .user_filter()
        .query("status", false, "Only those in this state", schema_ref("NotificationStatus"))
        .query("channel", false, "Only those of this channel", schema_ref("Channel"))
        .ok("200", "A page of notifications", page_of("Notification"))
        .add_to(&mut doc);
    Op::get("/api/v1/notifications/{id}", "A notification")
        .tag(tag)
        .user()
        .describe("The addressee's or an admin's; anyone else's is a 404.")
        .path_uuid("id", "notification")
        .ok("200", "The notification", schema_ref("Notification"))
        .add_to(&mut doc);
    Op::get("/api/v1/notifications/templates", "List templates")
        .tag(tag)
        .admin_only()
        .ok(
            "200",
            "Every template",
            ObjectBuilder::new()
                .property(
                    "data",
                    utoipa::openapi::schema::ArrayBuilder::new().items(schema_ref("Template")),
                )
                .required("data"),
        )
        .add_to(&mut doc);
    Op::post("/api/v1/notifications/templates", "Create a template")
        .tag(tag)
        .admin_only()
        .describe("409 if the name is taken; 422 if the template does not compile.")
        .json_body(schema_ref("TemplateInput"))
        .fails(&[Fail::Conflict])
        .ok("201", "The new template", schema_ref("Template"))
        .add_to(&mut doc);
    Op::get("/api/v1/notifications/templates/{name}", "A template")
        .tag(tag)
        .admin_only()
        .path_param("name", template_name())
        .fails(&[Fail::NotFound])
        .ok("200", "The template", schema_ref("Template"))
        .add_to(&mut doc);
    Op::put(
        "/api/v1/notifications/templates/{name}",
        "Replace a template",
    )
    .tag(tag)
    .admin_only()
    .path_param("name", template_name())
    .json_body(schema_ref("TemplateInput"))
    .fails(&[Fail::NotFound])
    .ok("200", "The replaced template", schema_ref("Template"))
    .add_to(&mut doc);
    Op::delete(
        "/api/v1/notifications/templates/{name}",
        "Delete a template",
    )
    .tag(tag)
    .admin_only()
    .path_param("name", template_name())
    .fails(&[Fail::NotFound])
    .no_content("Deleted")
    .add_to(&mut doc);
    Op::post(
        "/api/v1/notifications/subscriptions",
        "Subscribe to Web Push",
    )
    .tag(tag)
    .user()
    .json_body(schema_ref("NewPushSubscription"))
    .ok(
        "201",
        "The caller's new subscription",
        schema_ref("PushSubscription"),
    )
    .add_to(&mut doc);
    Op::delete("/api/v1/notifications/subscriptions/{id}", "Unsubscribe")
        .tag(tag)
        .user()
        .describe("The owner's or an admin's; anyone else's is a 404.")
        .path_uuid("id", "subscription")
        .no_content("Unsubscribed")
        .add_to(&mut doc);
    Op::get("/api/v1/notifications/preferences", "The caller's opt-ins")
        .tag(tag)
        .user()
        .ok("200", "One flag per channel", schema_ref("Preferences"))
        .add_to(&mut doc);
    Op::put(
        "/api/v1/notifications/preferences",
        "Set the caller's opt-ins",
    )
    .tag(tag)
    .user()
    .json_body(schema_ref("Preferences"))
    .ok("200", "The saved opt-ins", schema_ref("Preferences"))
    .add_to(&mut doc);
    Op::get(
        "/api/v1/notifications/dead-letters",
        "Notifications that failed for good",
    )
    .tag(tag)
    .admin_only()
    .paginated()
    .ok(
        "200",
        "A page of dead notifications",
        page_of("Notification"),
    )
    .add_to(&mut doc);
    Op::post(
        "/api/v1/notifications/dead-letters/{id}/retry",
        "Retry a dead notification",
    )
    .tag(tag)
    .admin_only()
    .path_uuid("id", "notification")
    .fails(&[Fail::Conflict])
    .ok("202", "Queued again", schema_ref("Notification"))
    .add_to(&mut doc);
    doc
}
