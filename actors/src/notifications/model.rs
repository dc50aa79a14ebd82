//! The notifications service's values, parsed at the edge: a send request
//! becomes a [`NewSend`] of typed values (a [`Recipient`] checked for its
//! channel, a [`TemplateName`]) or a list of field errors naming each
//! problem; and the rows it keeps ([`Notification`], [`Template`],
//! [`Preferences`], [`PushSubscription`]) as the contract shows them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use time::OffsetDateTime;
use uuid::Uuid;

pub use super::providers::Channel;
use crate::auth::model::Email;
use crate::FieldError;

/// The most recipients one `send-bulk` takes.
pub const MAX_BULK: usize = 10_000;
/// The longest message body accepted (a rendered template may be as long).
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// The longest email subject.
pub const MAX_SUBJECT_CHARS: usize = 998;

/// Where a notification goes, checked against its channel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Recipient {
    /// `to`: an address of the channel's kind.
    Address(String),
    /// `user_id`: a known user (their email, their push subscriptions).
    User(Uuid),
}

impl Recipient {
    /// `to` for `channel`: an email address, an E.164 number, an http(s)
    /// URL; push goes to users only (to their subscriptions).
    pub fn address(channel: Channel, to: &str) -> Result<Self, &'static str> {
        match channel {
            Channel::Email => Email::parse(to)
                .map(|email| Recipient::Address(email.as_str().to_owned()))
                .map_err(|_| "must be an email address for the email channel"),
            Channel::Sms => parse_e164(to).map(Recipient::Address),
            Channel::Webhook => parse_webhook_url(to).map(Recipient::Address),
            Channel::Push => Err("push goes to a user_id (their subscriptions), not to an address"),
        }
    }
}

/// An E.164 number: `+`, a country code not starting with 0, 8 to 15 digits in all.
pub fn parse_e164(to: &str) -> Result<String, &'static str> {
    const INVALID: &str = "must be an E.164 phone number such as +14155550123";
    let digits = to.strip_prefix('+').ok_or(INVALID)?;
    let ok = (8..=15).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0');
    ok.then(|| to.to_owned()).ok_or(INVALID)
}

/// An absolute `http` or `https` URL with a host.
pub fn parse_webhook_url(to: &str) -> Result<String, &'static str> {
    const INVALID: &str = "must be an absolute http or https URL";
    let uri: http::Uri = to.parse().map_err(|_| INVALID)?;
    let scheme_ok = matches!(uri.scheme_str(), Some("http" | "https"));
    let host_ok = uri.host().is_some_and(|h| !h.is_empty());
    (scheme_ok && host_ok && to.len() <= 2048)
        .then(|| to.to_owned())
        .ok_or(INVALID)
}

/// A template's name: `[a-z0-9][a-z0-9_.-]{0,63}`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct TemplateName(String);

impl TemplateName {
    pub fn parse(value: &str) -> Result<Self, &'static str> {
        const INVALID: &str = "must match [a-z0-9][a-z0-9_.-]{0,63}";
        let mut bytes = value.bytes();
        let first_ok = bytes
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        let rest_ok = bytes.all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.' | b'-')
        });
        (first_ok && rest_ok && value.len() <= 64)
            .then(|| Self(value.to_owned()))
            .ok_or(INVALID)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What a message says: a template with its data, or a body given as is.
#[derive(Clone, Debug, PartialEq)]
pub enum Content {
    Template {
        name: TemplateName,
        data: Map<String, Value>,
    },
    Literal {
        subject: Option<String>,
        body: String,
    },
}

/// A parsed `POST /send`.
#[derive(Clone, Debug, PartialEq)]
pub struct NewSend {
    pub channel: Channel,
    pub recipient: Recipient,
    pub content: Content,
}

/// A parsed `POST /send-bulk`: one recipient per notification, each with
/// the shared data and its own merged over it.
#[derive(Clone, Debug, PartialEq)]
pub struct NewBulk {
    pub channel: Channel,
    pub template: TemplateName,
    pub recipients: Vec<(Recipient, Map<String, Value>)>,
}

fn channel_field(body: &Map<String, Value>, errors: &mut Vec<FieldError>) -> Option<Channel> {
    match body.get("channel") {
        Some(Value::String(s)) => match s.parse::<Channel>() {
            Ok(channel) => Some(channel),
            Err(_) => {
                errors.push(FieldError::new(
                    "channel",
                    "must be one of email, sms, push, webhook",
                ));
                None
            }
        },
        _ => {
            errors.push(FieldError::new(
                "channel",
                "is required: one of email, sms, push, webhook",
            ));
            None
        }
    }
}

fn optional_str<'a>(
    body: &'a Map<String, Value>,
    field: &str,
    errors: &mut Vec<FieldError>,
) -> Option<&'a str> {
    match body.get(field) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s),
        Some(_) => {
            errors.push(FieldError::new(field, "must be a string"));
            None
        }
    }
}

fn data_field(
    body: &Map<String, Value>,
    field: &str,
    errors: &mut Vec<FieldError>,
) -> Map<String, Value> {
    match body.get(field) {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(data)) => data.clone(),
        Some(_) => {
            errors.push(FieldError::new(field, "must be an object"));
            Map::new()
        }
    }
}

fn uuid_field(
    body: &Map<String, Value>,
    field: &str,
    errors: &mut Vec<FieldError>,
) -> Option<Uuid> {
    let text = optional_str(body, field, errors)?;
    match Uuid::parse_str(text) {
        Ok(id) => Some(id),
        Err(_) => {
            errors.push(FieldError::new(field, "must be a UUID"));
            None
        }
    }
}

/// `to` or `user_id` (exactly one) for `channel`; `prefix` names the
/// fields of a bulk recipient (`recipients[3].`).
fn recipient(
    body: &Map<String, Value>,
    channel: Option<Channel>,
    prefix: &str,
    errors: &mut Vec<FieldError>,
) -> Option<Recipient> {
    let (to_field, user_field) = (format!("{prefix}to"), format!("{prefix}user_id"));
    let mut local = Vec::new();
    let to = optional_str(body, "to", &mut local);
    let user = uuid_field(body, "user_id", &mut local);
    for e in local {
        errors.push(FieldError::new(format!("{prefix}{}", e.field), e.message));
    }
    match (to, user) {
        (Some(_), Some(_)) => {
            errors.push(FieldError::new(
                to_field,
                "give either to or user_id, not both",
            ));
            None
        }
        (Some(to), None) => match Recipient::address(channel?, to) {
            Ok(r) => Some(r),
            Err(message) => {
                errors.push(FieldError::new(to_field, message));
                None
            }
        },
        (None, Some(user)) => Some(Recipient::User(user)),
        (None, None) if !errors.iter().any(|e| e.field == user_field) => {
            errors.push(FieldError::new(to_field, "is required (or user_id)"));
            None
        }
        (None, None) => None,
    }
}

fn template_field(body: &Map<String, Value>, errors: &mut Vec<FieldError>) -> Option<TemplateName> {
    let name = optional_str(body, "template", errors)?;
    match TemplateName::parse(name) {
        Ok(name) => Some(name),
        Err(message) => {
            errors.push(FieldError::new("template", message));
            None
        }
    }
}

fn text_field(
    value: Option<&str>,
    field: &str,
    max_chars: usize,
    errors: &mut Vec<FieldError>,
) -> Option<String> {
    let value = value?;
    if value.chars().count() > max_chars {
        errors.push(FieldError::new(
            field,
            format!("must be at most {max_chars} characters"),
        ));
        return None;
    }
    Some(value.to_owned())
}

/// The body [`NewSend::parse`] accepts, for the OpenAPI document (other
/// keys are ignored). Exactly one of `to` and `user_id`; exactly one of
/// `template` (with `data`) and `body`; `to` is an address of the
/// channel's kind (email, E.164 number, http(s) URL; push takes `user_id`
/// only); an email without a template needs a `subject`.
#[derive(Deserialize, utoipa::ToSchema)]
#[schema(as = NewNotification)]
#[allow(dead_code)]
pub struct NewSendBody {
    channel: Channel,
    to: Option<String>,
    user_id: Option<Uuid>,
    #[schema(pattern = "^[a-z0-9][a-z0-9_.-]{0,63}$")]
    template: Option<String>,
    #[schema(value_type = Option<Object>)]
    data: Option<Map<String, Value>>,
    #[schema(max_length = 998, pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$")]
    subject: Option<String>,
    #[schema(min_length = 1, max_length = 65536)]
    body: Option<String>,
}

/// One recipient of a bulk send: `to` or `user_id`, and data of its own.
#[derive(Deserialize, utoipa::ToSchema)]
#[schema(as = BulkRecipient)]
#[allow(dead_code)]
pub struct BulkRecipientBody {
    to: Option<String>,
    user_id: Option<Uuid>,
    #[schema(value_type = Option<Object>)]
    data: Option<Map<String, Value>>,
}

/// The body [`NewBulk::parse`] accepts, for the OpenAPI document.
#[derive(Deserialize, utoipa::ToSchema)]
#[schema(as = NewBulk)]
#[allow(dead_code)]
pub struct NewBulkBody {
    channel: Channel,
    #[schema(pattern = "^[a-z0-9][a-z0-9_.-]{0,63}$")]
    template: String,
    /// Shared by every recipient (each one's own `data` wins).
    #[schema(value_type = Option<Object>)]
    data: Option<Map<String, Value>>,
    #[schema(min_items = 1, max_items = 10000)]
    recipients: Vec<BulkRecipientBody>,
}

impl NewSend {
    pub fn parse(body: &Map<String, Value>) -> Result<Self, Vec<FieldError>> {
        let mut errors = Vec::new();
        let channel = channel_field(body, &mut errors);
        let recipient = recipient(body, channel, "", &mut errors);
        let template = template_field(body, &mut errors);
        let data = data_field(body, "data", &mut errors);
        let subject = optional_str(body, "subject", &mut errors);
        let subject = text_field(subject, "subject", MAX_SUBJECT_CHARS, &mut errors);
        let text = optional_str(body, "body", &mut errors);
        let text = text_field(text, "body", MAX_BODY_BYTES, &mut errors);
        if let Some(subject) = &subject {
            if subject.chars().any(char::is_control) {
                errors.push(FieldError::new(
                    "subject",
                    "must not contain control characters",
                ));
            }
        }
        let content = match (template, text) {
            (Some(_), Some(_)) => {
                errors.push(FieldError::new(
                    "body",
                    "give either template (with data) or body, not both",
                ));
                None
            }
            (Some(name), None) => {
                if subject.is_some() {
                    errors.push(FieldError::new(
                        "subject",
                        "comes from the template when one is given",
                    ));
                }
                Some(Content::Template { name, data })
            }
            (None, Some(body)) => {
                if body.is_empty() {
                    errors.push(FieldError::new("body", "must not be empty"));
                }
                if channel == Some(Channel::Email) && subject.is_none() {
                    errors.push(FieldError::new(
                        "subject",
                        "is required for an email without a template",
                    ));
                }
                Some(Content::Literal { subject, body })
            }
            (None, None) if errors.iter().any(|e| e.field == "template") => None,
            (None, None) => {
                errors.push(FieldError::new("template", "is required (or body)"));
                None
            }
        };
        match (channel, recipient, content) {
            (Some(channel), Some(recipient), Some(content)) if errors.is_empty() => Ok(Self {
                channel,
                recipient,
                content,
            }),
            _ => Err(errors),
        }
    }
}

impl NewBulk {
    pub fn parse(body: &Map<String, Value>) -> Result<Self, Vec<FieldError>> {
        let mut errors = Vec::new();
        let channel = channel_field(body, &mut errors);
        let template = template_field(body, &mut errors);
        if template.is_none() && !errors.iter().any(|e| e.field == "template") {
            errors.push(FieldError::new("template", "is required"));
        }
        let shared = data_field(body, "data", &mut errors);
        let list = match body.get("recipients") {
            Some(Value::Array(list)) if !list.is_empty() && list.len() <= MAX_BULK => {
                list.as_slice()
            }
            Some(Value::Array(list)) if list.is_empty() => {
                errors.push(FieldError::new("recipients", "must not be empty"));
                &[]
            }
            Some(Value::Array(_)) => {
                errors.push(FieldError::new(
                    "recipients",
                    format!("must hold at most {MAX_BULK} recipients"),
                ));
                &[]
            }
            _ => {
                errors.push(FieldError::new(
                    "recipients",
                    "is required: an array of recipients",
                ));
                &[]
            }
        };
        let mut recipients = Vec::with_capacity(list.len());
        for (i, item) in list.iter().enumerate() {
            let prefix = format!("recipients[{i}].");
            let Value::Object(item) = item else {
                errors.push(FieldError::new(
                    format!("recipients[{i}]"),
                    "must be an object",
                ));
                continue;
            };
            let own = data_field(item, "data", &mut errors);
            if let Some(r) = recipient(item, channel, &prefix, &mut errors) {
                let mut data = shared.clone();
                data.extend(own);
                recipients.push((r, data));
            }
            // A long list of bad recipients is reported by its first few.
            if errors.len() >= 20 {
                break;
            }
        }
        match (channel, template) {
            (Some(channel), Some(template)) if errors.is_empty() => Ok(Self {
                channel,
                template,
                recipients,
            }),
            _ => Err(errors),
        }
    }
}

/// Where a notification is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
#[schema(as = NotificationStatus)]
pub enum Status {
    Queued,
    Sending,
    Sent,
    Retrying,
    Skipped,
    Dead,
}

impl Status {
    pub const ALL: [Status; 6] = [
        Status::Queued,
        Status::Sending,
        Status::Sent,
        Status::Retrying,
        Status::Skipped,
        Status::Dead,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Queued => "queued",
            Status::Sending => "sending",
            Status::Sent => "sent",
            Status::Retrying => "retrying",
            Status::Skipped => "skipped",
            Status::Dead => "dead",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        Status::ALL.into_iter().find(|s| s.as_str() == value)
    }
}

/// A notification as the contract shows it.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Notification {
    pub id: Uuid,
    pub channel: Channel,
    pub to: Option<String>,
    pub user_id: Option<Uuid>,
    pub template: Option<String>,
    pub subject: Option<String>,
    pub status: Status,
    pub attempts: u32,
    pub last_error: Option<String>,
    pub batch_id: Option<Uuid>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub sent_at: Option<OffsetDateTime>,
}

/// Which notifications a list shows.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NotificationFilter {
    pub user_id: Option<Uuid>,
    pub status: Option<Status>,
    pub channel: Option<Channel>,
}

/// A template as the contract shows it.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Template {
    #[schema(value_type = String, pattern = "^[a-z0-9][a-z0-9_.-]{0,63}$")]
    pub name: TemplateName,
    pub channel: Channel,
    pub subject: Option<String>,
    pub body: String,
    pub html: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

/// The body [`TemplateInput::parse`] accepts, for the OpenAPI document
/// (other keys are ignored; `subject` is required for email, `html` is for
/// email only).
#[derive(Deserialize, utoipa::ToSchema)]
#[schema(as = TemplateInput)]
#[allow(dead_code)]
pub struct TemplateBody {
    /// Required on `POST`; on `PUT`, the name in the path if given.
    #[schema(pattern = "^[a-z0-9][a-z0-9_.-]{0,63}$")]
    name: Option<String>,
    channel: Channel,
    #[schema(max_length = 998)]
    subject: Option<String>,
    /// Handlebars, strict: a variable the data lacks is an error.
    #[schema(min_length = 1, max_length = 65536)]
    body: String,
    #[schema(max_length = 65536)]
    html: Option<String>,
}

/// A parsed template body (`POST /templates`, `PUT /templates/{name}`);
/// compiled by [`super::templates`] before it is stored.
#[derive(Clone, Debug, PartialEq)]
pub struct TemplateInput {
    pub name: TemplateName,
    pub channel: Channel,
    pub subject: Option<String>,
    pub body: String,
    pub html: Option<String>,
}

impl TemplateInput {
    /// `name` from the path for a `PUT` (the body may repeat it, the same).
    pub fn parse(
        body: &Map<String, Value>,
        name_from_path: Option<&str>,
    ) -> Result<Self, Vec<FieldError>> {
        let mut errors = Vec::new();
        let named = optional_str(body, "name", &mut errors);
        let name = match (name_from_path, named) {
            (Some(path), Some(named)) if path != named => {
                errors.push(FieldError::new("name", "must be the name in the path"));
                None
            }
            (Some(name), _) | (None, Some(name)) => match TemplateName::parse(name) {
                Ok(name) => Some(name),
                Err(message) => {
                    errors.push(FieldError::new("name", message));
                    None
                }
            },
            (None, None) => {
                errors.push(FieldError::new("name", "is required"));
                None
            }
        };
        let channel = channel_field(body, &mut errors);
        let subject = optional_str(body, "subject", &mut errors);
        let subject = text_field(subject, "subject", MAX_SUBJECT_CHARS, &mut errors);
        let text = optional_str(body, "body", &mut errors);
        let text = text_field(text, "body", MAX_BODY_BYTES, &mut errors);
        let html = optional_str(body, "html", &mut errors);
        let html = text_field(html, "html", MAX_BODY_BYTES, &mut errors);
        if text.as_deref().is_none_or(str::is_empty) && !errors.iter().any(|e| e.field == "body") {
            errors.push(FieldError::new("body", "is required"));
        }
        if channel == Some(Channel::Email) && subject.as_deref().is_none_or(str::is_empty) {
            errors.push(FieldError::new(
                "subject",
                "is required for an email template",
            ));
        }
        if html.is_some() && channel.is_some_and(|c| c != Channel::Email) {
            errors.push(FieldError::new("html", "is for email templates only"));
        }
        match (name, channel, text) {
            (Some(name), Some(channel), Some(body)) if errors.is_empty() => Ok(Self {
                name,
                channel,
                subject,
                body,
                html,
            }),
            _ => Err(errors),
        }
    }
}

/// A user's opt-ins per channel (all on by default).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Preferences {
    pub email: bool,
    pub sms: bool,
    pub push: bool,
    pub webhook: bool,
}

impl Default for Preferences {
    fn default() -> Self {
        Self {
            email: true,
            sms: true,
            push: true,
            webhook: true,
        }
    }
}

impl Preferences {
    pub fn allows(&self, channel: Channel) -> bool {
        match channel {
            Channel::Email => self.email,
            Channel::Sms => self.sms,
            Channel::Push => self.push,
            Channel::Webhook => self.webhook,
        }
    }

    /// `PUT /preferences`: every channel, each a boolean.
    pub fn parse(body: &Map<String, Value>) -> Result<Self, Vec<FieldError>> {
        let mut errors = Vec::new();
        let mut read = |field: &str| match body.get(field) {
            Some(Value::Bool(b)) => *b,
            _ => {
                errors.push(FieldError::new(field, "is required: true or false"));
                true
            }
        };
        let prefs = Self {
            email: read("email"),
            sms: read("sms"),
            push: read("push"),
            webhook: read("webhook"),
        };
        for key in body.keys() {
            if !["email", "sms", "push", "webhook"].contains(&key.as_str()) {
                errors.push(FieldError::new(key.clone(), "is not a channel"));
            }
        }
        if errors.is_empty() {
            Ok(prefs)
        } else {
            Err(errors)
        }
    }
}

/// A Web Push subscription of a user, as the contract shows it.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct PushSubscription {
    pub id: Uuid,
    pub endpoint: String,
    #[serde(skip)]
    pub user_id: Uuid,
    #[serde(skip)]
    pub p256dh: String,
    #[serde(skip)]
    pub auth: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// The body [`NewSubscription::parse`] accepts, for the OpenAPI document
/// (other keys are ignored).
#[derive(Deserialize, utoipa::ToSchema)]
#[schema(as = NewPushSubscription)]
#[allow(dead_code)]
pub struct NewSubscriptionBody {
    /// An absolute http(s) URL, at most 2048 bytes.
    #[schema(format = "uri", max_length = 2048)]
    endpoint: String,
    keys: PushKeysBody,
}

/// `keys` of a push subscription: unpadded base64url, as browsers give them.
#[derive(Deserialize, utoipa::ToSchema)]
#[schema(as = PushKeys)]
#[allow(dead_code)]
pub struct PushKeysBody {
    /// A 65-byte uncompressed P-256 point.
    #[schema(pattern = "^[A-Za-z0-9_-]{86}[AEIMQUYcgkosw048]=*$")]
    p256dh: String,
    /// A 16-byte secret.
    #[schema(pattern = "^[A-Za-z0-9_-]{21}[AQgw]=*$")]
    auth: String,
}

/// A parsed `POST /subscriptions`.
#[derive(Clone, Debug, PartialEq)]
pub struct NewSubscription {
    pub endpoint: String,
    pub p256dh: String,
    pub auth: String,
}

impl NewSubscription {
    pub fn parse(body: &Map<String, Value>) -> Result<Self, Vec<FieldError>> {
        use base64::Engine as _;
        let mut errors = Vec::new();
        let endpoint = match optional_str(body, "endpoint", &mut errors) {
            Some(endpoint) => match parse_webhook_url(endpoint) {
                Ok(url) => Some(url),
                Err(message) => {
                    errors.push(FieldError::new("endpoint", message));
                    None
                }
            },
            None => {
                errors.push(FieldError::new("endpoint", "is required"));
                None
            }
        };
        let keys = match body.get("keys") {
            Some(Value::Object(keys)) => keys.clone(),
            _ => {
                errors.push(FieldError::new("keys", "is required: {p256dh, auth}"));
                Map::new()
            }
        };
        // Browsers give both as unpadded base64url: a 65-byte uncompressed
        // P-256 point and a 16-byte secret.
        let mut key = |field: &str, len: usize| {
            let name = format!("keys.{field}");
            let Some(Value::String(text)) = keys.get(field) else {
                errors.push(FieldError::new(name, "is required"));
                return None;
            };
            let decoded = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(text.trim_end_matches('='))
                .ok();
            match decoded {
                Some(bytes) if bytes.len() == len => Some(text.trim_end_matches('=').to_owned()),
                _ => {
                    errors.push(FieldError::new(
                        name,
                        format!("must be {len} bytes in base64url"),
                    ));
                    None
                }
            }
        };
        let p256dh = key("p256dh", 65);
        let auth = key("auth", 16);
        match (endpoint, p256dh, auth) {
            (Some(endpoint), Some(p256dh), Some(auth)) if errors.is_empty() => Ok(Self {
                endpoint,
                p256dh,
                auth,
            }),
            _ => Err(errors),
        }
    }
}

/// A batch's progress: how many of its notifications are in each state.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BatchProgress {
    pub id: Uuid,
    pub total: u64,
    #[serde(flatten)]
    pub counts: BTreeMap<&'static str, u64>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn object(value: Value) -> Map<String, Value> {
        value.as_object().cloned().unwrap()
    }

    fn fields(errors: Vec<FieldError>) -> Vec<String> {
        errors.into_iter().map(|e| e.field).collect()
    }

    #[test]
    fn a_send_names_every_bad_field() {
        let bad = NewSend::parse(&object(json!({"channel": "fax", "to": "x"}))).unwrap_err();
        assert_eq!(fields(bad), ["channel", "template"]);
        let bad = NewSend::parse(&object(
            json!({"channel": "sms", "to": "0123", "body": "hi"}),
        ))
        .unwrap_err();
        assert_eq!(fields(bad), ["to"]);
        let bad = NewSend::parse(&object(
            json!({"channel": "email", "to": "a@b.io", "body": "hi"}),
        ))
        .unwrap_err();
        assert_eq!(fields(bad), ["subject"]);
        let bad = NewSend::parse(&object(
            json!({"channel": "webhook", "to": "ftp://x.io", "template": "t", "body": "b"}),
        ))
        .unwrap_err();
        assert_eq!(fields(bad), ["to", "body"]);
        let bad = NewSend::parse(&object(
            json!({"channel": "push", "to": "https://push.io/x", "body": "b"}),
        ))
        .unwrap_err();
        assert_eq!(fields(bad), ["to"]);
    }

    #[test]
    fn a_send_becomes_typed_values() {
        let send = NewSend::parse(&object(json!({
            "channel": "email", "to": "Ann@Example.COM", "template": "welcome", "data": {"name": "Ann"}
        })))
        .unwrap();
        assert_eq!(send.recipient, Recipient::Address("ann@example.com".into()));
        assert!(
            matches!(send.content, Content::Template { ref name, .. } if name.as_str() == "welcome")
        );
        let user = Uuid::now_v7();
        let send = NewSend::parse(&object(json!({
            "channel": "sms", "user_id": user.to_string(), "body": "hello"
        })))
        .unwrap();
        assert_eq!(send.recipient, Recipient::User(user));
    }

    #[test]
    fn a_bulk_names_the_recipient_at_fault_and_merges_data() {
        let bad = NewBulk::parse(&object(json!({
            "channel": "email", "template": "t",
            "recipients": [{"to": "a@b.io"}, {"to": "nope"}]
        })))
        .unwrap_err();
        assert_eq!(fields(bad), ["recipients[1].to"]);
        let bulk = NewBulk::parse(&object(json!({
            "channel": "email", "template": "t", "data": {"a": 1, "b": 1},
            "recipients": [{"to": "a@b.io", "data": {"b": 2}}]
        })))
        .unwrap();
        assert_eq!(
            Value::Object(bulk.recipients[0].1.clone()),
            json!({"a": 1, "b": 2})
        );
    }

    #[test]
    fn names_numbers_and_urls() {
        assert!(TemplateName::parse("invoice_paid.v2").is_ok());
        for bad in ["", "_x", "Welcome", "a b", &"x".repeat(65)] {
            assert!(TemplateName::parse(bad).is_err(), "{bad}");
        }
        assert!(parse_e164("+14155550123").is_ok());
        for bad in ["14155550123", "+0123456789", "+1415", "+1415555012a"] {
            assert!(parse_e164(bad).is_err(), "{bad}");
        }
        assert!(parse_webhook_url("https://hooks.example.com/x?y=1").is_ok());
        for bad in ["/relative", "mailto:a@b.io", "https://"] {
            assert!(parse_webhook_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn preferences_take_every_channel() {
        let prefs = Preferences::parse(&object(
            json!({"email": false, "sms": true, "push": true, "webhook": true}),
        ))
        .unwrap();
        assert!(!prefs.allows(Channel::Email) && prefs.allows(Channel::Sms));
        let bad = Preferences::parse(&object(json!({"email": "no", "fax": true}))).unwrap_err();
        assert_eq!(fields(bad), ["email", "sms", "push", "webhook", "fax"]);
    }
}
