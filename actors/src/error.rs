//! [`ServiceError`]: the one error type services reply with. Its variants are
//! the error codes of the HTTP contract (API.md), so the front-end maps them
//! one to one and every 4xx says what was wrong.

use std::time::Duration;

use serde::Serialize;
use supervision::CallError;

/// One field at fault in a 422.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServiceError {
    /// Not JSON, wrong content type.
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("method not allowed")]
    MethodNotAllowed { allow: Vec<http::Method> },
    #[error("{0}")]
    Conflict(String),
    #[error("request body is larger than {limit} bytes")]
    PayloadTooLarge { limit: u64 },
    /// The request target is longer than the front-end (or hyper) reads.
    #[error("{0}")]
    UriTooLong(String),
    /// Too many header fields, or too many bytes of them.
    #[error("{0}")]
    HeadersTooLarge(String),
    /// The client stopped sending its request (its body, so far) before it
    /// was whole: its fault, unlike `Timeout`, which is ours.
    #[error("{0}")]
    RequestTimeout(String),
    /// Fields wrong; the message is the first field's.
    #[error("{}", validation_message(.0))]
    Validation(Vec<FieldError>),
    #[error("too many requests, try again in {} s", .retry_after.as_secs().max(1))]
    RateLimited {
        retry_after: Duration,
        /// The quota (requests per period) that was exhausted.
        limit: u32,
        /// Until the quota is whole again.
        reset_after: Duration,
    },
    /// A bug or a broken dependency: the detail goes to the logs, never to the client.
    #[error("internal error: {0}")]
    Internal(String),
    #[error("{message}")]
    Unavailable {
        message: String,
        retry_after: Duration,
    },
    /// A dependency the service cannot work without is unreachable or
    /// restarting (its database): 503 with retry-after to the client, and
    /// the worker's failure, so that an outage opens the circuit and the
    /// next requests are refused at once. `detail` goes to the logs only.
    #[error("the {service} service's database is unavailable, try again shortly")]
    DependencyDown {
        service: &'static str,
        detail: String,
        retry_after: Duration,
    },
    #[error("{0}")]
    Timeout(String),
}

fn validation_message(errors: &[FieldError]) -> String {
    match errors.first() {
        Some(e) => format!("{} {}", e.field, e.message),
        None => "invalid request".to_owned(),
    }
}

impl ServiceError {
    pub fn validation(field: impl Into<String>, message: impl Into<String>) -> Self {
        ServiceError::Validation(vec![FieldError::new(field, message)])
    }

    pub fn internal(err: impl std::fmt::Display) -> Self {
        ServiceError::Internal(err.to_string())
    }

    pub fn status(&self) -> http::StatusCode {
        use http::StatusCode as S;
        match self {
            ServiceError::BadRequest(_) => S::BAD_REQUEST,
            ServiceError::Unauthenticated(_) => S::UNAUTHORIZED,
            ServiceError::Forbidden(_) => S::FORBIDDEN,
            ServiceError::NotFound(_) => S::NOT_FOUND,
            ServiceError::MethodNotAllowed { .. } => S::METHOD_NOT_ALLOWED,
            ServiceError::Conflict(_) => S::CONFLICT,
            ServiceError::PayloadTooLarge { .. } => S::PAYLOAD_TOO_LARGE,
            ServiceError::UriTooLong(_) => S::URI_TOO_LONG,
            ServiceError::HeadersTooLarge(_) => S::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ServiceError::RequestTimeout(_) => S::REQUEST_TIMEOUT,
            ServiceError::Validation(_) => S::UNPROCESSABLE_ENTITY,
            ServiceError::RateLimited { .. } => S::TOO_MANY_REQUESTS,
            ServiceError::Internal(_) => S::INTERNAL_SERVER_ERROR,
            ServiceError::Unavailable { .. } | ServiceError::DependencyDown { .. } => {
                S::SERVICE_UNAVAILABLE
            }
            ServiceError::Timeout(_) => S::GATEWAY_TIMEOUT,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ServiceError::BadRequest(_) => "BAD_REQUEST",
            ServiceError::Unauthenticated(_) => "UNAUTHENTICATED",
            ServiceError::Forbidden(_) => "FORBIDDEN",
            ServiceError::NotFound(_) => "NOT_FOUND",
            ServiceError::MethodNotAllowed { .. } => "METHOD_NOT_ALLOWED",
            ServiceError::Conflict(_) => "CONFLICT",
            ServiceError::PayloadTooLarge { .. } => "PAYLOAD_TOO_LARGE",
            ServiceError::UriTooLong(_) => "URI_TOO_LONG",
            ServiceError::HeadersTooLarge(_) => "HEADERS_TOO_LARGE",
            ServiceError::RequestTimeout(_) => "REQUEST_TIMEOUT",
            ServiceError::Validation(_) => "VALIDATION_ERROR",
            ServiceError::RateLimited { .. } => "RATE_LIMITED",
            ServiceError::Internal(_) => "INTERNAL",
            ServiceError::Unavailable { .. } | ServiceError::DependencyDown { .. } => {
                "SERVICE_UNAVAILABLE"
            }
            ServiceError::Timeout(_) => "TIMEOUT",
        }
    }

    /// What makes this answer the worker's failure too (for the supervisor):
    /// a bug or a broken dependency, never the client's fault or load.
    /// A dependency down is told to the supervisor as such
    /// ([`supervision::DependencyDown`]), which refuses the service's next
    /// calls at once until the database answers again.
    pub fn failure(&self) -> Option<supervision::BoxError> {
        match self {
            ServiceError::Internal(detail) => Some(detail.clone().into()),
            ServiceError::DependencyDown {
                service, detail, ..
            } => Some(Box::new(supervision::DependencyDown {
                dependency: format!("the {service} database"),
                detail: detail.clone(),
            })),
            _ => None,
        }
    }

    /// A store failure as an answer: 503 when the storage refuses writes
    /// (disk full, read-only: not a failure, reads go on), 503 when the
    /// database is unreachable or restarting
    /// ([`crate::storage::StoreError::is_unavailable`]), 500 otherwise; both
    /// of the last are the worker's failure.
    pub fn from_store(service: &'static str, err: crate::storage::StoreError) -> Self {
        if err.is_write_refused() {
            tracing::error!(error = %err, service, "storage refuses writes (disk full or read-only)");
            return ServiceError::Unavailable {
                message: format!(
                    "the {service} service cannot write now: its storage is full or read-only"
                ),
                retry_after: Duration::from_secs(5),
            };
        }
        if err.is_unavailable() {
            tracing::warn!(error = %err, service, "database unavailable");
            ServiceError::DependencyDown {
                service,
                detail: err.to_string(),
                retry_after: Duration::from_secs(1),
            }
        } else {
            tracing::error!(error = %err, service, "store failed");
            ServiceError::internal(err)
        }
    }

    /// The message clients see: internals are never shown.
    pub fn public_message(&self) -> String {
        match self {
            ServiceError::Internal(_) => "internal error".to_owned(),
            other => other.to_string(),
        }
    }

    /// How long the client should wait, for the `retry-after` header.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ServiceError::RateLimited { retry_after, .. }
            | ServiceError::Unavailable { retry_after, .. }
            | ServiceError::DependencyDown { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }

    /// The error shape of API.md.
    pub fn to_body(&self) -> serde_json::Value {
        let mut error = serde_json::json!({
            "message": self.public_message(),
            "code": self.code(),
        });
        if let ServiceError::Validation(errors) = self {
            error["errors"] = serde_json::json!(errors);
        }
        serde_json::json!({"status": "error", "error": error})
    }
}

impl From<CallError> for ServiceError {
    fn from(err: CallError) -> Self {
        match err {
            CallError::CircuitOpen {
                service,
                retry_after,
            } => ServiceError::Unavailable {
                message: format!("the {service} service is unavailable, try again later"),
                retry_after,
            },
            CallError::Unavailable {
                service,
                retry_after,
            } => ServiceError::Unavailable {
                message: format!("the {service} service is restarting, try again shortly"),
                retry_after,
            },
            CallError::DependencyDown {
                service,
                retry_after,
            } => ServiceError::Unavailable {
                message: format!(
                    "the {service} service's database is unavailable, try again shortly"
                ),
                retry_after,
            },
            CallError::Shed {
                service,
                retry_after,
            } => ServiceError::Unavailable {
                message: format!("the {service} service is at capacity, try again shortly"),
                retry_after,
            },
            CallError::Timeout { service, timeout } => ServiceError::Timeout(format!(
                "the {service} service did not answer within {} ms",
                timeout.as_millis()
            )),
            crashed @ CallError::Crashed { .. } => ServiceError::Internal(crashed.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_errors_name_the_field() {
        let err = ServiceError::validation("amount", "must be greater than 0");
        assert_eq!(err.status(), http::StatusCode::UNPROCESSABLE_ENTITY);
        let body = err.to_body();
        assert_eq!(body["error"]["message"], "amount must be greater than 0");
        assert_eq!(body["error"]["code"], "VALIDATION_ERROR");
        assert_eq!(body["error"]["errors"][0]["field"], "amount");
    }

    #[test]
    fn internal_details_stay_out_of_the_body() {
        let err = ServiceError::internal("disk I/O error at /secret/path");
        let body = err.to_body().to_string();
        assert!(!body.contains("secret"), "{body}");
        assert!(body.contains("INTERNAL"));
    }
}
