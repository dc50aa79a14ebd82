//! The topics the notifications service publishes.

use crate::events::Topic;

/// A notification was delivered (its provider took it).
pub const NOTIFICATION_SENT: Topic = Topic::new("notification.sent");
/// A notification's attempts ran out: it is among the dead letters.
pub const NOTIFICATION_DEAD: Topic = Topic::new("notification.dead");

pub const ALL: &[Topic] = &[NOTIFICATION_SENT, NOTIFICATION_DEAD];
