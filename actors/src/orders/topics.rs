//! The topics orders publishes (API.md, Events), each written to its outbox
//! in the transaction of the change it announces.

use crate::events::Topic;

/// An order was accepted (data: the order as the API shows it).
pub const ORDER_CREATED: Topic = Topic::new("order.created");
/// An order was cancelled.
pub const ORDER_CANCELLED: Topic = Topic::new("order.cancelled");

/// Every topic orders publishes.
pub const ALL: &[Topic] = &[ORDER_CREATED, ORDER_CANCELLED];
