//! The SMS provider: Twilio's Messages API, or any service that speaks it
//! (`base_url` points elsewhere): `POST {base_url}/2010-04-01/Accounts/{sid}/Messages.json`,
//! form-encoded `To`, `From`, `Body`, HTTP basic auth with the account SID
//! and auth token. The notification id goes as `idempotency-key` and as
//! Twilio's `I-Twilio-Idempotency-Token`, so that a retried request after a
//! lost answer does not send the text twice.

use std::time::Duration;

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

use super::{
    body_prefix, check_common, classify_status, http_client, http_url, quote, reachable,
    request_failed, retry_after, Channel, Common, Delivery, Provider, Secret, SendError,
    DEFAULT_PER_SECOND, DEFAULT_TIMEOUT,
};
use crate::service::SettingProblem;

/// `[services.notifications.sms]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SmsSettings {
    /// The API's root (`https://api.twilio.com`).
    pub base_url: String,
    /// The account SID (`AC…`): the user of the basic auth, and part of the path.
    pub account_sid: String,
    pub auth_token: Secret,
    /// The sender: an E.164 number, a short code or an alphanumeric sender id.
    pub from: String,
    pub per_second: u32,
    pub required: bool,
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

impl Default for SmsSettings {
    fn default() -> Self {
        Self {
            base_url: "https://api.twilio.com".to_owned(),
            account_sid: String::new(),
            auth_token: Secret::default(),
            from: String::new(),
            per_second: DEFAULT_PER_SECOND,
            required: false,
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

impl SmsSettings {
    pub fn common(&self) -> Common {
        Common {
            per_second: self.per_second,
            required: self.required,
            timeout: self.timeout,
        }
    }

    /// Checks the settings and builds the provider; problems name their keys
    /// (`sms.account_sid`).
    pub fn build(&self) -> Result<SmsProvider, Vec<SettingProblem>> {
        let mut problems = Vec::new();
        check_common(Channel::Sms, self.common(), &mut problems);
        let mut url = match http_url(self.base_url.trim_end_matches('/')) {
            Ok(url) if url.query().is_some() || url.fragment().is_some() => {
                problems.push(SettingProblem::new(
                    "sms.base_url",
                    "must not have a query or a fragment",
                ));
                None
            }
            Ok(url) => Some(url),
            Err(e) => {
                problems.push(SettingProblem::new("sms.base_url", e));
                None
            }
        };
        // The SID is a path segment and the basic-auth user: letters and
        // digits only (Twilio's are `AC` and 32 hex digits), so that it can
        // neither change the path nor the auth header.
        if self.account_sid.is_empty() {
            problems.push(SettingProblem::new("sms.account_sid", "required"));
        } else if !self.account_sid.chars().all(|c| c.is_ascii_alphanumeric()) {
            problems.push(SettingProblem::new(
                "sms.account_sid",
                "must be letters and digits only",
            ));
        }
        if self.auth_token.is_empty() {
            problems.push(SettingProblem::new("sms.auth_token", "required"));
        }
        if self.from.trim().is_empty() {
            problems.push(SettingProblem::new(
                "sms.from",
                "required (the sending number, short code or sender id)",
            ));
        }
        if let Some(url) = &mut url {
            match url.path_segments_mut() {
                Ok(mut segments) => {
                    segments.pop_if_empty().extend([
                        "2010-04-01",
                        "Accounts",
                        &self.account_sid,
                        "Messages.json",
                    ]);
                }
                Err(()) => problems.push(SettingProblem::new("sms.base_url", "cannot have a path")),
            }
        }
        let client = http_client(self.timeout)
            .map_err(|e| problems.push(SettingProblem::new("sms", e)))
            .ok();
        match (url, client) {
            (Some(messages_url), Some(client)) if problems.is_empty() => Ok(SmsProvider {
                client,
                messages_url,
                account_sid: self.account_sid.clone(),
                auth_token: self.auth_token.clone(),
                from: self.from.trim().to_owned(),
                timeout: self.timeout,
            }),
            _ => Err(problems),
        }
    }
}

/// Sends texts through a Twilio-compatible API.
pub struct SmsProvider {
    client: reqwest::Client,
    /// `{base_url}/2010-04-01/Accounts/{sid}/Messages.json`.
    messages_url: reqwest::Url,
    account_sid: String,
    auth_token: Secret,
    from: String,
    /// How long a send, or the readiness check, may take.
    timeout: Duration,
}

/// Twilio's error answer (`{"code": 21211, "message": "…", "more_info": …}`).
#[derive(Deserialize)]
struct ApiError {
    code: Option<u64>,
    message: Option<String>,
}

impl SmsProvider {
    async fn post(&self, delivery: &Delivery<'_>) -> Result<(), SendError> {
        if !is_e164(delivery.to) {
            return Err(SendError::Rejected(
                "to: not an E.164 phone number (+ and up to 15 digits)".to_owned(),
            ));
        }
        let form = form_urlencoded::Serializer::new(String::new())
            .append_pair("To", delivery.to)
            .append_pair("From", &self.from)
            .append_pair("Body", delivery.body)
            .finish();
        let id = delivery.id.to_string();
        let response = self
            .client
            .post(self.messages_url.clone())
            .basic_auth(&self.account_sid, Some(self.auth_token.expose()))
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .header("idempotency-key", &id)
            .header("i-twilio-idempotency-token", &id)
            .body(form)
            .send()
            .await
            .map_err(|e| request_failed("sms provider", e))?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let after = retry_after(&response);
        let body = body_prefix(response, 8 * 1024).await;
        let mut text = format!("sms provider answered {status}{}", after.shown);
        // Only the API's own explanation is quoted, not the raw answer: a
        // proxy's error page is noise, and could echo the request.
        if let Ok(ApiError { code, message }) = serde_json::from_slice::<ApiError>(&body) {
            if let Some(message) = message.filter(|m| !m.trim().is_empty()) {
                text.push_str(": ");
                text.push_str(&quote(message.as_bytes()));
            }
            if let Some(code) = code {
                text.push_str(&format!(" (error {code})"));
            }
        }
        classify_status(status, text, after.wait)
    }
}

impl Provider for SmsProvider {
    fn channel(&self) -> Channel {
        Channel::Sms
    }

    fn send<'a>(&'a self, delivery: &'a Delivery<'a>) -> BoxFuture<'a, Result<(), SendError>> {
        Box::pin(async move {
            self.post(delivery)
                .await
                .map_err(|e| e.redacted(&[self.auth_token.expose()]))
        })
    }

    fn ping(&self) -> Option<BoxFuture<'_, Result<(), String>>> {
        Some(reachable(&self.messages_url, self.timeout))
    }
}

/// `+` then 2 to 15 digits, the first not 0 (ITU-T E.164).
fn is_e164(number: &str) -> bool {
    number.strip_prefix('+').is_some_and(|digits| {
        (2..=15).contains(&digits.len())
            && digits.bytes().all(|b| b.is_ascii_digit())
            && !digits.starts_with('0')
    })
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;

    use super::super::test_http::{Recorded, Reply, TestServer};
    use super::*;

    const SID: &str = "AC0123456789abcdef0123456789abcdef";
    const TOKEN: &str = "twilio-auth-token-5ecret";

    fn settings(base_url: &str) -> SmsSettings {
        SmsSettings {
            base_url: base_url.to_owned(),
            account_sid: SID.to_owned(),
            auth_token: TOKEN.into(),
            from: "+15005550006".to_owned(),
            timeout: Duration::from_secs(5),
            ..SmsSettings::default()
        }
    }

    fn provider(base_url: &str) -> SmsProvider {
        settings(base_url).build().unwrap()
    }

    fn delivery(to: &str) -> Delivery<'_> {
        Delivery {
            id: uuid::Uuid::now_v7(),
            to,
            subject: None,
            body: "Your code is 123 456 & welcome!",
            html: None,
            push: None,
        }
    }

    fn form(request: &Recorded) -> Vec<(String, String)> {
        form_urlencoded::parse(&request.body).into_owned().collect()
    }

    #[tokio::test]
    async fn posts_the_message_form_with_basic_auth_and_the_id() {
        let server = TestServer::start(|_| {
            Reply::status(201)
                .header("content-type", "application/json")
                .body(r#"{"sid":"SM123","status":"queued"}"#)
        })
        .await;
        // A base URL with a path and a trailing slash (a proxy's prefix).
        let provider = provider(&server.url("/twilio/"));
        let delivery = delivery("+14155550123");
        provider.send(&delivery).await.unwrap();

        let requests = server.requests();
        assert_eq!(requests.len(), 1);
        let request = &requests[0];
        assert_eq!(request.method, "POST");
        assert_eq!(
            request.path,
            format!("/twilio/2010-04-01/Accounts/{SID}/Messages.json")
        );
        assert_eq!(
            request.header("content-type"),
            Some("application/x-www-form-urlencoded")
        );
        assert_eq!(
            form(request),
            [
                ("To", "+14155550123"),
                ("From", "+15005550006"),
                ("Body", "Your code is 123 456 & welcome!"),
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
        );
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("{SID}:{TOKEN}"));
        assert_eq!(
            request.header("authorization"),
            Some(format!("Basic {basic}").as_str())
        );
        let id = delivery.id.to_string();
        assert_eq!(request.header("idempotency-key"), Some(id.as_str()));
        assert_eq!(
            request.header("i-twilio-idempotency-token"),
            Some(id.as_str())
        );
    }

    #[tokio::test]
    async fn answers_are_classified_and_never_show_the_token() {
        let server = TestServer::start(|request| {
            match form(request).iter().find(|(k, _)| k == "To").map(|(_, v)| v.as_str()) {
                Some("+14155550100") => Reply::status(400)
                    .header("content-type", "application/json")
                    .body(
                        r#"{"code":21211,"message":"The 'To' number +14155550100 is not a valid phone number.","more_info":"https://www.twilio.com/docs/errors/21211","status":400}"#,
                    ),
                Some("+14155550101") => Reply::status(503).header("retry-after", "5"),
                Some("+14155550102") => Reply::status(429),
                Some("+14155550104") => Reply::status(201).after(Duration::from_secs(5)),
                // An API that echoes the credentials in its error.
                _ => Reply::status(401).body(format!(
                    r#"{{"code":20003,"message":"Authenticate: {SID}:{TOKEN} refused"}}"#
                )),
            }
        })
        .await;
        let provider = provider(&server.url(""));

        let rejected = provider.send(&delivery("+14155550100")).await.unwrap_err();
        let SendError::Rejected(message) = &rejected else {
            panic!("{rejected:?}")
        };
        assert!(message.contains("400"), "{message}");
        assert!(
            message.contains("The 'To' number +14155550100 is not a valid phone number."),
            "{message}"
        );
        assert!(message.contains("21211"), "{message}");

        let busy = provider.send(&delivery("+14155550101")).await.unwrap_err();
        assert!(
            matches!(&busy, SendError::Throttled { message, wait } if message.contains("503") && message.contains("retry-after: 5") && *wait == Duration::from_secs(5)),
            "{busy:?}"
        );
        let limited = provider.send(&delivery("+14155550102")).await.unwrap_err();
        assert!(limited.is_retryable(), "{limited:?}");

        let echoed = provider.send(&delivery("+14155550103")).await.unwrap_err();
        assert!(matches!(echoed, SendError::Rejected(_)), "{echoed:?}");
        for err in [&rejected, &busy, &limited, &echoed] {
            let text = format!("{err} {err:?}");
            assert!(!text.contains(TOKEN), "{text}");
        }
        assert!(echoed.to_string().contains("20003"), "{echoed}");

        // No answer within the timeout: retryable.
        let impatient = SmsSettings {
            timeout: Duration::from_millis(300),
            ..settings(&server.url(""))
        }
        .build()
        .unwrap();
        let slow = impatient.send(&delivery("+14155550104")).await.unwrap_err();
        assert!(
            matches!(&slow, SendError::Retryable(m) if m.contains("timed out")),
            "{slow:?}"
        );

        // Nothing listening: retryable, without the token.
        let closed = self::provider(&TestServer::closed_port_url(""));
        let err = closed.send(&delivery("+14155550123")).await.unwrap_err();
        assert!(err.is_retryable(), "{err}");
        assert!(!format!("{err} {err:?}").contains(TOKEN), "{err}");
    }

    #[tokio::test]
    async fn a_number_that_is_not_e164_is_rejected_without_sending() {
        let provider = provider("http://127.0.0.1:9");
        for to in [
            "4155550123",
            "+0123",
            "+1",
            "+1415555012345678",
            "+1 415 555",
            "a@b.c",
        ] {
            let err = provider.send(&delivery(to)).await.unwrap_err();
            assert!(matches!(err, SendError::Rejected(_)), "{to}: {err}");
        }
        assert!(is_e164("+14155550123") && is_e164("+442071838750"));
    }

    #[test]
    fn settings_problems_name_their_keys() {
        let problems = SmsSettings {
            base_url: "not a url".into(),
            account_sid: "AC/../x".into(),
            auth_token: Secret::default(),
            from: " ".into(),
            ..SmsSettings::default()
        }
        .build()
        .err()
        .unwrap();
        let keys: Vec<_> = problems.iter().map(|p| p.key.as_ref()).collect();
        assert_eq!(
            keys,
            [
                "sms.base_url",
                "sms.account_sid",
                "sms.auth_token",
                "sms.from"
            ]
        );
        let problems = SmsSettings {
            account_sid: SID.into(),
            auth_token: TOKEN.into(),
            from: "+15005550006".into(),
            base_url: "https://api.example.com/?x=1".into(),
            ..SmsSettings::default()
        }
        .build()
        .err()
        .unwrap();
        assert_eq!(problems[0].key, "sms.base_url");
        assert!(!format!("{problems:?}").contains(TOKEN));
    }
}
