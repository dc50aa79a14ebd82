//! The billing service's API: the messages its workers handle, from its
//! routes and from the event bus. Who asks travels beside each message, in
//! its [`crate::api::RequestContext`].

use uuid::Uuid;

use super::model::{Invoice, InvoiceFilter};
use crate::api::{Caller, Page, PageRequest};
use crate::events::{Applied, AppliedAll, Event};

pub use crate::api::Reply;

pub enum BillingMsg {
    List {
        /// Admins may ask for one user's invoices; `None` means "the caller's
        /// own" for users and "everyone's" for admins.
        user_id: Option<Uuid>,
        page: PageRequest,
        reply: Reply<Page<Invoice>>,
    },
    Get {
        id: Uuid,
        reply: Reply<Invoice>,
    },
    /// The invoice of an order (404 until its `order.created` is applied).
    ByOrder {
        order_id: Uuid,
        reply: Reply<Invoice>,
    },
    Pay {
        id: Uuid,
        reply: Reply<Invoice>,
    },
    /// A consumed event (`order.created`, `order.cancelled`), delivered by
    /// the bus; `Ok` once applied or found applied before, and an error for
    /// the bus to retry.
    Apply {
        event: Event,
        reply: Applied,
    },
    /// Several consumed events at once (what the bus had waiting): applied
    /// together, so their writes share transactions; one outcome each.
    ApplyAll {
        events: Vec<Event>,
        reply: AppliedAll,
    },
}

impl BillingMsg {
    /// The filter a list request resolves to, given who asks.
    pub fn list_filter(caller: &Caller, user_id: Option<Uuid>) -> InvoiceFilter {
        match (caller.is_admin(), user_id) {
            (true, Some(user)) => InvoiceFilter::User(user),
            (true, None) => InvoiceFilter::All,
            (false, _) => InvoiceFilter::User(caller.user_id),
        }
    }
}
