//! The orders service's API: the messages its workers handle. Who asks
//! travels beside each message, in its [`crate::api::RequestContext`].

use uuid::Uuid;

use super::model::{NewOrder, Order, OrderFilter};
use crate::api::{Caller, Page, PageRequest};
use crate::events::{Applied, Event};
use crate::idempotency::IdempotencyKey;

pub use crate::api::Reply;

/// The outcome of a create: a new order, or the stored answer to an
/// idempotency key seen before.
#[derive(Debug)]
pub enum Created {
    New(Order),
    Replayed { status: u16, body: Vec<u8> },
}

pub enum OrdersMsg {
    Create {
        order: NewOrder,
        idempotency: Option<IdempotencyKey>,
        reply: Reply<Created>,
    },
    Get {
        id: Uuid,
        reply: Reply<Order>,
    },
    List {
        /// Admins may ask for one user's orders; `None` means "the caller's own"
        /// for users and "everyone's" for admins.
        user_id: Option<Uuid>,
        page: PageRequest,
        reply: Reply<Page<Order>>,
    },
    Cancel {
        id: Uuid,
        reply: Reply<Order>,
    },
    /// An event orders subscribes to, from the event bus.
    Apply {
        event: Event,
        reply: Applied,
    },
}

impl OrdersMsg {
    /// The filter a list request resolves to, given who asks.
    pub fn list_filter(caller: &Caller, user_id: Option<Uuid>) -> OrderFilter {
        match (caller.is_admin(), user_id) {
            (true, Some(user)) => OrderFilter::User(user),
            (true, None) => OrderFilter::All,
            (false, _) => OrderFilter::User(caller.user_id),
        }
    }
}
