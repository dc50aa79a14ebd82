//! The auth service's values, parsed at the edge: a request body becomes typed
//! values ([`Email`], [`Password`], [`DisplayName`]) or a list of field
//! errors naming every field at fault, unknown fields included. What the
//! service returns ([`User`], [`Session`]) serializes exactly as API.md's
//! user and session.

use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::api::Role;
use crate::FieldError;

/// An email address: trimmed, lowercased, at most 254 bytes (the SMTP path
/// limit), `local@domain` with a dotted domain. Lowercasing the local part
/// is not what RFC 5321 says, but it is what users expect: `Ann@x.io` and
/// `ann@x.io` must not be two accounts.
#[derive(Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct Email(String);

impl Email {
    pub const MAX_BYTES: usize = 254;
    const MAX_LOCAL_BYTES: usize = 64;
    const MAX_LABEL_BYTES: usize = 63;

    pub fn parse(value: &str) -> Result<Self, &'static str> {
        const INVALID: &str = "must be a valid email address";
        let email = value.trim().to_lowercase();
        if email.is_empty() {
            return Err("must not be empty");
        }
        if email.len() > Self::MAX_BYTES {
            return Err("must be at most 254 bytes");
        }
        // Quoted local parts (which may hold an `@`) are legal but unheard of
        // in sign-up forms; refusing them keeps the split unambiguous.
        let (local, domain) = email.split_once('@').ok_or(INVALID)?;
        if local.is_empty()
            || local.len() > Self::MAX_LOCAL_BYTES
            || local.starts_with('.')
            || local.ends_with('.')
            || local.contains("..")
            || !local.chars().all(is_local_char)
        {
            return Err(INVALID);
        }
        // A dotless domain (`root@localhost`) cannot receive mail from the
        // internet, so it is almost always a typo.
        let labels: Vec<&str> = domain.split('.').collect();
        if labels.len() < 2 || !labels.iter().all(|l| is_domain_label(l)) {
            return Err(INVALID);
        }
        Ok(Self(email))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// RFC 5322 `atext` plus the dot, and any non-ASCII letter or digit (RFC 6531).
fn is_local_char(c: char) -> bool {
    c.is_alphanumeric() || c == '.' || "!#$%&'*+-/=?^_`{|}~".contains(c)
}

fn is_domain_label(label: &str) -> bool {
    !label.is_empty()
        && label.len() <= Email::MAX_LABEL_BYTES
        && !label.starts_with('-')
        && !label.ends_with('-')
        && label.chars().all(|c| c.is_alphanumeric() || c == '-')
}

impl fmt::Debug for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Email").field(&self.0).finish()
    }
}

/// A password as presented. Its content never appears in `Debug` output, so
/// a stray `{:?}` in a log line cannot leak it; it is not `Serialize`.
#[derive(Clone)]
pub struct Password(String);

impl Password {
    /// NIST SP 800-63B: at least 8, and 12 or more is what the contract asks;
    /// no composition rules.
    pub const MIN_CHARS: usize = 12;
    /// An upper bound keeps one request from buying seconds of hashing.
    pub const MAX_BYTES: usize = 1024;

    /// A new password (registration, bootstrap): the length policy applies.
    pub fn new(value: &str) -> Result<Self, &'static str> {
        if value.chars().count() < Self::MIN_CHARS {
            return Err("must be at least 12 characters");
        }
        Self::presented(value)
    }

    /// A password presented at login: only the byte bound applies, so that a
    /// password set under an older policy still works and a short one is a
    /// failed login like any other (401, not a 422 that says why).
    pub fn presented(value: &str) -> Result<Self, &'static str> {
        if value.len() > Self::MAX_BYTES {
            return Err("must be at most 1024 bytes");
        }
        Ok(Self(value.to_owned()))
    }

    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

/// A user's display name: trimmed, 1 to 100 characters, printable
/// ([`crate::text::check_printable`]: no control or bidi override characters).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct DisplayName(String);

impl DisplayName {
    pub const MAX_CHARS: usize = 100;

    pub fn parse(value: &str) -> Result<Self, &'static str> {
        let name = value.trim();
        if name.is_empty() {
            return Err("must not be empty");
        }
        if name.chars().count() > Self::MAX_CHARS {
            return Err("must be at most 100 characters");
        }
        crate::text::check_printable(name)?;
        Ok(Self(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

pub use crate::api::{parse_role, role_str};

/// Names every field of `body` that is not in `known`.
fn unknown_fields(body: &Map<String, Value>, known: &[&str], errors: &mut Vec<FieldError>) {
    for field in body.keys() {
        if !known.contains(&field.as_str()) {
            errors.push(FieldError::new(field, "is not a known field"));
        }
    }
}

/// A required string field, given to `parse`; its error is recorded.
fn required<T>(
    body: &Map<String, Value>,
    field: &str,
    parse: impl FnOnce(&str) -> Result<T, &'static str>,
    errors: &mut Vec<FieldError>,
) -> Option<T> {
    match body.get(field) {
        None | Some(Value::Null) => Err("is required"),
        Some(Value::String(s)) => parse(s),
        Some(_) => Err("must be a string"),
    }
    .map_err(|m| errors.push(FieldError::new(field, m)))
    .ok()
}

/// The body [`NewUser::parse`] accepts, for the OpenAPI document.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = NewUser)]
#[allow(dead_code)]
pub struct NewUserBody {
    /// Compared and stored trimmed and in lower case.
    #[schema(format = Email, max_length = 254)]
    email: String,
    /// At least 12 characters, at most 1024 bytes.
    #[schema(min_length = 12, max_length = 1024)]
    password: String,
    /// Trimmed; printable, 1 to 100 characters.
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F\u202A-\u202E\u2066-\u2069]*\S[^\u0000-\u001F\u007F-\u009F\u202A-\u202E\u2066-\u2069]*$"
    )]
    name: String,
}

/// The body [`Credentials::parse`] accepts, for the OpenAPI document.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = Credentials)]
#[allow(dead_code)]
pub struct CredentialsBody {
    #[schema(format = Email, max_length = 254)]
    email: String,
    /// Any length up to 1024 bytes: a wrong one is a 401.
    #[schema(max_length = 1024)]
    password: String,
}

/// `{refresh_token}` ([`parse_single_string`]), for the OpenAPI document.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct RefreshBody {
    /// A malformed or unknown one is a 401.
    refresh_token: String,
}

/// `{token}` ([`parse_single_string`]), for the OpenAPI document.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct ValidateBody {
    /// An access token; any string (a bad one is `valid: false`).
    token: String,
}

/// A valid `POST /register` body.
#[derive(Clone, Debug)]
pub struct NewUser {
    pub email: Email,
    pub password: Password,
    pub name: DisplayName,
}

impl NewUser {
    /// Parses `{email, password, name}`.
    pub fn parse(body: &Map<String, Value>) -> Result<Self, Vec<FieldError>> {
        let mut errors = Vec::new();
        unknown_fields(body, &["email", "password", "name"], &mut errors);
        let email = required(body, "email", Email::parse, &mut errors);
        let password = required(body, "password", Password::new, &mut errors);
        let name = required(body, "name", DisplayName::parse, &mut errors);
        match (email, password, name) {
            (Some(email), Some(password), Some(name)) if errors.is_empty() => Ok(Self {
                email,
                password,
                name,
            }),
            _ => Err(errors),
        }
    }
}

/// A valid `POST /login` body.
#[derive(Clone, Debug)]
pub struct Credentials {
    pub email: Email,
    pub password: Password,
}

impl Credentials {
    /// Parses `{email, password}`. A malformed email is a 422 (it says
    /// nothing about which accounts exist); a wrong password of any length
    /// is left for the 401.
    pub fn parse(body: &Map<String, Value>) -> Result<Self, Vec<FieldError>> {
        let mut errors = Vec::new();
        unknown_fields(body, &["email", "password"], &mut errors);
        let email = required(body, "email", Email::parse, &mut errors);
        let password = required(body, "password", Password::presented, &mut errors);
        match (email, password) {
            (Some(email), Some(password)) if errors.is_empty() => Ok(Self { email, password }),
            _ => Err(errors),
        }
    }
}

/// Parses a body holding exactly one string field (`{refresh_token}`,
/// `{token}`). The value itself is judged later: a malformed token is a 401
/// or `valid: false`, not a 422.
pub fn parse_single_string(
    body: &Map<String, Value>,
    field: &str,
) -> Result<String, Vec<FieldError>> {
    let mut errors = Vec::new();
    unknown_fields(body, &[field], &mut errors);
    let value = required(body, field, |s| Ok(s.to_owned()), &mut errors);
    match value {
        Some(value) if errors.is_empty() => Ok(value),
        _ => Err(errors),
    }
}

/// Where a session was opened from, as shown in the session list.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientInfo {
    /// The `user-agent` header, cut to [`ClientInfo::MAX_USER_AGENT_CHARS`].
    pub user_agent: Option<String>,
    pub ip: Option<IpAddr>,
}

impl ClientInfo {
    pub const MAX_USER_AGENT_CHARS: usize = 256;

    pub fn new(user_agent: Option<&str>, ip: Option<IpAddr>) -> Self {
        let user_agent = user_agent
            .map(|ua| {
                ua.chars()
                    .filter(|c| !c.is_control())
                    .take(Self::MAX_USER_AGENT_CHARS)
                    .collect::<String>()
            })
            .filter(|ua| !ua.is_empty());
        Self { user_agent, ip }
    }
}

/// A user as returned: `{id, email, name, role, created_at}` (never the hash).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct User {
    pub id: Uuid,
    #[schema(format = Email)]
    pub email: String,
    pub name: String,
    pub role: Role,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// A session as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionRecord {
    pub id: Uuid,
    pub user_id: Uuid,
    pub created_at: OffsetDateTime,
    pub last_used_at: OffsetDateTime,
    pub expires_at: OffsetDateTime,
    pub revoked_at: Option<OffsetDateTime>,
    pub user_agent: Option<String>,
    pub ip: Option<String>,
}

impl SessionRecord {
    /// Not revoked and not expired at `now`.
    pub fn is_active(&self, now: OffsetDateTime) -> bool {
        self.revoked_at.is_none() && self.expires_at > now
    }

    /// The session as its owner sees it; `current` is whether it is the one
    /// the request was made with.
    pub fn view(self, current_session: Option<Uuid>) -> Session {
        Session {
            current: current_session == Some(self.id),
            id: self.id,
            user_id: self.user_id,
            created_at: self.created_at,
            last_used_at: self.last_used_at,
            expires_at: self.expires_at,
            user_agent: self.user_agent,
            ip: self.ip,
        }
    }
}

/// A session as returned: `{id, user_id, created_at, last_used_at,
/// expires_at, user_agent, ip, current}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Session {
    pub id: Uuid,
    pub user_id: Uuid,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub last_used_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    pub user_agent: Option<String>,
    pub ip: Option<String>,
    pub current: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn object(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(map) => map,
            other => panic!("not an object: {other}"),
        }
    }

    #[test]
    fn emails_are_trimmed_and_lowercased() {
        let email = Email::parse("  Ann.Lee+news@Example.COM ").expect("valid");
        assert_eq!(email.as_str(), "ann.lee+news@example.com");
        assert!(Email::parse("zoë@exämple.de").is_ok());
    }

    #[test]
    fn malformed_emails_are_refused() {
        for bad in [
            "",
            "   ",
            "ann",
            "@example.com",
            "ann@",
            "ann@localhost",
            "ann@@example.com",
            "ann@exa mple.com",
            "a nn@example.com",
            ".ann@example.com",
            "ann.@example.com",
            "an..n@example.com",
            "ann@-example.com",
            "ann@example-.com",
            "ann@example..com",
            "ann@example.com.",
            "<ann>@example.com",
            "ann@exa_mple.com",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn emails_are_bounded() {
        let local = "a".repeat(64);
        let label = "b".repeat(63);
        let ok = format!("{local}@{label}.{label}.{}.cc", "c".repeat(57));
        assert_eq!(ok.len(), 253);
        assert!(Email::parse(&ok).is_ok());
        let too_long = format!("{local}@{label}.{label}.{}.cc", "c".repeat(59));
        assert_eq!(too_long.len(), 255);
        assert!(Email::parse(&too_long).is_err());
        assert!(Email::parse(&format!("{}@example.com", "a".repeat(65))).is_err());
        assert!(Email::parse(&format!("a@{}.com", "b".repeat(64))).is_err());
    }

    #[test]
    fn passwords_need_twelve_characters_and_at_most_1024_bytes() {
        assert!(Password::new("elevenchars").is_err());
        assert!(Password::new("twelve chars").is_ok());
        // Characters, not bytes: twelve two-byte letters are twelve.
        assert!(Password::new("éééééééééééé").is_ok());
        assert!(Password::new(&"x".repeat(1024)).is_ok());
        assert!(Password::new(&"x".repeat(1025)).is_err());
        assert!(Password::presented("short").is_ok());
        assert!(Password::presented(&"x".repeat(1025)).is_err());
    }

    #[test]
    fn passwords_never_debug_print() {
        let password = Password::new("correct horse battery staple").expect("valid");
        let shown = format!("{password:?} {:?}", Some(&password));
        assert!(!shown.contains("horse"), "{shown}");
        let new = NewUser::parse(&object(json!({
            "email": "a@b.co", "password": "correct horse battery staple", "name": "A"
        })))
        .expect("valid");
        assert!(!format!("{new:?}").contains("horse"));
    }

    #[test]
    fn display_names_are_trimmed_and_bounded() {
        assert_eq!(
            DisplayName::parse("  Ann  ").expect("valid").as_str(),
            "Ann"
        );
        assert!(DisplayName::parse("   ").is_err());
        assert!(DisplayName::parse(&"n".repeat(100)).is_ok());
        assert!(DisplayName::parse(&"n".repeat(101)).is_err());
        assert!(DisplayName::parse("Ann\u{7}").is_err());
        assert!(DisplayName::parse("Ann\u{202E}").is_err());
    }

    #[test]
    fn registration_names_every_bad_field() {
        let errors = NewUser::parse(&object(json!({
            "email": "nope", "password": "short", "name": 7, "admin": true
        })))
        .expect_err("invalid");
        let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, vec!["admin", "email", "password", "name"]);

        let errors = NewUser::parse(&object(json!({}))).expect_err("invalid");
        assert!(errors.iter().all(|e| e.message == "is required"));
        assert_eq!(errors.len(), 3);
    }

    #[test]
    fn login_accepts_any_password_length_within_the_bound() {
        let creds = Credentials::parse(&object(json!({"email": "A@B.co", "password": "x"})))
            .expect("valid");
        assert_eq!(creds.email.as_str(), "a@b.co");
        let errors = Credentials::parse(&object(json!({"email": "a@b.co", "name": "x"})))
            .expect_err("invalid");
        let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, vec!["name", "password"]);
    }

    #[test]
    fn single_string_bodies() {
        assert_eq!(
            parse_single_string(&object(json!({"token": "abc"})), "token").expect("valid"),
            "abc"
        );
        let errors = parse_single_string(&object(json!({"token": 1, "x": 2})), "token")
            .expect_err("invalid");
        assert_eq!(errors.len(), 2);
    }

    #[test]
    fn users_and_sessions_serialize_as_the_contract_says() {
        let at = OffsetDateTime::from_unix_timestamp(1_700_000_000).expect("valid time");
        let user = User {
            id: Uuid::nil(),
            email: "a@b.co".into(),
            name: "A".into(),
            role: Role::Admin,
            created_at: at,
        };
        assert_eq!(
            serde_json::to_value(&user).expect("serializes"),
            json!({"id": Uuid::nil(), "email": "a@b.co", "name": "A", "role": "admin",
                   "created_at": "2023-11-14T22:13:20Z"})
        );
        let record = SessionRecord {
            id: Uuid::nil(),
            user_id: Uuid::nil(),
            created_at: at,
            last_used_at: at,
            expires_at: at,
            revoked_at: None,
            user_agent: Some("curl/8".into()),
            ip: None,
        };
        let value = serde_json::to_value(record.view(Some(Uuid::nil()))).expect("serializes");
        let keys: Vec<_> = value.as_object().expect("object").keys().cloned().collect();
        assert_eq!(
            keys,
            vec![
                "created_at",
                "current",
                "expires_at",
                "id",
                "ip",
                "last_used_at",
                "user_agent",
                "user_id"
            ]
        );
        assert_eq!(value["current"], true);
    }

    #[test]
    fn client_info_is_bounded() {
        let info = ClientInfo::new(Some(&"u\n".repeat(500)), None);
        assert_eq!(info.user_agent.as_deref().map(str::len), Some(256));
        assert_eq!(ClientInfo::new(Some(""), None).user_agent, None);
    }
}
