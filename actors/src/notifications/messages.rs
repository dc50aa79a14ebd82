//! [`NotificationsMsg`]: the notifications service's API, one message per
//! thing it is asked, each with the port its answer goes back on.

use ractor::RpcReplyPort;
use uuid::Uuid;

use super::model::{
    BatchProgress, NewBulk, NewSend, NewSubscription, Notification, NotificationFilter,
    Preferences, PushSubscription, Template, TemplateInput,
};
use crate::api::{Page, PageRequest};
use crate::events::{Applied, Event};
use crate::idempotency::IdempotencyKey;
use crate::ServiceError;

type Reply<T> = RpcReplyPort<Result<T, ServiceError>>;

/// What `POST /send` answers.
#[derive(Debug)]
pub enum Accepted {
    /// Committed now (`queued`, or `skipped` for an opted-out user).
    New(Notification),
    /// The idempotency key was used before with this body: its answer.
    Replayed { status: u16, body: Vec<u8> },
}

/// What `POST /send-bulk` answers.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct BulkAccepted {
    pub batch_id: Uuid,
    pub accepted: usize,
}

pub enum NotificationsMsg {
    Send {
        send: NewSend,
        idempotency: Option<IdempotencyKey>,
        reply: Reply<Accepted>,
    },
    SendBulk {
        bulk: NewBulk,
        reply: Reply<BulkAccepted>,
    },
    Batch {
        id: Uuid,
        reply: Reply<BatchProgress>,
    },
    /// The caller's notifications; an admin's may filter on anyone's.
    List {
        filter: NotificationFilter,
        page: PageRequest,
        reply: Reply<Page<Notification>>,
    },
    Get {
        id: Uuid,
        reply: Reply<Notification>,
    },
    Templates {
        reply: Reply<Vec<Template>>,
    },
    Template {
        name: String,
        reply: Reply<Template>,
    },
    CreateTemplate {
        input: TemplateInput,
        reply: Reply<Template>,
    },
    ReplaceTemplate {
        input: TemplateInput,
        reply: Reply<Template>,
    },
    DeleteTemplate {
        name: String,
        reply: Reply<()>,
    },
    Subscribe {
        subscription: NewSubscription,
        reply: Reply<PushSubscription>,
    },
    Unsubscribe {
        id: Uuid,
        reply: Reply<()>,
    },
    Preferences {
        reply: Reply<Preferences>,
    },
    PutPreferences {
        preferences: Preferences,
        reply: Reply<Preferences>,
    },
    DeadLetters {
        page: PageRequest,
        reply: Reply<Page<Notification>>,
    },
    RetryDead {
        id: Uuid,
        reply: Reply<Notification>,
    },
    /// A consumed event (`user.registered`, `invoice.created`, …).
    Apply {
        event: Event,
        reply: Applied,
    },
}
