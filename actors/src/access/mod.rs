//! Access: what the service that signs users in and the front-end that checks
//! every request share. [`TokenKeys`] issues and verifies access tokens (and
//! makes refresh tokens); [`is_session_revoked`] reads the sessions that
//! ended before their tokens expired. One `Arc<TokenKeys>` is made at start
//! (`[tokens]`) and handed to services as a shared resource, so the keys the
//! edge verifies with are the keys tokens were signed with.

pub mod revocation;
pub mod tokens;

pub use revocation::is_session_revoked;
pub use tokens::{AccessClaims, TokenError, TokenKeys, TokenSettings};
