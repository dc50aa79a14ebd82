//! The Web Push provider: a message to a browser's push subscription, through
//! the push service its endpoint names (Firefox's, Chrome's, Apple's…).
//!
//! * Delivery (RFC 8030): `POST` to the subscription's endpoint with `TTL`
//!   (how long the push service may hold the message), optionally `urgency`;
//!   `201 Created` means accepted; `404`/`410` mean the subscription is gone
//!   for good and the caller removes it ([`SendError::Gone`]).
//! * Encryption (RFC 8291, `content-encoding: aes128gcm` of RFC 8188): the
//!   body is encrypted to the subscription's `p256dh` key and `auth` secret,
//!   so that the push service cannot read it (by `web-push-native`).
//! * VAPID (RFC 8292): `authorization: vapid t=<JWT>, k=<public key>`, an
//!   ES256 JWT whose `aud` is the endpoint's origin, signed with our key pair,
//!   so that the push service knows which application server sends (and a
//!   subscription made with our public key accepts only us). The JWT is signed
//!   here (p256), and kept per origin for most of its 12 hours.
//!
//! The payload is the delivery's rendered `body` as is (what the service
//! worker's `push` event reads, typically JSON with a title and a text), at
//! most [`MAX_PAYLOAD_BYTES`]; `subject` and `html` are not sent.
//!
//! `vapid_private_key` is the P-256 private key: the base64url of its 32-byte
//! scalar (what `web-push generate-vapid-keys` and most libraries print), or
//! a PEM (`BEGIN PRIVATE KEY` PKCS#8, or `BEGIN EC PRIVATE KEY` SEC1, as
//! `openssl ecparam -name prime256v1 -genkey` writes). Browsers subscribe with
//! the public key, [`PushSettings::vapid_public_key`].

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use futures::future::BoxFuture;
use p256::ecdsa::signature::Signer as _;
use p256::ecdsa::{Signature, SigningKey};
use p256::elliptic_curve::sec1::ToEncodedPoint as _;
use p256::pkcs8::DecodePrivateKey as _;
use serde::{Deserialize, Serialize};

use super::{
    body_prefix, check_common, classify_status, http_client, http_url, quote, request_failed,
    retry_after, Channel, Common, Delivery, Provider, PushKeys, Secret, SendError,
    DEFAULT_PER_SECOND, DEFAULT_TIMEOUT,
};
use crate::service::SettingProblem;

/// The most plaintext one push message carries: push services need accept
/// no more than 4096 bytes of body, which the aes128gcm header (86 bytes),
/// the tag (16) and the padding delimiter (1) leave 3993 of (RFC 8291 §4).
pub const MAX_PAYLOAD_BYTES: usize = 3993;

/// The longest `ttl` push services keep (FCM's and Mozilla's four weeks).
const MAX_TTL: Duration = Duration::from_secs(28 * 24 * 60 * 60);

/// How long a VAPID JWT is valid (RFC 8292 allows up to 24 hours), and how
/// long before its end a new one is signed.
const TOKEN_LIFETIME_SECS: u64 = 12 * 60 * 60;
const TOKEN_RENEW_SECS: u64 = 60 * 60;

/// The origins whose JWT is kept at most (each push service is one origin, so
/// a handful in practice); past that the cache starts over.
const MAX_CACHED_TOKENS: usize = 256;

/// RFC 8030 §5.3 `urgency`: how soon the device should be woken for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Urgency {
    VeryLow,
    Low,
    Normal,
    High,
}

impl Urgency {
    pub fn as_str(self) -> &'static str {
        match self {
            Urgency::VeryLow => "very-low",
            Urgency::Low => "low",
            Urgency::Normal => "normal",
            Urgency::High => "high",
        }
    }
}

/// `[services.notifications.push]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PushSettings {
    /// The VAPID private key (P-256): base64url of the 32-byte scalar, or PEM
    /// (PKCS#8 or SEC1). Required.
    pub vapid_private_key: Secret,
    /// Who to contact about our pushes (the JWT's `sub`): a `mailto:` or
    /// `https:` URL. Required.
    pub subject: String,
    /// How long a push service keeps a message for an offline device.
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
    /// Sent as `urgency` when set (`very-low`, `low`, `normal`, `high`).
    pub urgency: Option<Urgency>,
    pub per_second: u32,
    pub required: bool,
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

impl Default for PushSettings {
    fn default() -> Self {
        Self {
            vapid_private_key: Secret::default(),
            subject: String::new(),
            ttl: Duration::from_secs(24 * 60 * 60),
            urgency: None,
            per_second: DEFAULT_PER_SECOND,
            required: false,
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

impl PushSettings {
    pub fn common(&self) -> Common {
        Common {
            per_second: self.per_second,
            required: self.required,
            timeout: self.timeout,
        }
    }

    /// The VAPID public key as browsers take it (`applicationServerKey` of
    /// `pushManager.subscribe`): base64url of the uncompressed point. None
    /// when `vapid_private_key` is not a key.
    pub fn vapid_public_key(&self) -> Option<String> {
        parse_vapid_key(self.vapid_private_key.expose())
            .ok()
            .map(|key| public_key_base64(&key))
    }

    /// Checks the settings and builds the provider; problems name their keys
    /// (`push.vapid_private_key`), never quoting the key.
    pub fn build(&self) -> Result<PushProvider, Vec<SettingProblem>> {
        let mut problems = Vec::new();
        check_common(Channel::Push, self.common(), &mut problems);
        let key = match self.vapid_private_key.expose().trim() {
            "" => {
                problems.push(SettingProblem::new(
                    "push.vapid_private_key",
                    "required (a P-256 private key: base64url of its 32 bytes, or PEM)",
                ));
                None
            }
            text => parse_vapid_key(text)
                .map_err(|e| problems.push(SettingProblem::new("push.vapid_private_key", e)))
                .ok(),
        };
        if let Err(e) = check_subject(&self.subject) {
            problems.push(SettingProblem::new("push.subject", e));
        }
        if self.ttl > MAX_TTL {
            problems.push(SettingProblem::new(
                "push.ttl",
                "at most 28 days (push services keep a message no longer)",
            ));
        }
        let client = http_client(self.timeout)
            .map_err(|e| problems.push(SettingProblem::new("push", e)))
            .ok();
        match (key, client) {
            (Some(key), Some(client)) if problems.is_empty() => Ok(PushProvider {
                client,
                public_key: public_key_base64(&key),
                signing_key: SigningKey::from(key),
                subject: self.subject.clone(),
                ttl: self.ttl.as_secs(),
                urgency: self.urgency,
                tokens: Mutex::new(HashMap::new()),
            }),
            _ => Err(problems),
        }
    }
}

/// The private key from base64url (padded or not) or PEM. The error never
/// quotes the input.
fn parse_vapid_key(text: &str) -> Result<p256::SecretKey, String> {
    let text = text.trim();
    if text.starts_with("-----BEGIN") {
        return p256::SecretKey::from_pkcs8_pem(text)
            .or_else(|_| p256::SecretKey::from_sec1_pem(text))
            .map_err(|_| "not a P-256 private key in PEM (PKCS#8 or SEC1)".to_owned());
    }
    let bytes = decode_base64url(text).ok_or_else(|| "neither base64url nor PEM".to_owned())?;
    if bytes.len() != 32 {
        return Err(format!(
            "the base64url of a P-256 private key is 32 bytes, this is {}",
            bytes.len()
        ));
    }
    p256::SecretKey::from_slice(&bytes)
        .map_err(|_| "not a valid P-256 private key (out of range)".to_owned())
}

fn public_key_base64(key: &p256::SecretKey) -> String {
    URL_SAFE_NO_PAD.encode(key.public_key().to_encoded_point(false).as_bytes())
}

/// RFC 8292 §2.1: the contact is a `mailto:` or `https:` URI.
fn check_subject(subject: &str) -> Result<(), String> {
    if subject.is_empty() {
        return Err("required (mailto:you@example.com or an https: URL)".to_owned());
    }
    if let Some(address) = subject.strip_prefix("mailto:") {
        return if address.contains('@') && !address.chars().any(char::is_whitespace) {
            Ok(())
        } else {
            Err("a mailto: subject needs an email address".to_owned())
        };
    }
    match reqwest::Url::parse(subject) {
        Ok(url) if url.scheme() == "https" && url.host_str().is_some() => Ok(()),
        _ => Err("must be a mailto: or https: URL".to_owned()),
    }
}

/// base64url as browsers give it, unpadded (padding and the standard
/// alphabet are tolerated: some clients re-encode the keys).
fn decode_base64url(text: &str) -> Option<Vec<u8>> {
    let text: String = text
        .trim()
        .trim_end_matches('=')
        .chars()
        .map(|c| match c {
            '+' => '-',
            '/' => '_',
            c => c,
        })
        .collect();
    URL_SAFE_NO_PAD.decode(text).ok()
}

/// A subscription's keys, decoded.
pub(super) struct SubscriptionKeys {
    public: p256::PublicKey,
    auth: web_push_native::Auth,
}

impl SubscriptionKeys {
    /// The keys, or the field that is wrong and why.
    pub(super) fn parse(keys: &PushKeys) -> Result<Self, (&'static str, String)> {
        let p256dh =
            decode_base64url(&keys.p256dh).ok_or(("p256dh", "not base64url".to_owned()))?;
        let public = p256::PublicKey::from_sec1_bytes(&p256dh)
            .map_err(|_| ("p256dh", "not a P-256 public key".to_owned()))?;
        let auth = decode_base64url(&keys.auth).ok_or(("auth", "not base64url".to_owned()))?;
        if auth.len() != 16 {
            return Err((
                "auth",
                format!("the auth secret is 16 bytes, this is {}", auth.len()),
            ));
        }
        Ok(Self {
            public,
            auth: web_push_native::Auth::clone_from_slice(&auth),
        })
    }
}

/// Sends Web Push messages with one VAPID key pair.
pub struct PushProvider {
    client: reqwest::Client,
    signing_key: SigningKey,
    /// base64url of the uncompressed public point (the `k=` of the header).
    public_key: String,
    subject: String,
    /// Seconds.
    ttl: u64,
    urgency: Option<Urgency>,
    /// Per audience (an endpoint's origin): its JWT and when that expires.
    tokens: Mutex<HashMap<String, (String, u64)>>,
}

impl PushProvider {
    /// The VAPID public key (base64url, uncompressed): browsers subscribe with it.
    pub fn vapid_public_key(&self) -> &str {
        &self.public_key
    }

    async fn post(&self, delivery: &Delivery<'_>) -> Result<(), SendError> {
        let endpoint =
            endpoint(delivery.to).map_err(|e| SendError::Rejected(format!("to: {e}")))?;
        let keys = delivery.push.ok_or_else(|| {
            SendError::Rejected("push: the subscription's keys are missing".to_owned())
        })?;
        let keys = SubscriptionKeys::parse(keys)
            .map_err(|(field, e)| SendError::Rejected(format!("keys.{field}: {e}")))?;
        if delivery.body.is_empty() {
            return Err(SendError::Rejected("body: empty".to_owned()));
        }
        if delivery.body.len() > MAX_PAYLOAD_BYTES {
            return Err(SendError::Rejected(format!(
                "body: {} bytes, a push message carries {MAX_PAYLOAD_BYTES} at most",
                delivery.body.len()
            )));
        }
        let payload =
            web_push_native::encrypt(delivery.body.as_bytes().to_vec(), &keys.public, &keys.auth)
                .map_err(|e| SendError::Rejected(format!("push: cannot encrypt the body ({e})")))?;
        let audience = endpoint.origin().ascii_serialization();
        let authorization = format!(
            "vapid t={}, k={}",
            self.token(&audience, unix_now()),
            self.public_key
        );
        let mut request = self
            .client
            .post(endpoint)
            .header("ttl", self.ttl)
            .header(reqwest::header::CONTENT_ENCODING, "aes128gcm")
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .header(reqwest::header::AUTHORIZATION, authorization);
        if let Some(urgency) = self.urgency {
            request = request.header("urgency", urgency.as_str());
        }
        let response = request
            .body(payload)
            .send()
            .await
            .map_err(|e| request_failed("push service", e))?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let after = retry_after(&response);
        let body = body_prefix(response, 1024).await;
        let mut text = format!("push service answered {status}{}", after.shown);
        let quoted = quote(&body);
        if !quoted.is_empty() {
            text.push_str(": ");
            text.push_str(&quoted);
        }
        if status == reqwest::StatusCode::NOT_FOUND || status == reqwest::StatusCode::GONE {
            return Err(SendError::Gone(text));
        }
        classify_status(status, text, after.wait)
    }

    /// The VAPID JWT for `audience`: the one kept while it has more than an
    /// hour left, else a new one (ECDSA signing each send would cost more
    /// than the rest of it).
    fn token(&self, audience: &str, now: u64) -> String {
        let lock = || self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((token, expires)) = lock().get(audience) {
            if *expires > now + TOKEN_RENEW_SECS {
                return token.clone();
            }
        }
        let expires = now + TOKEN_LIFETIME_SECS;
        let token = self.sign_token(audience, expires);
        let mut tokens = lock();
        if tokens.len() >= MAX_CACHED_TOKENS {
            tokens.clear();
        }
        tokens.insert(audience.to_owned(), (token.clone(), expires));
        token
    }

    /// RFC 8292 §2: a JWS (ES256, the signature as `r || s`) over
    /// `{"aud", "exp", "sub"}`.
    fn sign_token(&self, audience: &str, expires: u64) -> String {
        let header = URL_SAFE_NO_PAD.encode(br#"{"typ":"JWT","alg":"ES256"}"#);
        let claims = serde_json::json!({ "aud": audience, "exp": expires, "sub": self.subject });
        let input = format!("{header}.{}", URL_SAFE_NO_PAD.encode(claims.to_string()));
        let signature: Signature = self.signing_key.sign(input.as_bytes());
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature.to_bytes()))
    }
}

impl Provider for PushProvider {
    fn channel(&self) -> Channel {
        Channel::Push
    }

    fn send<'a>(&'a self, delivery: &'a Delivery<'a>) -> BoxFuture<'a, Result<(), SendError>> {
        // The private key never enters an error text: it is only ever used
        // to sign, and nothing sent or received contains it.
        Box::pin(self.post(delivery))
    }

    fn ping(&self) -> Option<BoxFuture<'_, Result<(), String>>> {
        None
    }
}

/// A push endpoint: https, or http only to a loopback address (a local push
/// server, tests): a real push service's endpoint is always https, and the
/// JWT must not cross a network in the clear.
fn endpoint(text: &str) -> Result<reqwest::Url, String> {
    let url = http_url(text)?;
    let host = url.host_str().unwrap_or_default();
    let loopback = host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if url.scheme() == "http" && !loopback {
        return Err("a push endpoint must be https".to_owned());
    }
    Ok(url)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use p256::pkcs8::EncodePrivateKey as _;
    use testkit::PushSubscriber;

    use super::super::test_http::{Reply, TestServer};
    use super::*;

    fn random_secret_key() -> p256::SecretKey {
        loop {
            let mut bytes = [0u8; 32];
            getrandom::fill(&mut bytes).unwrap();
            if let Ok(key) = p256::SecretKey::from_slice(&bytes) {
                return key;
            }
        }
    }

    /// The keys a browser sends with its subscription.
    fn keys_of(subscriber: &PushSubscriber) -> PushKeys {
        PushKeys {
            p256dh: subscriber.p256dh.clone(),
            auth: subscriber.auth_base64.clone(),
        }
    }

    fn b64(text: &str) -> Vec<u8> {
        URL_SAFE_NO_PAD.decode(text).unwrap()
    }

    #[test]
    fn the_test_decryption_reads_the_rfc_8291_example() {
        // RFC 8291 Appendix A.
        let subscriber = PushSubscriber::from_parts(
            &b64("q1dXpw3UpT5VOmu_cf_v6ih07Aems3njxI-JWgLcM94"),
            &b64("BTBZMqHH6r4Tts7J_aSIgg"),
        )
        .unwrap();
        let message = b64("DGv6ra1nlYgDCS1FRnbzlwAAEABBBP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A_yl95bQpu6cVPTpK4Mqgkf1CXztLVBSt2Ks3oZwbuwXPXLWyouBWLVWGNWQexSgSxsj_Qulcy4a-fN");
        let plaintext = subscriber.decrypt(&message).unwrap();
        assert_eq!(plaintext, b"When I grow up, I want to be a watermelon");
    }

    struct Fixture {
        vapid_key: String,
        provider: PushProvider,
    }

    fn fixture(urgency: Option<Urgency>) -> Fixture {
        let vapid_key = URL_SAFE_NO_PAD.encode(random_secret_key().to_bytes());
        let provider = PushSettings {
            vapid_private_key: vapid_key.as_str().into(),
            subject: "mailto:ops@example.com".into(),
            ttl: Duration::from_secs(3600),
            urgency,
            timeout: Duration::from_secs(5),
            ..PushSettings::default()
        }
        .build()
        .unwrap();
        Fixture {
            vapid_key,
            provider,
        }
    }

    #[tokio::test]
    async fn delivers_an_encrypted_payload_with_a_vapid_signature() {
        let server = TestServer::start(|_| Reply::status(201)).await;
        let endpoint = server.url("/push/v2/gAAAAABsubscription-token");
        let subscriber = PushSubscriber::new();
        let keys = keys_of(&subscriber);
        let body = r#"{"title":"Invoice paid","body":"Thank you — €12.00 received"}"#;
        let delivery = Delivery {
            id: uuid::Uuid::now_v7(),
            to: &endpoint,
            subject: Some("Invoice paid"),
            body,
            html: None,
            push: Some(&keys),
        };
        let Fixture { provider, .. } = fixture(Some(Urgency::High));
        provider.send(&delivery).await.unwrap();

        let requests = server.requests();
        assert_eq!(requests.len(), 1);
        let request = &requests[0];
        assert_eq!(request.method, "POST");
        assert_eq!(request.path, "/push/v2/gAAAAABsubscription-token");
        assert_eq!(request.header("ttl"), Some("3600"));
        assert_eq!(request.header("content-encoding"), Some("aes128gcm"));
        assert_eq!(request.header("urgency"), Some("high"));

        // The subscriber, and only it, reads the body.
        assert_ne!(request.body, body.as_bytes());
        let plaintext = subscriber.decrypt(&request.body).unwrap();
        assert_eq!(String::from_utf8(plaintext).unwrap(), body);

        // The VAPID header: a JWT for the endpoint's origin, signed by the
        // key pair whose public half is `k`.
        let authorization = request.header("authorization").unwrap();
        let rest = authorization.strip_prefix("vapid t=").unwrap();
        let (jwt, k) = rest.split_once(", k=").unwrap();
        assert_eq!(k, provider.vapid_public_key());
        let point = b64(k);
        assert_eq!(point.len(), 65);
        assert_eq!(point[0], 4, "uncompressed");
        let decoding = jsonwebtoken::DecodingKey::from_ec_components(
            &URL_SAFE_NO_PAD.encode(&point[1..33]),
            &URL_SAFE_NO_PAD.encode(&point[33..]),
        )
        .unwrap();
        let origin = server.url("");
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
        validation.set_audience(&[origin.as_str()]);
        validation.set_required_spec_claims(&["aud", "exp", "sub"]);
        let claims = jsonwebtoken::decode::<serde_json::Value>(jwt, &decoding, &validation)
            .unwrap()
            .claims;
        assert_eq!(claims["aud"], origin.as_str());
        assert_eq!(claims["sub"], "mailto:ops@example.com");
        let exp = claims["exp"].as_u64().unwrap();
        let now = unix_now();
        assert!(
            exp > now && exp <= now + 24 * 60 * 60,
            "exp {exp}, now {now}"
        );
        // Another key does not verify it.
        let other = random_secret_key().public_key().to_encoded_point(false);
        let wrong = jsonwebtoken::DecodingKey::from_ec_components(
            &URL_SAFE_NO_PAD.encode(other.x().unwrap()),
            &URL_SAFE_NO_PAD.encode(other.y().unwrap()),
        )
        .unwrap();
        assert!(jsonwebtoken::decode::<serde_json::Value>(jwt, &wrong, &validation).is_err());

        // A second send to the same origin reuses the JWT, with a fresh encryption.
        provider.send(&delivery).await.unwrap();
        let requests = server.requests();
        assert_eq!(requests[1].header("authorization"), Some(authorization));
        assert_ne!(requests[1].body, requests[0].body);
        assert_eq!(
            subscriber.decrypt(&requests[1].body).unwrap(),
            body.as_bytes()
        );
    }

    #[tokio::test]
    async fn answers_are_classified_and_never_show_the_private_key() {
        let server = TestServer::start(|request| match request.path.as_str() {
            "/gone" => Reply::status(410).body("push subscription has unsubscribed or expired."),
            "/unknown" => Reply::status(404),
            "/busy" => Reply::status(429).header("retry-after", "60"),
            "/down" => Reply::status(502),
            "/accepted" => Reply::status(202),
            _ => Reply::status(403).body("invalid JWT"),
        })
        .await;
        let Fixture {
            provider,
            vapid_key,
        } = fixture(None);
        let subscriber = PushSubscriber::new();
        let keys = keys_of(&subscriber);
        let send = |path: &str| {
            let to = server.url(path);
            let provider = &provider;
            let keys = &keys;
            async move {
                provider
                    .send(&Delivery {
                        id: uuid::Uuid::now_v7(),
                        to: &to,
                        subject: None,
                        body: "hello",
                        html: None,
                        push: Some(keys),
                    })
                    .await
            }
        };
        let mut errors = Vec::new();
        let gone = send("/gone").await.unwrap_err();
        assert!(
            matches!(&gone, SendError::Gone(m) if m.contains("410") && m.contains("unsubscribed")),
            "{gone:?}"
        );
        let unknown = send("/unknown").await.unwrap_err();
        assert!(matches!(unknown, SendError::Gone(_)), "{unknown:?}");
        let busy = send("/busy").await.unwrap_err();
        assert!(
            matches!(&busy, SendError::Throttled { message, wait } if message.contains("retry-after: 60") && *wait == Duration::from_secs(60)),
            "{busy:?}"
        );
        let down = send("/down").await.unwrap_err();
        assert!(down.is_retryable(), "{down:?}");
        send("/accepted").await.unwrap();
        let forbidden = send("/forbidden").await.unwrap_err();
        assert!(
            matches!(&forbidden, SendError::Rejected(m) if m.contains("403")),
            "{forbidden:?}"
        );
        errors.extend([gone, unknown, busy, down, forbidden]);

        // Nothing listening.
        let closed = TestServer::closed_port_url("/push/token");
        let refused = provider
            .send(&Delivery {
                id: uuid::Uuid::now_v7(),
                to: &closed,
                subject: None,
                body: "hello",
                html: None,
                push: Some(&keys),
            })
            .await
            .unwrap_err();
        assert!(refused.is_retryable(), "{refused}");
        errors.push(refused);

        let raw_key = hex::encode(b64(&vapid_key));
        for err in &errors {
            let text = format!("{err} {err:?}");
            assert!(
                !text.contains(&vapid_key) && !text.contains(&raw_key),
                "{text}"
            );
        }
    }

    #[tokio::test]
    async fn what_cannot_be_delivered_is_rejected_without_sending() {
        let Fixture { provider, .. } = fixture(None);
        let subscriber = PushSubscriber::new();
        let keys = keys_of(&subscriber);
        let bad_key = PushKeys {
            p256dh: URL_SAFE_NO_PAD.encode([4u8; 65]),
            auth: keys.auth.clone(),
        };
        let short_auth = PushKeys {
            p256dh: keys.p256dh.clone(),
            auth: URL_SAFE_NO_PAD.encode([1u8; 8]),
        };
        let big = "x".repeat(MAX_PAYLOAD_BYTES + 1);
        let cases: [(&str, &str, Option<&PushKeys>, &str); 6] = [
            ("http://push.example.com/x", "hi", Some(&keys), "https"),
            ("https://push.example.com/x", "hi", None, "keys are missing"),
            (
                "https://push.example.com/x",
                "hi",
                Some(&bad_key),
                "keys.p256dh",
            ),
            (
                "https://push.example.com/x",
                "hi",
                Some(&short_auth),
                "keys.auth",
            ),
            ("https://push.example.com/x", &big, Some(&keys), "at most"),
            ("https://push.example.com/x", "", Some(&keys), "empty"),
        ];
        for (to, body, push, says) in cases {
            let delivery = Delivery {
                id: uuid::Uuid::now_v7(),
                to,
                subject: None,
                body,
                html: None,
                push,
            };
            let err = provider.send(&delivery).await.unwrap_err();
            assert!(
                matches!(&err, SendError::Rejected(m) if m.contains(says)),
                "{says}: {err:?}"
            );
        }
        assert_eq!(bad_key.check().unwrap_err().0, "p256dh");
        assert_eq!(short_auth.check().unwrap_err().0, "auth");
        keys.check().unwrap();
        // Padded base64 as some clients send it is read too.
        let padded = PushKeys {
            p256dh: format!("{}=", keys.p256dh),
            auth: format!("{}==", keys.auth),
        };
        padded.check().unwrap();
    }

    #[test]
    fn vapid_keys_are_read_from_base64url_or_pem_and_never_quoted() {
        let key = random_secret_key();
        let public = public_key_base64(&key);
        let pkcs8 = key.to_pkcs8_pem(p256::pkcs8::LineEnding::LF).unwrap();
        let sec1 = key.to_sec1_pem(p256::pkcs8::LineEnding::LF).unwrap();
        for text in [
            URL_SAFE_NO_PAD.encode(key.to_bytes()),
            pkcs8.to_string(),
            sec1.to_string(),
        ] {
            let settings = PushSettings {
                vapid_private_key: text.as_str().into(),
                subject: "https://example.com/contact".into(),
                ..PushSettings::default()
            };
            assert_eq!(
                settings.vapid_public_key().as_deref(),
                Some(public.as_str())
            );
            assert_eq!(settings.build().unwrap().vapid_public_key(), public);
        }

        let not_key = URL_SAFE_NO_PAD.encode([0xffu8; 32]);
        for text in [
            "",
            "definitely not a key!",
            "c2hvcnQta2V5",
            not_key.as_str(),
            "-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWJ1dC1ub3QtYS1rZXk=\n-----END PRIVATE KEY-----",
        ] {
            let problems = PushSettings {
                vapid_private_key: text.into(),
                subject: "mailto:ops@example.com".into(),
                ..PushSettings::default()
            }
            .build()
            .err()
            .unwrap();
            assert_eq!(problems.len(), 1, "{problems:?}");
            assert_eq!(problems[0].key, "push.vapid_private_key");
            if !text.is_empty() {
                assert!(!problems[0].message.contains(text), "{problems:?}");
            }
            assert!(!problems[0].message.contains("c2VjcmV0"), "{problems:?}");
        }
    }

    #[test]
    fn subject_and_ttl_are_checked() {
        let key = URL_SAFE_NO_PAD.encode(random_secret_key().to_bytes());
        for (subject, ok) in [
            ("mailto:ops@example.com", true),
            ("https://example.com/", true),
            ("", false),
            ("mailto:nobody", false),
            ("http://example.com/", false),
            ("ops@example.com", false),
        ] {
            let built = PushSettings {
                vapid_private_key: key.as_str().into(),
                subject: subject.into(),
                ..PushSettings::default()
            }
            .build();
            match built {
                Ok(_) => assert!(ok, "{subject}"),
                Err(problems) => {
                    assert!(!ok, "{subject}");
                    assert_eq!(problems[0].key, "push.subject");
                }
            }
        }
        let problems = PushSettings {
            vapid_private_key: key.as_str().into(),
            subject: "mailto:ops@example.com".into(),
            ttl: Duration::from_secs(29 * 24 * 60 * 60),
            ..PushSettings::default()
        }
        .build()
        .err()
        .unwrap();
        assert_eq!(problems[0].key, "push.ttl");
    }
}
