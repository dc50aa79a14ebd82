//! The topics the notifications service publishes.

use crate::events::Topic;

/// A notification was delivered (its provider took it).
pub const NOTIFICATION_SENT: Topic = Topic::new("notification.sent");
/// A notification's attempts ran out: it is among the dead letters.
pub const NOTIFICATION_DEAD: Topic = Topic::new("notification.dead");

/// An admin queued a dead notification again (the audit log records who).
pub const NOTIFICATION_RETRIED: Topic = Topic::new("notification.retried");

pub const ALL: &[Topic] = &[NOTIFICATION_SENT, NOTIFICATION_DEAD, NOTIFICATION_RETRIED];
