//! Building responses: JSON bodies, the error shape of API.md with its headers
//! (`retry-after`, `allow`), and headers every response carries.

use bytes::Bytes;
use http::header::{HeaderValue, ALLOW, CONTENT_TYPE, RETRY_AFTER};
use http::StatusCode;

use actors::api::ApiResponse;
use actors::ServiceError;

use super::{Body, Response};

const JSON: HeaderValue = HeaderValue::from_static("application/json");

pub fn json(status: StatusCode, body: impl Into<Bytes>) -> Response {
    let mut response = http::Response::new(Body::full(body));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, JSON);
    response
}

pub fn from_api(api: ApiResponse) -> Response {
    let mut response = match api.stream {
        Some(stream) => {
            let content_type = stream.content_type.clone();
            let mut r = http::Response::new(Body::Stream(stream));
            *r.status_mut() = api.status;
            r.headers_mut().insert(CONTENT_TYPE, content_type);
            r
        }
        None if api.body.is_empty() => {
            let mut r = http::Response::new(Body::empty());
            *r.status_mut() = api.status;
            r
        }
        None => json(api.status, api.body),
    };
    for (name, value) in api.headers {
        response.headers_mut().insert(name, value);
    }
    response
}

pub fn error(err: &ServiceError) -> Response {
    let mut response = json(err.status(), err.to_body().to_string());
    if let Some(after) = err.retry_after() {
        // Whole seconds, rounded up, at least one: "0" would invite a retry storm.
        let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
        response
            .headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from(secs.max(1)));
    }
    if let ServiceError::RateLimited {
        retry_after,
        limit,
        reset_after,
    } = err
    {
        super::rate_limit::refusal_headers(
            response.headers_mut(),
            *limit,
            *retry_after,
            *reset_after,
        );
    }
    if let ServiceError::MethodNotAllowed { allow } = err {
        let list = allow
            .iter()
            .map(|m| m.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        if let Ok(value) = HeaderValue::from_str(&list) {
            response.headers_mut().insert(ALLOW, value);
        }
    }
    response
}
