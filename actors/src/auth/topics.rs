//! The topics auth publishes (API.md, Events), each written to its outbox in
//! the transaction of the change it announces.

use crate::events::Topic;

/// A user registered (data: the user as the API shows it, never the hash).
pub const USER_REGISTERED: Topic = Topic::new("user.registered");
/// A user signed in (a session was created).
pub const USER_LOGGED_IN: Topic = Topic::new("user.logged_in");
/// A session was revoked (sign-out, refresh token reuse, an admin).
pub const SESSION_REVOKED: Topic = Topic::new("session.revoked");

/// Every topic auth publishes.
pub const ALL: &[Topic] = &[USER_REGISTERED, USER_LOGGED_IN, SESSION_REVOKED];
