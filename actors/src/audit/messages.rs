//! The audit service's API: the messages its workers handle, from its
//! routes and from the event bus. Who asks travels beside each message, in
//! its [`crate::api::RequestContext`]; every route is an admin's.

use uuid::Uuid;

use super::model::{Entry, Filter, PostedEntry, Verified};
use super::store::Posted;
use crate::api::{Page, PageRequest};
use crate::events::{Applied, AppliedAll, Event};
use crate::idempotency::IdempotencyKey;

pub use crate::api::Reply;

pub enum AuditMsg {
    /// `POST /`: an entry whose actor is the caller.
    Post {
        entry: PostedEntry,
        idempotency: Option<IdempotencyKey>,
        reply: Reply<Posted>,
    },
    Get {
        id: Uuid,
        reply: Reply<Entry>,
    },
    Search {
        filter: Filter,
        page: PageRequest,
        reply: Reply<Page<Entry>>,
    },
    Verify {
        reply: Reply<Verified>,
    },
    /// A consumed event (any topic): recorded once, whatever the redeliveries.
    Apply {
        event: Event,
        reply: Applied,
    },
    /// What the bus had waiting: recorded in one transaction.
    ApplyAll {
        events: Vec<Event>,
        reply: AppliedAll,
    },
}
