//! The auth service's part of the OpenAPI document: its eight routes
//! (`routes.rs`), the [`User`], [`Session`] and [`TokenPair`] they answer,
//! the bodies its parsers accept (`model.rs`) and what `/validate` says.

use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::messages::TokenPair;
use super::model::{CredentialsBody, NewUserBody, RefreshBody, Session, User, ValidateBody};
use crate::api::openapi::{self, page_of, schema_ref, Document, Fail, Op};
use crate::api::Role;

/// Why `/validate` found a token invalid.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[allow(dead_code)]
enum InvalidReason {
    Malformed,
    WrongAlgorithm,
    BadSignature,
    Expired,
    NotYetValid,
    WrongAudience,
    WrongIssuer,
    Revoked,
}

/// `/validate` of a token that verifies and whose session is active.
#[derive(Serialize, ToSchema)]
#[allow(dead_code)]
struct ValidToken {
    /// `true`.
    valid: bool,
    user_id: Uuid,
    role: Role,
    session_id: Uuid,
    #[schema(format = DateTime)]
    expires_at: String,
}

/// `/validate` of any other token.
#[derive(Serialize, ToSchema)]
#[allow(dead_code)]
struct InvalidToken {
    /// `false`.
    valid: bool,
    reason: InvalidReason,
}

/// What `/validate` answers: one of the two.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
#[allow(dead_code)]
enum Validation {
    Valid(ValidToken),
    Invalid(InvalidToken),
}

pub fn document() -> Document {
    let mut doc = openapi::document();
    openapi::schemas::<User>(&mut doc);
    openapi::schemas::<Session>(&mut doc);
    openapi::schemas::<TokenPair>(&mut doc);
    openapi::schemas::<NewUserBody>(&mut doc);
    openapi::schemas::<CredentialsBody>(&mut doc);
    openapi::schemas::<RefreshBody>(&mut doc);
    openapi::schemas::<ValidateBody>(&mut doc);
    openapi::schemas::<Validation>(&mut doc);
    let tag = "auth";
    Op::post("/api/v1/auth/register", "Register a user")
        .tag(tag)
        .public()
        .describe("Counted against the sign-up/sign-in quota (`rate_limit.auth`). 409 if the email is taken.")
        .json_body(schema_ref("NewUser"))
        .idempotent()
        .fails(&[Fail::Conflict])
        .ok("201", "The new user", schema_ref("User"))
        .add_to(&mut doc);
    Op::post("/api/v1/auth/login", "Sign in")
        .tag(tag)
        .public()
        .describe("Counted against the sign-up/sign-in quota, and per email. An unknown email and a wrong password get the same 401. Answers carry `cache-control: no-store`.")
        .json_body(schema_ref("Credentials"))
        .fails(&[Fail::Unauthorized])
        .ok("200", "An access token and a refresh token", schema_ref("TokenPair"))
        .add_to(&mut doc);
    Op::post("/api/v1/auth/refresh", "Trade a refresh token for a new pair")
        .tag(tag)
        .public()
        .describe("The presented token is spent; presenting a spent one again revokes its whole session (401).")
        .json_body(schema_ref("RefreshBody"))
        .fails(&[Fail::Unauthorized])
        .ok("200", "A new pair for the same session", schema_ref("TokenPair"))
        .add_to(&mut doc);
    Op::post("/api/v1/auth/logout", "End the current session")
        .tag(tag)
        .user()
        .no_content("The session and its tokens are ended")
        .add_to(&mut doc);
    Op::post("/api/v1/auth/validate", "Check an access token")
        .tag(tag)
        .public()
        .json_body(schema_ref("ValidateBody"))
        .ok("200", "What the token is worth", schema_ref("Validation"))
        .add_to(&mut doc);
    Op::get("/api/v1/auth/me", "The caller")
        .tag(tag)
        .user()
        .ok("200", "The caller's user", schema_ref("User"))
        .add_to(&mut doc);
    Op::get("/api/v1/auth/sessions", "List sessions")
        .tag(tag)
        .user()
        .describe("The caller's sessions (`current: true` marks the one of this token); an admin may pass `user_id`.")
        .paginated()
        .user_filter()
        .ok("200", "A page of sessions", page_of("Session"))
        .add_to(&mut doc);
    Op::delete("/api/v1/auth/sessions/{id}", "End a session")
        .tag(tag)
        .user()
        .describe("The owner or an admin; another user's session is a 404.")
        .path_uuid("id", "session")
        .no_content("The session and its tokens are ended")
        .add_to(&mut doc);
    doc
}
