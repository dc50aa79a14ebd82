//! Delivery providers of the notifications service: the one interface the
//! service sends through ([`Provider`]), and one implementation per channel,
//! each speaking its real protocol:
//!
//! * `email.rs` — SMTP (lettre; STARTTLS, TLS or none)
//! * `sms.rs` — a Twilio-compatible HTTP API
//! * `push.rs` — Web Push (RFC 8030 delivery, RFC 8291 encryption, RFC 8292 VAPID)
//! * `webhook.rs` — an HTTP POST of the rendered JSON body, HMAC-signed
//!
//! The settings (`[services.notifications.email|sms|push|webhook]`, each
//! optional) are [`ProvidersSettings`]; [`ProvidersSettings::build`] checks
//! them and builds a provider per configured channel. Rate limits, the
//! `required` flag, retries and circuits are the service's business: the
//! providers only carry those settings. A provider does apply its own
//! `timeout` to each send, so that no send can hang whatever the caller does.
//!
//! No error text a provider makes (a [`SendError`], a build problem) contains
//! a password, auth token, signing secret or private key: the service stores
//! them as the notification's `last_error`, shown to admins.

pub mod email;
pub mod push;
pub mod sms;
pub mod webhook;

#[cfg(test)]
mod test_http;

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

use crate::service::SettingProblem;

pub use email::{EmailProvider, SmtpSecurity, SmtpSettings};
pub use push::{PushProvider, PushSettings, Urgency};
pub use sms::{SmsProvider, SmsSettings};
pub use webhook::{verify_signature, WebhookProvider, WebhookSettings};

/// A delivery channel: which provider a notification goes through.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    Email,
    Sms,
    Push,
    Webhook,
}

impl Channel {
    pub const ALL: [Channel; 4] = [
        Channel::Email,
        Channel::Sms,
        Channel::Push,
        Channel::Webhook,
    ];

    /// The name used in the API, the database and the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Email => "email",
            Channel::Sms => "sms",
            Channel::Push => "push",
            Channel::Webhook => "webhook",
        }
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A channel name that is none of `email`, `sms`, `push`, `webhook`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown channel {0:?} (known: email, sms, push, webhook)")]
pub struct UnknownChannel(pub String);

impl FromStr for Channel {
    type Err = UnknownChannel;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Channel::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| UnknownChannel(s.to_owned()))
    }
}

/// A Web Push subscription's keys, as the browser's `PushSubscription.toJSON()`
/// gives them: `p256dh` the user agent's P-256 public key (65 bytes,
/// uncompressed), `auth` its 16-byte authentication secret, both base64url.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushKeys {
    pub p256dh: String,
    pub auth: String,
}

impl PushKeys {
    /// Whether the keys can be encrypted to: for `POST /subscriptions` to
    /// refuse a subscription that could never be delivered to. The error
    /// names the field (`p256dh` or `auth`).
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        push::SubscriptionKeys::parse(self).map(|_| ())
    }
}

/// One message to send, rendered already.
#[derive(Clone, Copy, Debug)]
pub struct Delivery<'a> {
    /// The notification id: the email's `Message-ID`, the HTTP providers'
    /// `idempotency-key`, so that a provider can drop a duplicate.
    pub id: uuid::Uuid,
    /// An email address, an E.164 number, a webhook URL, or a push endpoint.
    pub to: &'a str,
    pub subject: Option<&'a str>,
    pub body: &'a str,
    pub html: Option<&'a str>,
    /// Some for push: the subscription's keys.
    pub push: Option<&'a PushKeys>,
}

/// Why a send failed, by what the caller should do about it.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// Connection refused, timeout, 5xx, 429: try again later.
    #[error("{0}")]
    Retryable(String),
    /// Will never succeed as is (4xx other than 408/429, an address refused
    /// by an SMTP 5xx).
    #[error("{0}")]
    Rejected(String),
    /// The push subscription answered 404/410: the caller removes it.
    #[error("{0}")]
    Gone(String),
    /// Retryable, and the server said when (`retry-after` in seconds):
    /// the next attempt waits at least that long.
    #[error("{message}")]
    Throttled { message: String, wait: Duration },
}

impl SendError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, SendError::Retryable(_) | SendError::Throttled { .. })
    }

    /// Replaces every occurrence of each secret in the message. A last guard:
    /// the messages are built not to contain secrets, but a server may echo
    /// back what it was sent.
    fn redacted(self, secrets: &[&str]) -> Self {
        match self {
            SendError::Retryable(m) => SendError::Retryable(redact(m, secrets)),
            SendError::Rejected(m) => SendError::Rejected(redact(m, secrets)),
            SendError::Gone(m) => SendError::Gone(redact(m, secrets)),
            SendError::Throttled { message, wait } => SendError::Throttled {
                message: redact(message, secrets),
                wait,
            },
        }
    }
}

/// Sends messages of one channel.
pub trait Provider: Send + Sync + 'static {
    fn channel(&self) -> Channel;
    fn send<'a>(&'a self, delivery: &'a Delivery<'a>) -> BoxFuture<'a, Result<(), SendError>>;
    /// Checks that its server answers, without sending anything, for
    /// `/ready` when the operator marked it `required`. `None` for a
    /// channel that has no one server (push and webhooks deliver to each
    /// recipient's own URL).
    fn ping(&self) -> Option<BoxFuture<'_, Result<(), String>>>;
}

/// A credential in the settings: serialized as is (the settings round-trip),
/// but never shown by `Debug`; [`ProvidersSettings::masked`] hides it for
/// `check-config`.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn masked(&self) -> Self {
        if self.0.is_empty() {
            Self::default()
        } else {
            Self(MASK.to_owned())
        }
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_empty() { "\"\"" } else { MASK })
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Self::new(value)
    }
}

/// What a secret is shown as (the same mask as the rest of the configuration).
const MASK: &str = "********";

/// `[services.notifications.email|sms|push|webhook]`, each optional.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProvidersSettings {
    pub email: Option<SmtpSettings>,
    pub sms: Option<SmsSettings>,
    pub push: Option<PushSettings>,
    pub webhook: Option<WebhookSettings>,
}

impl ProvidersSettings {
    /// Validates and builds every configured provider; each problem names its
    /// key (`email.from: not an email address …`).
    pub fn build(&self) -> Result<Vec<Arc<dyn Provider>>, Vec<String>> {
        self.build_checked().map_err(|problems| {
            problems
                .into_iter()
                .map(|p| format!("{}: {}", p.key, p.message))
                .collect()
        })
    }

    /// The same checks as [`ProvidersSettings::build`], as setting problems
    /// (keys relative to the section holding `email`, `sms`, …), for a
    /// service's `ServiceSettings::check`.
    pub fn problems(&self) -> Vec<SettingProblem> {
        self.build_checked().err().unwrap_or_default()
    }

    /// The channels configured, whether or not their settings are valid.
    pub fn channels(&self) -> Vec<Channel> {
        let mut channels = Vec::new();
        if self.email.is_some() {
            channels.push(Channel::Email);
        }
        if self.sms.is_some() {
            channels.push(Channel::Sms);
        }
        if self.push.is_some() {
            channels.push(Channel::Push);
        }
        if self.webhook.is_some() {
            channels.push(Channel::Webhook);
        }
        channels
    }

    /// A channel's rate limit, `required` flag and timeout, if configured.
    pub fn common(&self, channel: Channel) -> Option<Common> {
        match channel {
            Channel::Email => self.email.as_ref().map(SmtpSettings::common),
            Channel::Sms => self.sms.as_ref().map(SmsSettings::common),
            Channel::Push => self.push.as_ref().map(PushSettings::common),
            Channel::Webhook => self.webhook.as_ref().map(WebhookSettings::common),
        }
    }

    /// The settings with every credential replaced by `********`, for
    /// `check-config`.
    pub fn masked(&self) -> Self {
        let mut shown = self.clone();
        if let Some(email) = &mut shown.email {
            email.password = email.password.as_ref().map(Secret::masked);
        }
        if let Some(sms) = &mut shown.sms {
            sms.auth_token = sms.auth_token.masked();
        }
        if let Some(push) = &mut shown.push {
            push.vapid_private_key = push.vapid_private_key.masked();
        }
        if let Some(webhook) = &mut shown.webhook {
            webhook.secret = webhook.secret.masked();
        }
        shown
    }

    fn build_checked(&self) -> Result<Vec<Arc<dyn Provider>>, Vec<SettingProblem>> {
        let mut providers: Vec<Arc<dyn Provider>> = Vec::new();
        let mut problems = Vec::new();
        let mut add = |built: Result<Arc<dyn Provider>, Vec<SettingProblem>>| match built {
            Ok(provider) => providers.push(provider),
            Err(found) => problems.extend(found),
        };
        if let Some(email) = &self.email {
            add(email.build().map(|p| Arc::new(p) as Arc<dyn Provider>));
        }
        if let Some(sms) = &self.sms {
            add(sms.build().map(|p| Arc::new(p) as Arc<dyn Provider>));
        }
        if let Some(push) = &self.push {
            add(push.build().map(|p| Arc::new(p) as Arc<dyn Provider>));
        }
        if let Some(webhook) = &self.webhook {
            add(webhook.build().map(|p| Arc::new(p) as Arc<dyn Provider>));
        }
        if problems.is_empty() {
            Ok(providers)
        } else {
            Err(problems)
        }
    }
}

/// The keys every provider's section has (`per_second`, `required`,
/// `timeout`): the service enforces `per_second` and `required`; the
/// provider applies `timeout` to each send too.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Common {
    /// Sends per second at most through this provider.
    pub per_second: u32,
    /// Whether the service's readiness depends on this provider.
    pub required: bool,
    /// How long one send may take, connecting included.
    pub timeout: Duration,
}

/// The defaults of the [`Common`] keys.
const DEFAULT_PER_SECOND: u32 = 50;
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Checks a section's `per_second` and `timeout` (`section` is `email`, …;
/// a [`SettingProblem`] key is a `&'static str`, hence the table).
fn check_common(section: Channel, common: Common, problems: &mut Vec<SettingProblem>) {
    let (per_second, timeout, required) = match section {
        Channel::Email => ("email.per_second", "email.timeout", None),
        Channel::Sms => ("sms.per_second", "sms.timeout", None),
        Channel::Push => ("push.per_second", "push.timeout", Some("push.required")),
        Channel::Webhook => (
            "webhook.per_second",
            "webhook.timeout",
            Some("webhook.required"),
        ),
    };
    if let (Some(key), true) = (required, common.required) {
        problems.push(SettingProblem::new(
            key,
            "cannot be true: this channel delivers to each recipient's own URL, \
             so there is no one server for /ready to check",
        ));
    }
    if common.per_second == 0 {
        problems.push(SettingProblem::new(per_second, "must be at least 1"));
    }
    if common.timeout.is_zero() {
        problems.push(SettingProblem::new(timeout, "must be greater than zero"));
    }
}

/// Whether `url`'s host accepts a TCP connection within `timeout`: the
/// readiness check of an HTTP provider, which sends nothing.
fn reachable(url: &reqwest::Url, timeout: Duration) -> BoxFuture<'_, Result<(), String>> {
    Box::pin(async move {
        let host = url.host_str().ok_or_else(|| format!("{url}: no host"))?;
        let port = url
            .port_or_known_default()
            .ok_or_else(|| format!("{url}: no port"))?;
        match tokio::time::timeout(timeout, tokio::net::TcpStream::connect((host, port))).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(format!("{host}:{port}: {e}")),
            Err(_) => Err(format!("{host}:{port}: no answer within {timeout:?}")),
        }
    })
}

/// Replaces each non-empty secret in `text` by the mask.
fn redact(mut text: String, secrets: &[&str]) -> String {
    for secret in secrets.iter().filter(|s| !s.is_empty()) {
        if text.contains(secret) {
            text = text.replace(secret, MASK);
        }
    }
    text
}

/// An error and its sources on one line, each said once: HTTP and SMTP
/// clients wrap the cause (`connection refused`) a few layers deep, and some
/// layers repeat their source's text.
fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let said = cause.to_string();
        if !text.contains(&said) {
            text.push_str(": ");
            text.push_str(&said);
        }
        source = cause.source();
    }
    text
}

/// The HTTP client of an HTTP provider: the provider's timeout over the whole
/// exchange, and no redirects (a POST that is redirected is not delivered,
/// and following one would send the credentials or the payload elsewhere).
fn http_client(timeout: Duration) -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!(
            "stageworks-notifications/",
            env!("CARGO_PKG_VERSION")
        ))
        .build()
        .map_err(|e| format!("the HTTP client cannot be built: {}", error_chain(&e)))
}

/// A request that got no answer: retryable, except one that could not even be
/// built. The URL is left out of the text: webhook URLs and push endpoints
/// carry their own tokens.
fn request_failed(what: &str, err: reqwest::Error) -> SendError {
    let err = err.without_url();
    let text = if err.is_timeout() {
        format!("{what}: timed out")
    } else {
        format!("{what}: {}", error_chain(&err))
    };
    if err.is_builder() {
        SendError::Rejected(text)
    } else {
        SendError::Retryable(text)
    }
}

/// Reads at most `limit` bytes of a response body (an error answer is only
/// quoted, never needed whole).
async fn body_prefix(mut response: reqwest::Response, limit: usize) -> Vec<u8> {
    let mut body = Vec::new();
    while body.len() < limit {
        match response.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            _ => break,
        }
    }
    body.truncate(limit);
    body
}

/// A short, single-line quote of an answer's body for an error message.
fn quote(body: &[u8]) -> String {
    const MAX: usize = 200;
    let text = String::from_utf8_lossy(body);
    let mut line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX)
        .collect();
    if text.chars().count() > MAX {
        line.push('…');
    }
    line.trim().to_owned()
}

/// A server's `retry-after`: as shown in the error text, and the wait when
/// it is in seconds (an HTTP date is shown, not followed; an hour at most,
/// so a wrong header cannot park a notification for ever).
struct RetryAfter {
    shown: String,
    wait: Option<Duration>,
}

const LONGEST_RETRY_AFTER: Duration = Duration::from_secs(60 * 60);

fn retry_after(response: &reqwest::Response) -> RetryAfter {
    let Some(value) = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
    else {
        return RetryAfter {
            shown: String::new(),
            wait: None,
        };
    };
    RetryAfter {
        shown: format!(" (retry-after: {})", quote(value.as_bytes())),
        wait: value
            .trim()
            .parse::<u64>()
            .ok()
            .map(|secs| Duration::from_secs(secs).min(LONGEST_RETRY_AFTER)),
    }
}

/// The usual meaning of an HTTP provider's status (the providers that differ,
/// push's 404/410, check first): 2xx sent; 408, 429 and 5xx retryable; every
/// other answer (a redirect, a 4xx) will not change by trying again.
/// A retryable answer with a `retry-after` in seconds is
/// [`SendError::Throttled`].
fn classify_status(
    status: reqwest::StatusCode,
    text: String,
    wait: Option<Duration>,
) -> Result<(), SendError> {
    if status.is_success() {
        Ok(())
    } else if status.is_server_error()
        || status == reqwest::StatusCode::TOO_MANY_REQUESTS
        || status == reqwest::StatusCode::REQUEST_TIMEOUT
    {
        Err(match wait {
            Some(wait) => SendError::Throttled {
                message: text,
                wait,
            },
            None => SendError::Retryable(text),
        })
    } else {
        Err(SendError::Rejected(text))
    }
}

/// A URL the HTTP providers may post to: `http` or `https` with a host.
fn http_url(text: &str) -> Result<reqwest::Url, String> {
    let url = reqwest::Url::parse(text).map_err(|e| format!("not a URL ({e})"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "must be an http or https URL, not {}:",
            url.scheme()
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("has no host".to_owned());
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use figment::providers::Serialized;
    use figment::value::{Dict, Value};
    use figment::Figment;

    use super::*;

    #[test]
    fn channels_round_trip_through_their_names() {
        for channel in Channel::ALL {
            assert_eq!(channel.as_str().parse::<Channel>(), Ok(channel));
            assert_eq!(channel.to_string(), channel.as_str());
            assert_eq!(
                serde_json::to_string(&channel).unwrap(),
                format!("\"{}\"", channel.as_str())
            );
        }
        assert!("fax"
            .parse::<Channel>()
            .unwrap_err()
            .to_string()
            .contains("fax"));
        assert!("Email".parse::<Channel>().is_err());
    }

    fn dict(pairs: &[(&str, Value)]) -> Value {
        Value::from(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect::<Dict>(),
        )
    }

    /// Read as the service reads its section: defaults, then the keys.
    fn read(section: Value) -> Result<ProvidersSettings, String> {
        Figment::from(Serialized::defaults(ProvidersSettings::default()))
            .merge(Serialized::defaults(section))
            .extract()
            .map_err(|e| e.to_string())
    }

    #[test]
    fn sections_read_with_defaults_and_durations() {
        let settings = read(dict(&[
            (
                "email",
                dict(&[
                    ("host", Value::from("smtp.example.com")),
                    ("from", Value::from("Stageworks <noreply@example.com>")),
                    ("password", Value::from("hunter2-password")),
                    ("username", Value::from("mailer")),
                    ("timeout", Value::from("30s")),
                    ("required", Value::from(true)),
                ]),
            ),
            (
                "webhook",
                dict(&[
                    ("secret", Value::from("0123456789abcdef-webhook")),
                    ("per_second", Value::from(5)),
                ]),
            ),
        ]))
        .unwrap();
        let email = settings.email.as_ref().unwrap();
        assert_eq!(email.timeout, Duration::from_secs(30));
        assert_eq!(email.per_second, 50);
        assert_eq!(email.security, SmtpSecurity::Starttls);
        assert!(email.required);
        let webhook = settings.webhook.as_ref().unwrap();
        assert_eq!(webhook.per_second, 5);
        assert!(!webhook.required);
        assert_eq!(webhook.timeout, Duration::from_secs(10));
        assert!(settings.sms.is_none() && settings.push.is_none());
        assert_eq!(settings.channels(), vec![Channel::Email, Channel::Webhook]);
        assert_eq!(settings.common(Channel::Webhook).unwrap().per_second, 5);
        assert!(settings.common(Channel::Sms).is_none());

        let providers = settings.build().unwrap();
        let channels: Vec<_> = providers.iter().map(|p| p.channel()).collect();
        assert_eq!(channels, vec![Channel::Email, Channel::Webhook]);

        // Credentials are neither in Debug nor in the masked settings.
        let debug = format!("{settings:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(!debug.contains("0123456789abcdef"), "{debug}");
        let masked = serde_json::to_string(&settings.masked()).unwrap();
        assert!(!masked.contains("hunter2"), "{masked}");
        assert!(!masked.contains("0123456789abcdef"), "{masked}");
        assert!(masked.contains(MASK), "{masked}");
        // ... but serialized as is, so the settings round-trip.
        let json = serde_json::to_string(&settings).unwrap();
        let back: ProvidersSettings = serde_json::from_str(&json).unwrap();
        assert_eq!(
            back.email.unwrap().password,
            Some("hunter2-password".into())
        );
    }

    #[test]
    fn a_misspelt_key_is_refused() {
        let err = read(dict(&[(
            "webhook",
            dict(&[("secert", Value::from("0123456789abcdef"))]),
        )]))
        .unwrap_err();
        assert!(err.to_string().contains("secert"), "{err}");
        let err = read(dict(&[("fax", dict(&[]))])).unwrap_err();
        assert!(err.to_string().contains("fax"), "{err}");
    }

    #[test]
    fn nothing_configured_builds_nothing() {
        assert!(ProvidersSettings::default().build().unwrap().is_empty());
        assert!(ProvidersSettings::default().problems().is_empty());
    }

    #[test]
    fn build_problems_name_their_keys_and_never_the_secrets() {
        let settings = ProvidersSettings {
            email: Some(SmtpSettings {
                host: "smtp.example.com".into(),
                from: "not an address".into(),
                username: Some("mailer".into()),
                password: Some("pa55word-secret".into()),
                ..SmtpSettings::default()
            }),
            sms: Some(SmsSettings {
                base_url: "ftp://sms.example.com".into(),
                account_sid: "AC123".into(),
                auth_token: "sms-auth-token-secret".into(),
                from: "+15005550006".into(),
                ..SmsSettings::default()
            }),
            push: Some(PushSettings {
                vapid_private_key: "not-a-vapid-key-secret".into(),
                subject: "mailto:ops@example.com".into(),
                ..PushSettings::default()
            }),
            webhook: Some(WebhookSettings {
                secret: Secret::default(),
                ..WebhookSettings::default()
            }),
        };
        let problems = settings.build().err().unwrap();
        let all = problems.join("\n");
        for key in [
            "email.from: ",
            "sms.base_url: ",
            "push.vapid_private_key: ",
            "webhook.secret: ",
        ] {
            assert!(
                problems.iter().any(|p| p.starts_with(key)),
                "{key} in {all}"
            );
        }
        for secret in [
            "pa55word-secret",
            "sms-auth-token-secret",
            "not-a-vapid-key-secret",
        ] {
            assert!(!all.contains(secret), "{secret} in {all}");
        }
        assert_eq!(settings.problems().len(), problems.len());
    }

    #[test]
    fn common_keys_are_checked() {
        let settings = ProvidersSettings {
            webhook: Some(WebhookSettings {
                secret: "0123456789abcdef".into(),
                per_second: 0,
                timeout: Duration::ZERO,
                required: true,
            }),
            ..ProvidersSettings::default()
        };
        let problems = settings.build().err().unwrap();
        assert_eq!(
            problems,
            vec![
                "webhook.required: cannot be true: this channel delivers to each recipient's \
                 own URL, so there is no one server for /ready to check",
                "webhook.per_second: must be at least 1",
                "webhook.timeout: must be greater than zero"
            ]
        );
    }

    #[test]
    fn redaction_and_quotes() {
        assert_eq!(
            redact("token abc123 and abc123".into(), &["abc123", ""]),
            "token ******** and ********"
        );
        assert_eq!(quote(b"  line one\nline two  "), "line one line two");
        assert_eq!(quote("é".repeat(300).as_bytes()).chars().count(), 201);
        assert!(http_url("mailto:x@example.com").is_err());
        assert!(http_url("https://example.com/hook").is_ok());
        assert!(http_url("not a url").is_err());
    }
}
