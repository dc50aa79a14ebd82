//! The notifications worker: handles one [`NotificationsMsg`] at a time.
//! Accepting a notification means checking who asks, rendering its
//! template, finding its recipient and committing its row: what reaches
//! the queue is ready to send. Sending is the senders' job
//! ([`super::delivery`]), woken after each commit.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use serde_json::{Map, Value};
use supervision::{BoxError, WorkerHandler};
use tokio::sync::Notify;
use uuid::Uuid;

use super::messages::{Accepted, BulkAccepted, NotificationsMsg};
use super::model::{
    Channel, Content, NewBulk, NewSend, NewSubscription, Notification, NotificationFilter,
    PushSubscription, Recipient, Status, Template, TemplateInput, TemplateName,
};
use super::store::{Directory, Enqueue, EventEffect, NewRow, NotificationsStore};
use super::templates::{self, Renderer};
use super::topics::NOTIFICATION_RETRIED;
use crate::api::{Caller, Page, RequestContext};
use crate::auth::topics::USER_REGISTERED;
use crate::events::Event;
use crate::idempotency::{Claim, IdempotencyKey};
use crate::service::respond;
use crate::storage::{now_micros, StoreError};
use crate::{FieldError, ServiceError};

/// What every worker shares.
#[derive(Clone)]
pub struct Notifier {
    pub store: NotificationsStore,
    pub renderer: Arc<Renderer>,
    /// The channels with a provider configured.
    pub channels: Arc<HashSet<Channel>>,
    /// Topic → template (`notifications.events`).
    pub events: Arc<BTreeMap<String, TemplateName>>,
    /// Wakes the senders after a commit.
    pub wake: Arc<Notify>,
}

pub struct NotificationsWorker;

impl WorkerHandler for NotificationsWorker {
    type Msg = NotificationsMsg;
    type Context = RequestContext;
    type State = Notifier;
    type Args = Notifier;

    fn kind(msg: &NotificationsMsg) -> &'static str {
        match msg {
            NotificationsMsg::Send { .. } => "Send",
            NotificationsMsg::SendBulk { .. } => "SendBulk",
            NotificationsMsg::Batch { .. } => "Batch",
            NotificationsMsg::List { .. } => "List",
            NotificationsMsg::Get { .. } => "Get",
            NotificationsMsg::Templates { .. } => "Templates",
            NotificationsMsg::Template { .. } => "Template",
            NotificationsMsg::CreateTemplate { .. } => "CreateTemplate",
            NotificationsMsg::ReplaceTemplate { .. } => "ReplaceTemplate",
            NotificationsMsg::DeleteTemplate { .. } => "DeleteTemplate",
            NotificationsMsg::Subscribe { .. } => "Subscribe",
            NotificationsMsg::Unsubscribe { .. } => "Unsubscribe",
            NotificationsMsg::Preferences { .. } => "Preferences",
            NotificationsMsg::PutPreferences { .. } => "PutPreferences",
            NotificationsMsg::DeadLetters { .. } => "DeadLetters",
            NotificationsMsg::RetryDead { .. } => "RetryDead",
            NotificationsMsg::Apply { .. } => "Apply",
        }
    }

    async fn init(notifier: &Notifier, _index: usize) -> Result<Notifier, BoxError> {
        notifier.store.ensure_ready().await?;
        Ok(notifier.clone())
    }

    async fn before(ctx: &RequestContext) -> Result<(), BoxError> {
        ctx.strike_fault().await
    }

    async fn handle(
        msg: NotificationsMsg,
        ctx: &RequestContext,
        n: &mut Notifier,
    ) -> Result<(), BoxError> {
        use NotificationsMsg as M;
        match msg {
            M::Send {
                send,
                idempotency,
                reply,
            } => respond(reply, accept_one(n, ctx, send, idempotency).await),
            M::SendBulk { bulk, reply } => respond(reply, accept_bulk(n, ctx, bulk).await),
            M::Batch { id, reply } => respond(
                reply,
                async {
                    admin(ctx)?;
                    n.store
                        .batch(id)
                        .await
                        .map_err(internal)?
                        .ok_or_else(|| ServiceError::NotFound("batch not found".into()))
                }
                .await,
            ),
            M::List {
                filter,
                page,
                reply,
            } => respond(reply, list(n, ctx, filter, page).await),
            M::Get { id, reply } => respond(reply, get(n, ctx, id).await),
            M::Templates { reply } => respond(
                reply,
                async {
                    admin(ctx)?;
                    n.store.templates().await.map_err(internal)
                }
                .await,
            ),
            M::Template { name, reply } => respond(
                reply,
                async {
                    admin(ctx)?;
                    template(n, &name).await
                }
                .await,
            ),
            M::CreateTemplate { input, reply } => {
                respond(reply, write_template(n, ctx, input, true).await)
            }
            M::ReplaceTemplate { input, reply } => {
                respond(reply, write_template(n, ctx, input, false).await)
            }
            M::DeleteTemplate { name, reply } => respond(
                reply,
                async {
                    admin(ctx)?;
                    match n.store.delete_template(&name).await.map_err(internal)? {
                        true => Ok(()),
                        false => Err(template_not_found()),
                    }
                }
                .await,
            ),
            M::Subscribe {
                subscription,
                reply,
            } => respond(reply, subscribe(n, ctx, subscription).await),
            M::Unsubscribe { id, reply } => respond(reply, unsubscribe(n, ctx, id).await),
            M::Preferences { reply } => respond(
                reply,
                async {
                    let caller = ctx.caller()?;
                    n.store.preferences(caller.user_id).await.map_err(internal)
                }
                .await,
            ),
            M::PutPreferences { preferences, reply } => respond(
                reply,
                async {
                    let caller = ctx.caller()?;
                    n.store
                        .put_preferences(caller.user_id, preferences)
                        .await
                        .map_err(internal)?;
                    Ok(preferences)
                }
                .await,
            ),
            M::DeadLetters { page, reply } => respond(
                reply,
                async {
                    admin(ctx)?;
                    let filter = NotificationFilter {
                        status: Some(Status::Dead),
                        ..NotificationFilter::default()
                    };
                    let (list, total) = n.store.list(&filter, page).await.map_err(internal)?;
                    Ok(Page::new(list, page, total))
                }
                .await,
            ),
            M::RetryDead { id, reply } => respond(reply, retry_dead(n, ctx, id).await),
            M::Apply { event, reply } => respond(reply, apply(n, &event).await),
        }
    }
}

/// A store failure as a reply: 503 when the database is down, else 500.
fn internal(err: StoreError) -> ServiceError {
    ServiceError::from_store("notifications", err)
}

fn admin(ctx: &RequestContext) -> Result<&Caller, ServiceError> {
    let caller = ctx.caller()?;
    if caller.is_admin() {
        Ok(caller)
    } else {
        Err(ServiceError::Forbidden(
            "only an admin may do this with notifications".into(),
        ))
    }
}

fn template_not_found() -> ServiceError {
    ServiceError::NotFound("template not found".into())
}

fn unprocessable(errors: Vec<FieldError>) -> ServiceError {
    ServiceError::Validation(errors)
}

fn field(field: impl Into<String>, message: impl Into<String>) -> ServiceError {
    ServiceError::validation(field, message)
}

async fn template(n: &Notifier, name: &str) -> Result<Template, ServiceError> {
    n.store
        .template(name)
        .await
        .map_err(internal)?
        .ok_or_else(template_not_found)
}

fn check_channel(n: &Notifier, channel: Channel) -> Result<(), ServiceError> {
    if n.channels.contains(&channel) {
        Ok(())
    } else {
        Err(field(
            "channel",
            format!(
                "no provider is configured for the {} channel",
                channel.as_str()
            ),
        ))
    }
}

/// A template for `channel` by name, or the 422 naming `template`.
async fn template_for(
    n: &Notifier,
    name: &TemplateName,
    channel: Channel,
) -> Result<Template, ServiceError> {
    let found = n.store.template(name.as_str()).await.map_err(internal)?;
    let template = found.ok_or_else(|| field("template", "names no template"))?;
    if template.channel != channel {
        return Err(field(
            "template",
            format!(
                "is a {} template, not {}",
                template.channel.as_str(),
                channel.as_str()
            ),
        ));
    }
    Ok(template)
}

/// Where one notification goes: its address, its user, the key its order
/// is kept by, and whether the user opted out. `prefix` names the fields
/// of a bulk recipient.
struct Addressed {
    to: Option<String>,
    user_id: Option<Uuid>,
    recipient_key: String,
    skipped: bool,
}

/// The users a send names (none, or one).
fn user_of(recipient: &Recipient) -> Option<Uuid> {
    match recipient {
        Recipient::User(user) => Some(*user),
        Recipient::Address(_) => None,
    }
}

/// Where a notification to `recipient` goes, from what `directory` knows of
/// the users; a user the channel cannot reach is the 422 on
/// `<prefix>user_id`.
fn address(
    directory: &Directory,
    channel: Channel,
    recipient: &Recipient,
    prefix: &str,
) -> Result<Addressed, ServiceError> {
    let user = match recipient {
        Recipient::Address(to) => {
            return Ok(Addressed {
                to: Some(to.clone()),
                user_id: None,
                recipient_key: format!("{}:{to}", channel.as_str()),
                skipped: false,
            })
        }
        Recipient::User(user) => *user,
    };
    let user_field = format!("{prefix}user_id");
    let to =
        match channel {
            Channel::Email => Some(directory.emails.get(&user).cloned().ok_or_else(|| {
                field(&user_field, "is not a user the notifications service knows")
            })?),
            Channel::Push if directory.subscribed.contains(&user) => None,
            Channel::Push => return Err(field(&user_field, "has no push subscription")),
            Channel::Sms | Channel::Webhook => {
                return Err(field(
                    &user_field,
                    format!(
                        "the {} channel needs to (an address), not user_id",
                        channel.as_str()
                    ),
                ))
            }
        };
    let prefs = directory
        .preferences
        .get(&user)
        .copied()
        .unwrap_or_default();
    Ok(Addressed {
        to,
        user_id: Some(user),
        recipient_key: format!("{}:user:{user}", channel.as_str()),
        skipped: !prefs.allows(channel),
    })
}

fn row(
    channel: Channel,
    addressed: Addressed,
    template: Option<&TemplateName>,
    rendered: templates::Rendered,
) -> NewRow {
    NewRow {
        id: Uuid::now_v7(),
        channel,
        to: addressed.to,
        user_id: addressed.user_id,
        recipient_key: addressed.recipient_key,
        template: template.map(|t| t.as_str().to_owned()),
        subject: rendered.subject,
        body: rendered.body,
        html: rendered.html,
        status: if addressed.skipped {
            Status::Skipped
        } else {
            Status::Queued
        },
    }
}

/// The notification a new row is, as the contract shows it.
fn shown(row: &NewRow, batch_id: Option<Uuid>, now: time::OffsetDateTime) -> Notification {
    Notification {
        id: row.id,
        channel: row.channel,
        to: row.to.clone(),
        user_id: row.user_id,
        template: row.template.clone(),
        subject: row.subject.clone(),
        status: row.status,
        attempts: 0,
        last_error: None,
        batch_id,
        created_at: now,
        sent_at: None,
    }
}

async fn render_send(n: &Notifier, send: &NewSend) -> Result<templates::Rendered, ServiceError> {
    match &send.content {
        Content::Template { name, data } => {
            let template = template_for(n, name, send.channel).await?;
            render(n, &template, data)
        }
        Content::Literal { subject, body } => Ok(templates::Rendered {
            subject: subject.clone(),
            body: body.clone(),
            html: None,
        }),
    }
}

fn render(
    n: &Notifier,
    template: &Template,
    data: &Map<String, Value>,
) -> Result<templates::Rendered, ServiceError> {
    n.renderer
        .render(
            template.subject.as_deref(),
            &template.body,
            template.html.as_deref(),
            data,
        )
        .map_err(|e| unprocessable(vec![e]))
}

async fn accept_one(
    n: &Notifier,
    ctx: &RequestContext,
    send: NewSend,
    key: Option<IdempotencyKey>,
) -> Result<Accepted, ServiceError> {
    admin(ctx)?;
    check_channel(n, send.channel)?;
    if let Some(key) = &key {
        match n.store.claim_key(key).await.map_err(internal)? {
            Claim::Claimed => {}
            Claim::Replay { status, body } => return Ok(Accepted::Replayed { status, body }),
            other => {
                return Err(other
                    .conflict_error()
                    .unwrap_or_else(|| ServiceError::internal("claim")))
            }
        }
    }
    let result = commit_one(n, &send, key.as_ref()).await;
    if result.is_err() {
        if let Some(key) = &key {
            if let Err(release) = n.store.release_key(key).await {
                tracing::warn!(error = %release, "could not release the idempotency key");
            }
        }
    }
    result.map(Accepted::New)
}

async fn commit_one(
    n: &Notifier,
    send: &NewSend,
    key: Option<&IdempotencyKey>,
) -> Result<Notification, ServiceError> {
    let rendered = render_send(n, send).await?;
    let users: Vec<Uuid> = user_of(&send.recipient).into_iter().collect();
    let directory = n.store.directory(&users).await.map_err(internal)?;
    let addressed = address(&directory, send.channel, &send.recipient, "")?;
    let template = match &send.content {
        Content::Template { name, .. } => Some(name),
        Content::Literal { .. } => None,
    };
    let row = row(send.channel, addressed, template, rendered);
    let now = now_micros();
    let notification = shown(&row, None, now);
    let response = match key {
        Some(key) => Some((
            key.clone(),
            serde_json::to_vec(&notification).map_err(ServiceError::internal)?,
        )),
        None => None,
    };
    n.store
        .enqueue(&Enqueue {
            rows: vec![row],
            now,
            batch: None,
            response,
            event: None,
            effect: None,
        })
        .await
        .map_err(internal)?;
    n.wake.notify_waiters();
    tracing::info!(notification_id = %notification.id, channel = notification.channel.as_str(), status = notification.status.as_str(), "notification accepted");
    Ok(notification)
}

async fn accept_bulk(
    n: &Notifier,
    ctx: &RequestContext,
    bulk: NewBulk,
) -> Result<BulkAccepted, ServiceError> {
    admin(ctx)?;
    check_channel(n, bulk.channel)?;
    let template = template_for(n, &bulk.template, bulk.channel).await?;
    let users: Vec<Uuid> = bulk
        .recipients
        .iter()
        .filter_map(|(recipient, _)| user_of(recipient))
        .collect();
    let directory = n.store.directory(&users).await.map_err(internal)?;
    let mut rows = Vec::with_capacity(bulk.recipients.len());
    for (i, (recipient, data)) in bulk.recipients.iter().enumerate() {
        let prefix = format!("recipients[{i}].");
        let rendered = render(n, &template, data).map_err(|err| match err {
            ServiceError::Validation(errors) => ServiceError::Validation(
                errors
                    .into_iter()
                    .map(|e| FieldError::new(format!("{prefix}{}", e.field), e.message))
                    .collect(),
            ),
            other => other,
        })?;
        let addressed = address(&directory, bulk.channel, recipient, &prefix)?;
        rows.push(row(bulk.channel, addressed, Some(&bulk.template), rendered));
    }
    let batch_id = Uuid::now_v7();
    let accepted = rows.len();
    n.store
        .enqueue(&Enqueue {
            rows,
            now: now_micros(),
            batch: Some((batch_id, accepted)),
            response: None,
            event: None,
            effect: None,
        })
        .await
        .map_err(internal)?;
    n.wake.notify_waiters();
    tracing::info!(%batch_id, accepted, channel = bulk.channel.as_str(), "bulk notifications accepted");
    Ok(BulkAccepted { batch_id, accepted })
}

async fn list(
    n: &Notifier,
    ctx: &RequestContext,
    mut filter: NotificationFilter,
    page: crate::api::PageRequest,
) -> Result<Page<Notification>, ServiceError> {
    let caller = ctx.caller()?;
    if !caller.is_admin() {
        // A user sees what was addressed to them, whatever they asked for.
        filter.user_id = Some(caller.user_id);
    }
    let (list, total) = n.store.list(&filter, page).await.map_err(internal)?;
    Ok(Page::new(list, page, total))
}

async fn get(n: &Notifier, ctx: &RequestContext, id: Uuid) -> Result<Notification, ServiceError> {
    let caller = ctx.caller()?;
    n.store
        .get(id)
        .await
        .map_err(internal)?
        .filter(|found| caller.is_admin() || found.user_id == Some(caller.user_id))
        .ok_or_else(|| ServiceError::NotFound("notification not found".into()))
}

async fn write_template(
    n: &Notifier,
    ctx: &RequestContext,
    input: TemplateInput,
    create: bool,
) -> Result<Template, ServiceError> {
    admin(ctx)?;
    templates::check(&input).map_err(unprocessable)?;
    if create {
        if !n.store.create_template(&input).await.map_err(internal)? {
            return Err(ServiceError::Conflict(format!(
                "a template named {} exists",
                input.name.as_str()
            )));
        }
    } else if !n.store.replace_template(&input).await.map_err(internal)? {
        return Err(template_not_found());
    }
    tracing::info!(
        template = input.name.as_str(),
        created = create,
        "template written"
    );
    template(n, input.name.as_str()).await
}

async fn subscribe(
    n: &Notifier,
    ctx: &RequestContext,
    new: NewSubscription,
) -> Result<PushSubscription, ServiceError> {
    let caller = ctx.caller()?;
    let subscription = PushSubscription {
        id: Uuid::now_v7(),
        endpoint: new.endpoint,
        user_id: caller.user_id,
        p256dh: new.p256dh,
        auth: new.auth,
        created_at: now_micros(),
    };
    n.store.subscribe(&subscription).await.map_err(internal)
}

async fn unsubscribe(n: &Notifier, ctx: &RequestContext, id: Uuid) -> Result<(), ServiceError> {
    let caller = ctx.caller()?;
    let not_found = || ServiceError::NotFound("subscription not found".into());
    let owner = n.store.subscription_owner(id).await.map_err(internal)?;
    if !owner.is_some_and(|owner| caller.may_access(owner)) {
        return Err(not_found());
    }
    match n.store.unsubscribe(id).await.map_err(internal)? {
        true => Ok(()),
        false => Err(not_found()),
    }
}

async fn retry_dead(
    n: &Notifier,
    ctx: &RequestContext,
    id: Uuid,
) -> Result<Notification, ServiceError> {
    let caller = admin(ctx)?;
    let not_found = || ServiceError::NotFound("notification not found".into());
    let retried = Event::new(
        NOTIFICATION_RETRIED,
        Some(&ctx.request_id),
        Some(caller.user_id),
        &serde_json::json!({ "id": id }),
    )
    .map_err(ServiceError::internal)?;
    if !n.store.retry_dead(id, &retried).await.map_err(internal)? {
        let found = n
            .store
            .get(id)
            .await
            .map_err(internal)?
            .ok_or_else(not_found)?;
        return Err(ServiceError::Conflict(format!(
            "notification is {}, not dead",
            found.status.as_str()
        )));
    }
    n.wake.notify_waiters();
    tracing::info!(notification_id = %id, "dead notification queued again");
    n.store
        .get(id)
        .await
        .map_err(internal)?
        .ok_or_else(not_found)
}

/// What a consumed event says about its user.
#[derive(serde::Deserialize)]
struct Registered {
    id: Uuid,
    email: String,
    #[serde(default)]
    name: String,
}

#[derive(serde::Deserialize)]
struct ForUser {
    user_id: Uuid,
}

/// Applies a consumed event, once (inbox): `user.registered` keeps the
/// user's address; an event mapped to a template sends it to the user the
/// event names. A template missing or failing to render sends nothing
/// (logged): the event is still recorded, since no redelivery would fix it.
async fn apply(n: &Notifier, event: &Event) -> Result<(), ServiceError> {
    crate::fault::poison::strike("notifications", event);
    let (user, effect) = if event.topic == USER_REGISTERED {
        let user: Registered = event.payload()?;
        let effect = EventEffect::User {
            id: user.id,
            email: user.email.clone(),
            name: user.name,
        };
        (Some((user.id, Some(user.email))), Some(effect))
    } else {
        let user = event.payload::<ForUser>().ok().map(|u| (u.user_id, None));
        (user, None)
    };
    let rows = match (n.events.get(event.topic.as_str()), user) {
        (Some(name), Some((user_id, email))) => notify_user(n, event, name, user_id, email).await?,
        _ => Vec::new(),
    };
    let fresh = n
        .store
        .enqueue(&Enqueue {
            rows,
            now: now_micros(),
            batch: None,
            response: None,
            event: Some(event.clone()),
            effect,
        })
        .await
        .map_err(internal)?;
    if fresh {
        n.wake.notify_waiters();
    }
    Ok(())
}

/// The notification an event sends to `user_id`, rendered from the event's data.
async fn notify_user(
    n: &Notifier,
    event: &Event,
    name: &TemplateName,
    user_id: Uuid,
    email: Option<String>,
) -> Result<Vec<NewRow>, ServiceError> {
    let Some(template) = n.store.template(name.as_str()).await.map_err(internal)? else {
        tracing::warn!(topic = %event.topic, template = name.as_str(), "the event's template does not exist: nothing sent");
        return Ok(Vec::new());
    };
    if !n.channels.contains(&template.channel) {
        tracing::debug!(topic = %event.topic, channel = template.channel.as_str(), "no provider for the event's template: nothing sent");
        return Ok(Vec::new());
    }
    let data = event.data.as_object().cloned().unwrap_or_default();
    let rendered = match render(n, &template, &data) {
        Ok(rendered) => rendered,
        Err(err) => {
            tracing::warn!(topic = %event.topic, template = name.as_str(), error = %err, "the event's template does not render: nothing sent");
            return Ok(Vec::new());
        }
    };
    let prefs = n.store.preferences(user_id).await.map_err(internal)?;
    // The address may not be known yet (an invoice before its user's
    // registration came through): the sender looks it up when it sends.
    let to = match (template.channel, email) {
        (Channel::Email, Some(email)) => Some(email),
        (Channel::Email, None) => n.store.email_of(user_id).await.map_err(internal)?,
        _ => None,
    };
    let addressed = Addressed {
        to,
        user_id: Some(user_id),
        recipient_key: format!("{}:user:{user_id}", template.channel.as_str()),
        skipped: !prefs.allows(template.channel),
    };
    Ok(vec![row(template.channel, addressed, Some(name), rendered)])
}
