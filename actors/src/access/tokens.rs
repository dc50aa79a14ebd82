//! Tokens: signed access tokens (JWT) that anyone holding [`TokenKeys`] can
//! verify without asking the service that issued them, and opaque refresh tokens that
//! only the service's database can redeem.
//!
//! * **Access tokens** are JWTs signed with HS256 and nothing else: the
//!   header's `alg` is checked before anything is decoded, so `none`, the
//!   RS/ES/PS family (the classic "public key used as an HMAC secret" trick)
//!   and every other value are refused. Claims: `sub` (user id), `sid`
//!   (session id), `role`, `iss`, `aud`, `iat`, `exp`, `jti`; `iss`, `aud`
//!   and `exp` are checked, `exp` with [`LEEWAY`] for clock skew between
//!   replicas. Our tokens carry no `nbf`, but one that does (another
//!   issuer sharing the key, a token minted for later) is honoured, with
//!   the same leeway: a token is not valid before its `nbf`.
//!   [`TokenKeys`] builds its keys and validation rules once, so verifying
//!   costs one HMAC-SHA256 and a little JSON: cheap enough for the
//!   front-end to do on every request.
//! * **Refresh tokens** are 256 random bits from the OS, base64url (43
//!   characters). The database keeps only their SHA-256 ([`RefreshHash`]):
//!   a stolen database cannot be replayed as tokens, and since the tokens
//!   are uniformly random a fast unsalted hash loses nothing (there is no
//!   dictionary to try).
//! * **The secret** ([`TokenKeys::load_or_create`]): `tokens.jwt_secret` when
//!   configured (at least 32 bytes); otherwise, in development only, one
//!   generated on first run into `<data_dir>/jwt-secret` (mode 0600) and
//!   reused, so tokens survive restarts.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::api::{parse_role, role_str, Role};

/// The only algorithm accepted, and the one tokens are signed with.
pub const ALGORITHM: Algorithm = Algorithm::HS256;
/// Clock skew tolerated on `exp` and `nbf` (and on `iat` being in the future).
pub const LEEWAY: Duration = Duration::from_secs(30);
/// The shortest secret accepted: HS256's own output size (RFC 7518 §3.2).
pub const MIN_SECRET_BYTES: usize = 32;
/// The file the development secret is kept in, under the data dir.
pub const SECRET_FILE: &str = "jwt-secret";
/// Longer tokens are refused unread: ours are about 400 bytes.
const MAX_TOKEN_BYTES: usize = 4096;
/// Random bytes in a generated development secret (stored as base64url).
const GENERATED_SECRET_BYTES: usize = 48;
const REFRESH_TOKEN_BYTES: usize = 32;

/// `auth.issuer`, `auth.audience`, `auth.access_ttl`, `auth.refresh_ttl`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenSettings {
    pub issuer: String,
    pub audience: String,
    pub access_ttl: Duration,
    pub refresh_ttl: Duration,
}

impl Default for TokenSettings {
    fn default() -> Self {
        Self {
            issuer: "stageworks".to_owned(),
            audience: "stageworks-api".to_owned(),
            access_ttl: Duration::from_secs(15 * 60),
            refresh_ttl: Duration::from_secs(30 * 24 * 60 * 60),
        }
    }
}

/// Why the keys could not be set up; each message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(
        "tokens.jwt_secret must be at least {MIN_SECRET_BYTES} bytes, it has {len}; \
         generate one with `openssl rand -base64 48`"
    )]
    SecretTooShort { len: usize },
    #[error(
        "tokens.jwt_secret is required when env = \"production\" (at least {MIN_SECRET_BYTES} \
         bytes; generate one with `openssl rand -base64 48` and set it in the configuration \
         file or STAGEWORKS__AUTH__JWT_SECRET)"
    )]
    MissingInProduction,
    #[error(
        "the JWT secret in {path} is shorter than {MIN_SECRET_BYTES} bytes; delete the file \
         to have a new one generated (every issued token becomes invalid)"
    )]
    StoredSecretTooShort { path: String },
    #[error("cannot {action} the JWT secret file {path}: {source}")]
    SecretFile {
        action: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("no randomness for the JWT secret: {0}")]
    Random(String),
    #[error("invalid token settings: {0}")]
    Settings(&'static str),
}

/// Why an access token was refused. The front-end answers every one of them
/// with the same 401; the reason is for its log and for `/validate`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token is malformed")]
    Malformed,
    #[error("token uses an algorithm other than HS256")]
    WrongAlgorithm,
    #[error("token signature does not verify")]
    BadSignature,
    #[error("token has expired")]
    Expired,
    #[error("token is not valid yet (nbf)")]
    NotYetValid,
    #[error("token was issued for another audience")]
    WrongAudience,
    #[error("token was issued by another issuer")]
    WrongIssuer,
}

impl TokenError {
    /// A stable snake_case word, for logs and `/validate`'s `reason`.
    pub fn reason(self) -> &'static str {
        match self {
            TokenError::Malformed => "malformed",
            TokenError::WrongAlgorithm => "wrong_algorithm",
            TokenError::BadSignature => "bad_signature",
            TokenError::Expired => "expired",
            TokenError::NotYetValid => "not_yet_valid",
            TokenError::WrongAudience => "wrong_audience",
            TokenError::WrongIssuer => "wrong_issuer",
        }
    }

    fn from_jwt(err: &jsonwebtoken::errors::Error) -> Self {
        match err.kind() {
            ErrorKind::InvalidSignature => TokenError::BadSignature,
            ErrorKind::ExpiredSignature => TokenError::Expired,
            ErrorKind::ImmatureSignature => TokenError::NotYetValid,
            ErrorKind::InvalidAudience => TokenError::WrongAudience,
            ErrorKind::InvalidIssuer => TokenError::WrongIssuer,
            ErrorKind::InvalidAlgorithm | ErrorKind::MissingAlgorithm => TokenError::WrongAlgorithm,
            _ => TokenError::Malformed,
        }
    }
}

/// Why a token could not be made: a bug or a broken OS, never the caller.
#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    #[error("cannot sign the access token: {0}")]
    Signing(String),
    #[error("no randomness for the refresh token: {0}")]
    Random(String),
}

/// The claims of an access token, as on the wire.
#[derive(Debug, Serialize, Deserialize)]
struct WireClaims {
    sub: String,
    sid: String,
    role: String,
    iss: String,
    aud: String,
    iat: i64,
    exp: i64,
    jti: String,
}

/// What a verified access token says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessClaims {
    pub user_id: Uuid,
    pub session_id: Uuid,
    pub role: Role,
    pub issued_at: OffsetDateTime,
    pub expires_at: OffsetDateTime,
    pub jti: Uuid,
}

/// A freshly issued access token.
#[derive(Clone)]
pub struct AccessToken {
    pub token: String,
    pub expires_at: OffsetDateTime,
    pub jti: Uuid,
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessToken")
            .field("token", &"<redacted>")
            .field("expires_at", &self.expires_at)
            .field("jti", &self.jti)
            .finish()
    }
}

/// The signing and verification keys, with the rules tokens are checked by.
/// Built once at start-up and shared (`Arc<TokenKeys>`) by the auth service
/// and the front-end.
pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    /// Keys the idempotency fingerprints of bodies that hold a password.
    fingerprint: EncodingKey,
    settings: TokenSettings,
}

impl fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenKeys")
            .field("secret", &"<redacted>")
            .field("settings", &self.settings)
            .finish()
    }
}

impl TokenKeys {
    /// Keys from a secret of at least [`MIN_SECRET_BYTES`] bytes.
    pub fn new(secret: &[u8], settings: TokenSettings) -> Result<Self, KeyError> {
        if secret.len() < MIN_SECRET_BYTES {
            return Err(KeyError::SecretTooShort { len: secret.len() });
        }
        if settings.issuer.is_empty() {
            return Err(KeyError::Settings("auth.issuer must not be empty"));
        }
        if settings.audience.is_empty() {
            return Err(KeyError::Settings("auth.audience must not be empty"));
        }
        if settings.access_ttl < Duration::from_secs(1) {
            return Err(KeyError::Settings("auth.access_ttl must be at least 1s"));
        }
        if settings.refresh_ttl < settings.access_ttl {
            return Err(KeyError::Settings(
                "auth.refresh_ttl must not be shorter than auth.access_ttl",
            ));
        }
        let mut validation = Validation::new(ALGORITHM);
        validation.algorithms = vec![ALGORITHM];
        validation.leeway = LEEWAY.as_secs();
        validation.validate_exp = true;
        // Only when present (`nbf` is not among the required claims); a
        // present but malformed `nbf` is refused by the library.
        validation.validate_nbf = true;
        validation.set_audience(&[&settings.audience]);
        validation.set_issuer(&[&settings.issuer]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        // A key of its own for fingerprints, so nothing but a JWT is ever
        // signed with the JWT key.
        let mut derived = Sha256::new();
        derived.update(b"stageworks/auth/idempotency-fingerprint\0");
        derived.update(secret);
        Ok(Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            fingerprint: EncodingKey::from_secret(&derived.finalize()),
            validation,
            settings,
        })
    }

    /// The keys the process runs with:
    ///
    /// * a configured secret (`tokens.jwt_secret`, not empty) is used as its
    ///   UTF-8 bytes, and must be at least 32 of them;
    /// * otherwise, in production, start-up stops with
    ///   [`KeyError::MissingInProduction`];
    /// * otherwise (development) the secret kept in `<data_dir>/jwt-secret`
    ///   is used, generated on first run.
    pub fn load_or_create(
        data_dir: &Path,
        configured_secret: Option<&str>,
        production: bool,
        settings: TokenSettings,
    ) -> Result<Self, KeyError> {
        match configured_secret.filter(|s| !s.is_empty()) {
            Some(secret) => Self::new(secret.as_bytes(), settings),
            None if production => Err(KeyError::MissingInProduction),
            None => {
                let secret = load_or_create_secret_file(data_dir)?;
                Self::new(secret.as_bytes(), settings)
            }
        }
    }

    pub fn settings(&self) -> &TokenSettings {
        &self.settings
    }

    pub fn access_ttl(&self) -> Duration {
        self.settings.access_ttl
    }

    pub fn refresh_ttl(&self) -> Duration {
        self.settings.refresh_ttl
    }

    /// Signs an access token for this user, role and session.
    pub fn issue_access(
        &self,
        user_id: Uuid,
        role: Role,
        session_id: Uuid,
    ) -> Result<AccessToken, IssueError> {
        self.issue_access_at(user_id, role, session_id, OffsetDateTime::now_utc())
    }

    fn issue_access_at(
        &self,
        user_id: Uuid,
        role: Role,
        session_id: Uuid,
        now: OffsetDateTime,
    ) -> Result<AccessToken, IssueError> {
        let jti = Uuid::now_v7();
        let iat = now.unix_timestamp();
        let ttl = i64::try_from(self.settings.access_ttl.as_secs()).unwrap_or(i64::MAX);
        let exp = iat.saturating_add(ttl);
        let claims = WireClaims {
            sub: user_id.to_string(),
            sid: session_id.to_string(),
            role: role_str(role).to_owned(),
            iss: self.settings.issuer.clone(),
            aud: self.settings.audience.clone(),
            iat,
            exp,
            jti: jti.to_string(),
        };
        let token = jsonwebtoken::encode(&Header::new(ALGORITHM), &claims, &self.encoding)
            .map_err(|e| IssueError::Signing(e.to_string()))?;
        let expires_at = OffsetDateTime::from_unix_timestamp(exp)
            .map_err(|e| IssueError::Signing(e.to_string()))?;
        Ok(AccessToken {
            token,
            expires_at,
            jti,
        })
    }

    /// Verifies an access token: algorithm, signature, `iss`, `aud`, `exp`
    /// and `nbf` when present (both with [`LEEWAY`]), and the shape of every claim. Revocation is not
    /// checked here (see [`super::revocation`]).
    pub fn verify_access(&self, token: &str) -> Result<AccessClaims, TokenError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::Malformed);
        }
        check_header(token)?;
        let data = jsonwebtoken::decode::<WireClaims>(token, &self.decoding, &self.validation)
            .map_err(|e| TokenError::from_jwt(&e))?;
        claims_from_wire(data.claims, OffsetDateTime::now_utc())
    }

    /// A keyed fingerprint of a request body (base64url HMAC-SHA256), for
    /// idempotency keys of bodies that carry a password: a plain SHA-256 of
    /// `{email, password, name}` kept in the database would be a fast
    /// offline guess target next to the slow argon2 hash.
    pub fn fingerprint(&self, body: &[u8]) -> Result<String, IssueError> {
        jsonwebtoken::crypto::sign(body, &self.fingerprint, ALGORITHM)
            .map_err(|e| IssueError::Signing(e.to_string()))
    }
}

/// Refuses any token whose header is not a JSON object with `alg: "HS256"`
/// before the library sees it (so that `none` and other algorithms are
/// reported as such, not as a parse error), and any token with `crit`
/// extensions, which RFC 7515 §4.1.11 says must be understood or refused.
fn check_header(token: &str) -> Result<(), TokenError> {
    let mut parts = token.split('.');
    let (Some(header), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed);
    };
    let bytes = URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| TokenError::Malformed)?;
    let header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&bytes).map_err(|_| TokenError::Malformed)?;
    if header.contains_key("crit") {
        return Err(TokenError::Malformed);
    }
    match header.get("alg").and_then(serde_json::Value::as_str) {
        Some("HS256") => Ok(()),
        Some(_) => Err(TokenError::WrongAlgorithm),
        None => Err(TokenError::Malformed),
    }
}

fn claims_from_wire(wire: WireClaims, now: OffsetDateTime) -> Result<AccessClaims, TokenError> {
    let uuid = |s: &str| Uuid::parse_str(s).map_err(|_| TokenError::Malformed);
    let time = |t: i64| OffsetDateTime::from_unix_timestamp(t).map_err(|_| TokenError::Malformed);
    let leeway = i64::try_from(LEEWAY.as_secs()).unwrap_or(0);
    // A token from the future was not made by a replica with a sane clock.
    if wire.iat > now.unix_timestamp().saturating_add(leeway) || wire.exp <= wire.iat {
        return Err(TokenError::Malformed);
    }
    Ok(AccessClaims {
        user_id: uuid(&wire.sub)?,
        session_id: uuid(&wire.sid)?,
        role: parse_role(&wire.role).ok_or(TokenError::Malformed)?,
        issued_at: time(wire.iat)?,
        expires_at: time(wire.exp)?,
        jti: uuid(&wire.jti)?,
    })
}

/// Reads `<data_dir>/jwt-secret`, creating it first if it does not exist.
///
/// The new secret is written to a temporary file created with mode 0600 (the
/// mode is set by `open`, so there is no moment when it is readable by
/// others), synced, then hard-linked into place: a link fails if the name
/// exists, so two processes starting at once agree on one secret, and a
/// crash never leaves a half-written `jwt-secret` behind.
fn load_or_create_secret_file(data_dir: &Path) -> Result<String, KeyError> {
    let path = data_dir.join(SECRET_FILE);
    let file_error = |action: &'static str, path: &Path| {
        let path = path.display().to_string();
        move |source| KeyError::SecretFile {
            action,
            path,
            source,
        }
    };
    match std::fs::read_to_string(&path) {
        Ok(secret) => return checked_stored_secret(&path, secret),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(file_error("read", &path)(e)),
    }
    std::fs::create_dir_all(data_dir).map_err(file_error("create the directory of", &path))?;
    let mut random = [0u8; GENERATED_SECRET_BYTES];
    getrandom::fill(&mut random).map_err(|e| KeyError::Random(e.to_string()))?;
    let secret = URL_SAFE_NO_PAD.encode(random);
    let temp = data_dir.join(format!(".{SECRET_FILE}.{}.tmp", Uuid::now_v7().simple()));
    let written = write_private(&temp, &secret).map_err(file_error("write", &temp));
    let linked = written.and_then(|()| match std::fs::hard_link(&temp, &path) {
        Ok(()) => Ok(true),
        // Another process got there first: use its secret.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(file_error("create", &path)(e)),
    });
    // The temporary name is never needed again, whatever happened.
    let _ = std::fs::remove_file(&temp);
    if linked? {
        sync_dir(data_dir);
        tracing::info!(path = %path.display(), "generated a JWT secret for development");
        Ok(secret)
    } else {
        let secret = std::fs::read_to_string(&path).map_err(file_error("read", &path))?;
        checked_stored_secret(&path, secret)
    }
}

fn checked_stored_secret(path: &Path, secret: String) -> Result<String, KeyError> {
    warn_if_readable_by_others(path);
    let secret = secret.trim().to_owned();
    if secret.len() < MIN_SECRET_BYTES {
        return Err(KeyError::StoredSecretTooShort {
            path: path.display().to_string(),
        });
    }
    Ok(secret)
}

#[cfg(unix)]
fn write_private(path: &PathBuf, secret: &str) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(secret.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()
}

#[cfg(not(unix))]
fn write_private(path: &PathBuf, secret: &str) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)?;
    file.write_all(secret.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()
}

/// Makes the new directory entry durable; best effort (not every platform or
/// file system can sync a directory).
fn sync_dir(dir: &Path) {
    if let Ok(dir) = std::fs::File::open(dir) {
        let _ = dir.sync_all();
    }
}

#[cfg(unix)]
fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path) {
        let mode = meta.permissions().mode();
        if mode & 0o077 != 0 {
            tracing::warn!(
                path = %path.display(),
                mode = format!("{:o}", mode & 0o777),
                "the JWT secret file is accessible to other users; chmod 600 it"
            );
        }
    }
}

#[cfg(not(unix))]
fn warn_if_readable_by_others(_path: &Path) {}

/// An opaque refresh token as handed to the client. Its text never appears
/// in `Debug` output.
#[derive(Clone, PartialEq, Eq)]
pub struct RefreshToken(String);

impl RefreshToken {
    /// 256 fresh bits from the OS.
    pub fn generate() -> Result<Self, IssueError> {
        let mut bytes = [0u8; REFRESH_TOKEN_BYTES];
        getrandom::fill(&mut bytes).map_err(|e| IssueError::Random(e.to_string()))?;
        Ok(Self(URL_SAFE_NO_PAD.encode(bytes)))
    }

    /// A token as presented: `None` unless it has the shape of one we issue
    /// (so garbage is refused without a database round trip).
    pub fn parse(value: &str) -> Option<Self> {
        let decoded = URL_SAFE_NO_PAD.decode(value).ok()?;
        (decoded.len() == REFRESH_TOKEN_BYTES).then(|| Self(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// What the database keeps.
    pub fn hash(&self) -> RefreshHash {
        RefreshHash(hex::encode(Sha256::digest(self.0.as_bytes())))
    }
}

impl fmt::Debug for RefreshToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RefreshToken(<redacted>)")
    }
}

/// The SHA-256 of a refresh token, hex: how the database knows it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RefreshHash(String);

impl RefreshHash {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef-test-secret";

    fn keys() -> TokenKeys {
        TokenKeys::new(SECRET, TokenSettings::default()).expect("valid keys")
    }

    fn b64(value: &serde_json::Value) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).expect("json"))
    }

    fn parts(token: &str) -> Vec<String> {
        token.split('.').map(str::to_owned).collect()
    }

    fn payload(token: &str) -> serde_json::Value {
        let p = parts(token);
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(&p[1]).expect("base64")).expect("json")
    }

    /// Signs `claims` with HS256 under `secret`, bypassing [`TokenKeys`].
    fn sign(header: &serde_json::Value, claims: &serde_json::Value, secret: &[u8]) -> String {
        let message = format!("{}.{}", b64(header), b64(claims));
        let signature = jsonwebtoken::crypto::sign(
            message.as_bytes(),
            &EncodingKey::from_secret(secret),
            Algorithm::HS256,
        )
        .expect("signs");
        format!("{message}.{signature}")
    }

    fn valid_claims() -> serde_json::Value {
        let now = OffsetDateTime::now_utc().unix_timestamp();
        serde_json::json!({
            "sub": Uuid::now_v7(), "sid": Uuid::now_v7(), "role": "user",
            "iss": "stageworks", "aud": "stageworks-api",
            "iat": now, "exp": now + 900, "jti": Uuid::now_v7(),
        })
    }

    fn hs256() -> serde_json::Value {
        serde_json::json!({"alg": "HS256", "typ": "JWT"})
    }

    #[test]
    fn issued_tokens_verify_with_every_claim() {
        let keys = keys();
        let (user, session) = (Uuid::now_v7(), Uuid::now_v7());
        let token = keys
            .issue_access(user, Role::Admin, session)
            .expect("issues");
        let claims = keys.verify_access(&token.token).expect("verifies");
        assert_eq!(claims.user_id, user);
        assert_eq!(claims.session_id, session);
        assert_eq!(claims.role, Role::Admin);
        assert_eq!(claims.jti, token.jti);
        assert_eq!(claims.expires_at, token.expires_at);
        assert_eq!(
            claims.expires_at - claims.issued_at,
            time::Duration::minutes(15)
        );

        let wire = payload(&token.token);
        let mut names: Vec<_> = wire.as_object().expect("object").keys().cloned().collect();
        names.sort();
        assert_eq!(
            names,
            ["aud", "exp", "iat", "iss", "jti", "role", "sid", "sub"]
        );
        let header: serde_json::Value = serde_json::from_slice(
            &URL_SAFE_NO_PAD
                .decode(&parts(&token.token)[0])
                .expect("b64"),
        )
        .expect("json");
        assert_eq!(header["alg"], "HS256");
        assert!(!format!("{token:?}").contains(&token.token));
    }

    #[test]
    fn a_hand_signed_token_with_valid_claims_verifies() {
        let token = sign(&hs256(), &valid_claims(), SECRET);
        assert!(keys().verify_access(&token).is_ok());
    }

    #[test]
    fn alg_none_is_refused() {
        for alg in ["none", "None", "NONE"] {
            let header = serde_json::json!({"alg": alg, "typ": "JWT"});
            let token = format!("{}.{}.", b64(&header), b64(&valid_claims()));
            assert_eq!(
                keys().verify_access(&token),
                Err(TokenError::WrongAlgorithm)
            );
            // Even with a signature attached.
            let signed = format!("{}.{}.c2ln", b64(&header), b64(&valid_claims()));
            assert_eq!(
                keys().verify_access(&signed),
                Err(TokenError::WrongAlgorithm)
            );
        }
    }

    #[test]
    fn other_algorithms_are_refused() {
        for alg in [
            "HS384", "HS512", "RS256", "ES256", "PS256", "EdDSA", "hs256",
        ] {
            let header = serde_json::json!({"alg": alg});
            let token = sign(&header, &valid_claims(), SECRET);
            assert_eq!(
                keys().verify_access(&token),
                Err(TokenError::WrongAlgorithm),
                "{alg}"
            );
        }
        let no_alg = sign(&serde_json::json!({"typ": "JWT"}), &valid_claims(), SECRET);
        assert_eq!(keys().verify_access(&no_alg), Err(TokenError::Malformed));
    }

    #[test]
    fn another_key_is_a_bad_signature() {
        let other = TokenKeys::new(&[7u8; 32], TokenSettings::default()).expect("valid keys");
        let token = other
            .issue_access(Uuid::now_v7(), Role::User, Uuid::now_v7())
            .expect("issues");
        assert_eq!(
            keys().verify_access(&token.token),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn a_tampered_payload_is_a_bad_signature() {
        let keys = keys();
        let token = keys
            .issue_access(Uuid::now_v7(), Role::User, Uuid::now_v7())
            .expect("issues");
        let mut claims = payload(&token.token);
        claims["role"] = "admin".into();
        let p = parts(&token.token);
        let tampered = format!("{}.{}.{}", p[0], b64(&claims), p[2]);
        assert_eq!(keys.verify_access(&tampered), Err(TokenError::BadSignature));
        let stripped = format!("{}.{}.", p[0], p[1]);
        assert!(keys.verify_access(&stripped).is_err());
    }

    #[test]
    fn expired_tokens_are_refused_after_the_leeway() {
        let keys = keys();
        let now = OffsetDateTime::now_utc();
        let old = keys
            .issue_access_at(
                Uuid::now_v7(),
                Role::User,
                Uuid::now_v7(),
                now - time::Duration::minutes(16),
            )
            .expect("issues");
        assert_eq!(keys.verify_access(&old.token), Err(TokenError::Expired));
        // Expired 10 s ago: within the 30 s leeway.
        let recent = keys
            .issue_access_at(
                Uuid::now_v7(),
                Role::User,
                Uuid::now_v7(),
                now - time::Duration::seconds(910),
            )
            .expect("issues");
        assert!(keys.verify_access(&recent.token).is_ok());
    }

    #[test]
    fn a_token_is_not_valid_before_its_nbf_give_or_take_the_leeway() {
        let keys = keys();
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let with_nbf = |nbf: serde_json::Value| {
            let mut claims = valid_claims();
            claims["nbf"] = nbf;
            sign(&hs256(), &claims, SECRET)
        };
        assert_eq!(
            keys.verify_access(&with_nbf((now + 120).into())),
            Err(TokenError::NotYetValid)
        );
        // 10 s ahead: within the 30 s leeway, like `exp`.
        assert!(keys.verify_access(&with_nbf((now + 10).into())).is_ok());
        assert!(keys.verify_access(&with_nbf((now - 60).into())).is_ok());
        assert_eq!(
            keys.verify_access(&with_nbf("soon".into())),
            Err(TokenError::Malformed)
        );
        assert_eq!(TokenError::NotYetValid.reason(), "not_yet_valid");
    }

    #[test]
    fn wrong_audience_and_issuer_are_refused() {
        let mut claims = valid_claims();
        claims["aud"] = "someone-else".into();
        assert_eq!(
            keys().verify_access(&sign(&hs256(), &claims, SECRET)),
            Err(TokenError::WrongAudience)
        );
        let mut claims = valid_claims();
        claims["iss"] = "evil".into();
        assert_eq!(
            keys().verify_access(&sign(&hs256(), &claims, SECRET)),
            Err(TokenError::WrongIssuer)
        );
    }

    #[test]
    fn malformed_tokens_and_claims_are_refused() {
        let keys = keys();
        for token in ["", "abc", "a.b", "a.b.c", "a.b.c.d", &"x".repeat(5000)] {
            assert_eq!(
                keys.verify_access(token),
                Err(TokenError::Malformed),
                "{token:.20}"
            );
        }
        for (claim, value) in [
            ("sub", serde_json::json!("not-a-uuid")),
            ("sid", serde_json::json!(7)),
            ("role", serde_json::json!("root")),
            ("jti", serde_json::json!(null)),
            (
                "iat",
                serde_json::json!(OffsetDateTime::now_utc().unix_timestamp() + 3600),
            ),
        ] {
            let mut claims = valid_claims();
            claims[claim] = value;
            assert_eq!(
                keys.verify_access(&sign(&hs256(), &claims, SECRET)),
                Err(TokenError::Malformed),
                "{claim}"
            );
        }
        let mut claims = valid_claims();
        claims.as_object_mut().expect("object").remove("exp");
        assert_eq!(
            keys.verify_access(&sign(&hs256(), &claims, SECRET)),
            Err(TokenError::Malformed)
        );
        let crit = serde_json::json!({"alg": "HS256", "crit": ["b64"], "b64": false});
        assert_eq!(
            keys.verify_access(&sign(&crit, &valid_claims(), SECRET)),
            Err(TokenError::Malformed)
        );
    }

    #[test]
    fn short_secrets_and_bad_settings_are_refused() {
        assert!(matches!(
            TokenKeys::new(&[1u8; 31], TokenSettings::default()),
            Err(KeyError::SecretTooShort { len: 31 })
        ));
        let settings = TokenSettings {
            access_ttl: Duration::from_secs(3600),
            refresh_ttl: Duration::from_secs(60),
            ..TokenSettings::default()
        };
        assert!(matches!(
            TokenKeys::new(SECRET, settings),
            Err(KeyError::Settings(_))
        ));
        assert!(!format!("{:?}", keys()).contains("0123456789"));
    }

    #[test]
    fn refresh_tokens_are_256_random_bits_stored_as_sha256() {
        let a = RefreshToken::generate().expect("random");
        let b = RefreshToken::generate().expect("random");
        assert_ne!(a, b);
        assert_eq!(a.as_str().len(), 43);
        assert_eq!(RefreshToken::parse(a.as_str()), Some(a.clone()));
        let hash = a.hash();
        assert_eq!(hash.as_str().len(), 64);
        assert_eq!(
            hash,
            RefreshToken::parse(a.as_str()).expect("parses").hash()
        );
        assert_ne!(hash, b.hash());
        assert_eq!(
            hash.as_str(),
            hex::encode(Sha256::digest(a.as_str().as_bytes()))
        );
        assert!(!format!("{a:?}").contains(a.as_str()));
        for bad in [
            "",
            "short",
            &"A".repeat(44),
            &format!("{}=", a.as_str()),
            "a+b/",
        ] {
            assert_eq!(RefreshToken::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn fingerprints_are_keyed() {
        let a = keys().fingerprint(b"{}").expect("signs");
        let other = TokenKeys::new(&[9u8; 40], TokenSettings::default()).expect("keys");
        assert_ne!(a, other.fingerprint(b"{}").expect("signs"));
        assert_eq!(a, keys().fingerprint(b"{}").expect("signs"));
        assert_ne!(a, keys().fingerprint(b"{ }").expect("signs"));
    }

    #[test]
    fn a_configured_secret_wins_and_must_be_long_enough() {
        let dir = tempfile::tempdir().expect("temp dir");
        let long = "s".repeat(32);
        assert!(
            TokenKeys::load_or_create(dir.path(), Some(&long), true, TokenSettings::default())
                .is_ok()
        );
        assert!(!dir.path().join(SECRET_FILE).exists());
        assert!(matches!(
            TokenKeys::load_or_create(dir.path(), Some("short"), false, TokenSettings::default()),
            Err(KeyError::SecretTooShort { len: 5 })
        ));
    }

    #[test]
    fn production_needs_a_configured_secret() {
        let dir = tempfile::tempdir().expect("temp dir");
        for secret in [None, Some("")] {
            let err = TokenKeys::load_or_create(dir.path(), secret, true, TokenSettings::default())
                .expect_err("refused");
            assert!(matches!(err, KeyError::MissingInProduction));
            assert!(err.to_string().contains("tokens.jwt_secret"));
        }
        assert!(!dir.path().join(SECRET_FILE).exists());
        let short =
            TokenKeys::load_or_create(dir.path(), Some("x"), true, TokenSettings::default());
        assert!(matches!(short, Err(KeyError::SecretTooShort { .. })));
    }

    #[cfg(unix)]
    #[test]
    fn the_development_secret_is_created_0600_and_reused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("temp dir");
        let data = dir.path().join("data");
        let first = TokenKeys::load_or_create(&data, None, false, TokenSettings::default())
            .expect("creates");
        let path = data.join(SECRET_FILE);
        let mode = std::fs::metadata(&path)
            .expect("exists")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let stored = std::fs::read_to_string(&path).expect("reads");
        assert!(stored.trim().len() >= 64);
        // No temporary file is left behind.
        assert_eq!(std::fs::read_dir(&data).expect("lists").count(), 1);

        let token = first
            .issue_access(Uuid::now_v7(), Role::User, Uuid::now_v7())
            .expect("issues");
        let second = TokenKeys::load_or_create(&data, None, false, TokenSettings::default())
            .expect("reuses");
        assert!(second.verify_access(&token.token).is_ok());
        assert_eq!(std::fs::read_to_string(&path).expect("reads"), stored);
    }

    #[test]
    fn a_truncated_secret_file_is_an_error_that_says_what_to_do() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join(SECRET_FILE), "short\n").expect("writes");
        let err = TokenKeys::load_or_create(dir.path(), None, false, TokenSettings::default())
            .expect_err("refused");
        assert!(matches!(err, KeyError::StoredSecretTooShort { .. }));
        assert!(err.to_string().contains("delete the file"));
    }

    #[test]
    fn concurrent_first_starts_agree_on_one_secret() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().to_owned();
        let secrets: Vec<String> = (0..8)
            .map(|_| {
                let path = path.clone();
                std::thread::spawn(move || load_or_create_secret_file(&path).expect("secret"))
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|t| t.join().expect("thread"))
            .collect();
        assert!(secrets.windows(2).all(|w| w[0] == w[1]));
    }
}
