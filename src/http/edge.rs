//! What every public answer carries regardless of route: security headers,
//! and CORS for configured origins (preflights answered here).

use http::header::{
    HeaderName, HeaderValue, ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS,
    ACCESS_CONTROL_ALLOW_METHODS, ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS,
    ACCESS_CONTROL_MAX_AGE, ACCESS_CONTROL_REQUEST_HEADERS, ACCESS_CONTROL_REQUEST_METHOD, ORIGIN,
    VARY,
};
use http::{HeaderMap, Method, StatusCode};

use actors::ServiceError;

use super::response;
use super::Response;
use crate::config::CorsConfig;

/// Headers on every response: no MIME sniffing, no referrer, no framing, and
/// a content security policy that allows nothing (the API serves JSON only).
pub fn secure(headers: &mut HeaderMap) {
    let fixed = [
        ("x-content-type-options", "nosniff"),
        ("referrer-policy", "no-referrer"),
        ("x-frame-options", "DENY"),
        (
            "content-security-policy",
            "default-src 'none'; frame-ancestors 'none'",
        ),
        ("cross-origin-resource-policy", "same-origin"),
    ];
    for (name, value) in fixed {
        // A page (the API docs) sets a policy of its own, which stands.
        if name == "content-security-policy" && headers.contains_key(name) {
            continue;
        }
        headers.insert(
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        );
    }
}

/// The CORS policy: nothing is allowed unless configured.
pub struct Cors {
    origins: Vec<String>,
    any_origin: bool,
    methods: Vec<Method>,
    headers: Vec<String>,
    allow_methods: HeaderValue,
    allow_headers: HeaderValue,
    expose_headers: HeaderValue,
    max_age: HeaderValue,
    credentials: bool,
}

impl Cors {
    pub fn new(config: &CorsConfig) -> Self {
        let join = |items: &[String]| {
            HeaderValue::from_str(&items.join(", ")).unwrap_or(HeaderValue::from_static(""))
        };
        Self {
            any_origin: config.allowed_origins.iter().any(|o| o == "*"),
            origins: config.allowed_origins.clone(),
            methods: config
                .allowed_methods
                .iter()
                .filter_map(|m| m.parse().ok())
                .collect(),
            headers: config
                .allowed_headers
                .iter()
                .map(|h| h.to_ascii_lowercase())
                .collect(),
            allow_methods: join(&config.allowed_methods),
            allow_headers: join(&config.allowed_headers),
            expose_headers: join(&config.exposed_headers),
            max_age: HeaderValue::from(config.max_age.as_secs()),
            credentials: config.allow_credentials,
        }
    }

    fn allowed_origin<'a>(&self, request: &'a HeaderMap) -> Option<&'a HeaderValue> {
        self.allows(request.get(ORIGIN)?)
    }

    fn allows<'a>(&self, origin: &'a HeaderValue) -> Option<&'a HeaderValue> {
        let text = origin.to_str().ok()?;
        (self.any_origin || self.origins.iter().any(|o| o == text)).then_some(origin)
    }

    /// Whether this is a CORS preflight (OPTIONS with an access-control-request-method).
    pub fn is_preflight(method: &Method, request: &HeaderMap) -> bool {
        method == Method::OPTIONS && request.contains_key(ACCESS_CONTROL_REQUEST_METHOD)
    }

    /// The method a preflight asks about.
    pub fn requested_method(request: &HeaderMap) -> Option<Method> {
        request
            .get(ACCESS_CONTROL_REQUEST_METHOD)?
            .to_str()
            .ok()?
            .parse()
            .ok()
    }

    /// Answers a preflight for a route that exists: 204 with the grants, or
    /// 403 naming what is not allowed.
    pub fn preflight(&self, request: &HeaderMap, route_methods: &[Method]) -> Response {
        let refuse = |why: String| {
            response::error(&ServiceError::Forbidden(format!(
                "CORS preflight refused: {why}"
            )))
        };
        let Some(origin) = self.allowed_origin(request) else {
            return refuse("origin not allowed".into());
        };
        let Some(method) = Self::requested_method(request) else {
            return refuse("access-control-request-method is not a method".into());
        };
        if !self.methods.contains(&method) || !route_methods.contains(&method) {
            return refuse(format!("method {method} not allowed"));
        }
        let asked = request
            .get(ACCESS_CONTROL_REQUEST_HEADERS)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if let Some(header) = asked
            .split(',')
            .map(|h| h.trim().to_ascii_lowercase())
            .find(|h| !h.is_empty() && !self.headers.contains(h))
        {
            return refuse(format!("header {header} not allowed"));
        }
        let mut answer = http::Response::new(super::Body::empty());
        *answer.status_mut() = StatusCode::NO_CONTENT;
        let headers = answer.headers_mut();
        headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        headers.insert(ACCESS_CONTROL_ALLOW_METHODS, self.allow_methods.clone());
        headers.insert(ACCESS_CONTROL_ALLOW_HEADERS, self.allow_headers.clone());
        headers.insert(ACCESS_CONTROL_MAX_AGE, self.max_age.clone());
        if self.credentials {
            headers.insert(
                ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
        headers.insert(
            VARY,
            HeaderValue::from_static(
                "origin, access-control-request-method, access-control-request-headers",
            ),
        );
        answer
    }

    /// Grants an allowed origin access to an actual response. Every answer
    /// varies by origin, so a shared cache never hands one origin's copy to another.
    pub fn decorate(&self, origin: Option<&HeaderValue>, response: &mut HeaderMap) {
        if !response.contains_key(VARY) {
            response.insert(VARY, HeaderValue::from_static("origin"));
        }
        let Some(origin) = origin.and_then(|o| self.allows(o)) else {
            return;
        };
        response.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        response.insert(ACCESS_CONTROL_EXPOSE_HEADERS, self.expose_headers.clone());
        if self.credentials {
            response.insert(
                ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
    }
}
