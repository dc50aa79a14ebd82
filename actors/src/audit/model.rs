//! The audit entry and the typed input the service takes: an entry to
//! record (from an event, a `POST`, an admin action) and the filters of a
//! search or an export, each parsed at the edge so that the store only
//! sees values that are valid.

use serde::Serialize;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::events::Event;
use crate::FieldError;

/// An entry as the API shows it.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
#[schema(as = AuditEntry)]
pub struct Entry {
    pub id: Uuid,
    pub seq: i64,
    #[serde(with = "time::serde::rfc3339")]
    pub occurred_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub recorded_at: OffsetDateTime,
    pub action: String,
    pub actor_id: Option<Uuid>,
    pub resource_type: String,
    pub resource_id: Option<String>,
    pub request_id: Option<String>,
    pub data: serde_json::Value,
    pub hash: String,
}

/// An entry to record; its `seq`, `recorded_at` and `hash` are set when it
/// is appended to the chain.
#[derive(Clone, Debug, PartialEq)]
pub struct NewEntry {
    pub id: Uuid,
    pub occurred_at: OffsetDateTime,
    pub action: String,
    pub actor_id: Option<Uuid>,
    pub resource_type: String,
    pub resource_id: Option<String>,
    pub request_id: Option<String>,
    /// Compact JSON, as stored and hashed.
    pub data: String,
}

impl NewEntry {
    /// The entry of a consumed event: its id, its topic as the action, the
    /// resource the topic names (`order.created` → `order`) with the id its
    /// payload carries (`order_id`, else `id`), the user who acted (the
    /// envelope's `actor_id`, else the payload's `user_id`) and the request
    /// that caused it (the envelope's `request_id`).
    pub fn from_event(event: &Event) -> Self {
        let topic = event.topic.as_str();
        let resource_type = topic.split('.').next().unwrap_or(topic).to_owned();
        let field = |name: &str| event.data.get(name).and_then(scalar_text);
        let resource_id = field(&format!("{resource_type}_id")).or_else(|| field("id"));
        let actor_id = event.actor_id.or_else(|| {
            event
                .data
                .get("user_id")
                .and_then(|v| v.as_str())
                .and_then(|v| Uuid::parse_str(v).ok())
        });
        Self {
            id: event.id,
            occurred_at: event.occurred_at,
            action: topic.to_owned(),
            actor_id,
            resource_type,
            resource_id,
            request_id: event.request_id.clone(),
            data: event.data.to_string(),
        }
    }
}

/// A string or a number as the text of an id.
fn scalar_text(value: &serde_json::Value) -> Option<String> {
    match value {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// `[a-z][a-z0-9_]*`: one part of an action, and a resource type.
fn is_word(part: &str) -> bool {
    let mut bytes = part.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_lowercase())
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// `[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+` (API.md).
pub fn is_action(value: &str) -> bool {
    value.len() <= 100 && value.contains('.') && value.split('.').all(is_word)
}

const ACTION_RULE: &str =
    "must be dot-separated lowercase words, e.g. `order.created` (at most 100 characters)";

/// The body [`PostedEntry::parse`] accepts, for the OpenAPI document.
#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = NewAuditEntry)]
#[allow(dead_code)]
pub struct PostedEntryBody {
    /// Dot-separated lowercase words (`order.created`), at most 100 characters.
    #[schema(max_length = 100, pattern = r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$")]
    action: String,
    /// A lowercase word (`order`), at most 64 characters.
    #[schema(max_length = 64, pattern = "^[a-z][a-z0-9_]*$")]
    resource_type: String,
    #[schema(min_length = 1, max_length = 200)]
    resource_id: Option<String>,
    /// Any JSON; `{}` when left out.
    #[serde(default)]
    #[schema(required = false)]
    data: serde_json::Value,
}

/// The body of `POST /api/v1/audit`.
#[derive(Clone, Debug, PartialEq)]
pub struct PostedEntry {
    pub action: String,
    pub resource_type: String,
    pub resource_id: Option<String>,
    pub data: serde_json::Value,
}

impl PostedEntry {
    /// Parses the body, naming every field that is wrong (unknown ones too).
    pub fn parse(
        body: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<Self, Vec<FieldError>> {
        let mut errors = Vec::new();
        for key in body.keys() {
            if !matches!(
                key.as_str(),
                "action" | "resource_type" | "resource_id" | "data"
            ) {
                errors.push(FieldError::new(
                    key.clone(),
                    "is not a field of an audit entry",
                ));
            }
        }
        let action = match body.get("action").and_then(|v| v.as_str()) {
            Some(a) if is_action(a) => a.to_owned(),
            _ => {
                errors.push(FieldError::new("action", ACTION_RULE));
                String::new()
            }
        };
        let resource_type = match body.get("resource_type").and_then(|v| v.as_str()) {
            Some(t) if t.len() <= 64 && is_word(t) => t.to_owned(),
            _ => {
                errors.push(FieldError::new(
                    "resource_type",
                    "must be a lowercase word, e.g. `order` (at most 64 characters)",
                ));
                String::new()
            }
        };
        let resource_id = match body.get("resource_id") {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::String(id)) if (1..=200).contains(&id.chars().count()) => {
                Some(id.clone())
            }
            Some(_) => {
                errors.push(FieldError::new(
                    "resource_id",
                    "must be a string of 1 to 200 characters",
                ));
                None
            }
        };
        let data = body
            .get("data")
            .cloned()
            .unwrap_or_else(|| serde_json::Value::Object(Default::default()));
        if errors.is_empty() {
            Ok(Self {
                action,
                resource_type,
                resource_id,
                data,
            })
        } else {
            Err(errors)
        }
    }

    /// The entry `actor_id` posts now, for `request_id`.
    pub fn into_entry(self, actor_id: Uuid, request_id: &str) -> NewEntry {
        NewEntry {
            id: Uuid::now_v7(),
            occurred_at: crate::storage::now_micros(),
            action: self.action,
            actor_id: Some(actor_id),
            resource_type: self.resource_type,
            resource_id: self.resource_id,
            request_id: Some(request_id.to_owned()),
            data: self.data.to_string(),
        }
    }
}

/// The `action` filter: one action, or every action under a prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ActionFilter {
    Exact(String),
    /// `order.*`: held as `order.`, searched as the range [`order.`, `order/`).
    Prefix(String),
}

impl ActionFilter {
    pub fn parse(value: &str) -> Option<Self> {
        if let Some(prefix) = value.strip_suffix(".*") {
            (!prefix.is_empty() && prefix.len() < 100 && prefix.split('.').all(is_word))
                .then(|| ActionFilter::Prefix(format!("{prefix}.")))
        } else {
            is_action(value).then(|| ActionFilter::Exact(value.to_owned()))
        }
    }

    /// The first text after the prefix's range (`.` + 1 is `/`).
    pub fn prefix_end(prefix: &str) -> String {
        format!("{}/", prefix.trim_end_matches('.'))
    }
}

/// The filters of `GET /search` and `GET /export.csv` (all optional, all
/// of them applied).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Filter {
    pub action: Option<ActionFilter>,
    pub actor_id: Option<Uuid>,
    pub resource_type: Option<String>,
    pub resource_id: Option<String>,
    pub request_id: Option<String>,
    /// Inclusive, on `occurred_at`.
    pub from: Option<OffsetDateTime>,
    /// Exclusive, on `occurred_at`.
    pub to: Option<OffsetDateTime>,
    /// A substring of the data, case-insensitive.
    pub q: Option<String>,
}

impl Filter {
    /// Parses the query's filters (other keys, `page` and `limit`, are read
    /// elsewhere), naming every one that is malformed.
    pub fn parse(query: &[(String, String)]) -> Result<Self, Vec<FieldError>> {
        let mut filter = Filter::default();
        let mut errors = Vec::new();
        let text = |key: &str, value: &str, errors: &mut Vec<FieldError>| {
            if (1..=200).contains(&value.chars().count()) {
                Some(value.to_owned())
            } else {
                errors.push(FieldError::new(key, "must be 1 to 200 characters"));
                None
            }
        };
        for (key, value) in query {
            match key.as_str() {
                "action" => match ActionFilter::parse(value) {
                    Some(action) => filter.action = Some(action),
                    None => errors.push(FieldError::new(
                        "action",
                        "must be an action (`order.created`) or a prefix ending in `.*` (`order.*`)",
                    )),
                },
                "actor_id" => match Uuid::parse_str(value) {
                    Ok(id) => filter.actor_id = Some(id),
                    Err(_) => errors.push(FieldError::new("actor_id", "must be a UUID")),
                },
                "resource_type" => {
                    if is_word(value) && value.len() <= 64 {
                        filter.resource_type = Some(value.clone());
                    } else {
                        errors.push(FieldError::new(
                            "resource_type",
                            "must be a lowercase word, e.g. `order`",
                        ));
                    }
                }
                "resource_id" => filter.resource_id = text(key, value, &mut errors),
                "request_id" => filter.request_id = text(key, value, &mut errors),
                "q" => filter.q = text(key, value, &mut errors),
                "from" | "to" => match OffsetDateTime::parse(value, &Rfc3339) {
                    Ok(t) if key == "from" => filter.from = Some(t),
                    Ok(t) => filter.to = Some(t),
                    Err(_) => errors.push(FieldError::new(
                        key.clone(),
                        "must be an RFC 3339 time, e.g. 2026-01-31T12:00:00Z",
                    )),
                },
                _ => {}
            }
        }
        if errors.is_empty() {
            Ok(filter)
        } else {
            Err(errors)
        }
    }
}

/// What `GET /verify` found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Verified {
    /// Entries checked (every kept one, up to the head when it started).
    pub entries: u64,
    pub valid: bool,
    /// The first seq whose link does not hold (a changed, missing or added row).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_bad_seq: Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_follow_the_contract() {
        assert!(is_action("order.created"));
        assert!(is_action("admin.circuit_opened"));
        for bad in ["order", "Order.created", "order..x", "1x.y", "order.", ".x"] {
            assert!(!is_action(bad), "{bad}");
        }
        assert_eq!(
            ActionFilter::parse("order.*"),
            Some(ActionFilter::Prefix("order.".into()))
        );
        assert_eq!(ActionFilter::prefix_end("order."), "order/");
        assert_eq!(ActionFilter::parse("*"), None);
        assert_eq!(ActionFilter::parse("order"), None);
    }

    #[test]
    fn an_event_names_its_resource_and_actor() {
        let user = Uuid::now_v7();
        let session = Uuid::now_v7();
        let event = Event::new(
            crate::events::Topic::new("session.revoked"),
            Some("req-9"),
            None,
            &serde_json::json!({"session_id": session, "user_id": user, "reason": "logout"}),
        )
        .unwrap();
        let entry = NewEntry::from_event(&event);
        assert_eq!(entry.action, "session.revoked");
        assert_eq!(entry.resource_type, "session");
        assert_eq!(entry.resource_id, Some(session.to_string()));
        assert_eq!(entry.actor_id, Some(user));
        assert_eq!(entry.request_id.as_deref(), Some("req-9"));
        // The trace context an event carries is not part of its entry, so
        // not of the hash chain: entries of events written before traces
        // existed verify as they did.
        let traced = event.clone().with_traceparent(Some(
            "00-5b8aa5a2d2c872e8321cf37308d69df2-051581bf3cb55c13-01".into(),
        ));
        assert_eq!(NewEntry::from_event(&traced), entry);
    }

    #[test]
    fn malformed_filters_are_named() {
        let query = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<Vec<_>>()
        };
        let errors = Filter::parse(&query(&[
            ("from", "yesterday"),
            ("actor_id", "x"),
            ("action", "a"),
        ]))
        .unwrap_err();
        let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["from", "actor_id", "action"]);
    }
}
