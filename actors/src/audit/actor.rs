//! The audit worker: handles one [`AuditMsg`] at a time against the store,
//! whether it came from a route or from the event bus.

use supervision::{BoxError, WorkerHandler};

use super::messages::AuditMsg;
use super::model::{Entry, NewEntry};
use super::store::{internal, AuditStore, Recorded};
use crate::api::{Caller, Page, RequestContext};
use crate::events::Event;
use crate::service::{respond, respond_all};
use crate::ServiceError;

pub struct AuditWorker;

impl WorkerHandler for AuditWorker {
    type Msg = AuditMsg;
    type Context = RequestContext;
    type State = AuditStore;
    type Args = AuditStore;

    fn kind(msg: &AuditMsg) -> &'static str {
        match msg {
            AuditMsg::Post { .. } => "Post",
            AuditMsg::Get { .. } => "Get",
            AuditMsg::Search { .. } => "Search",
            AuditMsg::Verify { .. } => "Verify",
            AuditMsg::Apply { .. } => "Apply",
            AuditMsg::ApplyAll { .. } => "ApplyAll",
        }
    }

    /// On PostgreSQL the first workers set up the schema (see billing's).
    async fn init(store: &AuditStore, _index: usize) -> Result<AuditStore, BoxError> {
        store.ensure_ready().await?;
        Ok(store.clone())
    }

    async fn before(ctx: &RequestContext) -> Result<(), BoxError> {
        ctx.strike_fault().await
    }

    async fn handle(
        msg: AuditMsg,
        ctx: &RequestContext,
        store: &mut AuditStore,
    ) -> Result<(), BoxError> {
        match msg {
            AuditMsg::Post {
                entry,
                idempotency,
                reply,
            } => {
                let result = async {
                    let caller = admin(ctx)?;
                    let entry = entry.into_entry(caller.user_id, &ctx.request_id);
                    store.post(entry, idempotency).await
                }
                .await;
                respond(reply, result)
            }
            AuditMsg::Get { id, reply } => {
                let result = async {
                    admin(ctx)?;
                    store
                        .get(id)
                        .await
                        .map_err(internal)?
                        .ok_or_else(|| ServiceError::NotFound(format!("no audit entry {id}")))
                }
                .await;
                respond(reply, result)
            }
            AuditMsg::Search {
                filter,
                page,
                reply,
            } => {
                let result = async {
                    admin(ctx)?;
                    let (entries, total): (Vec<Entry>, u64) =
                        store.search(&filter, page).await.map_err(internal)?;
                    Ok(Page::new(entries, page, total))
                }
                .await;
                respond(reply, result)
            }
            AuditMsg::Verify { reply } => {
                let result = async {
                    admin(ctx)?;
                    store.verify().await.map_err(internal)
                }
                .await;
                respond(reply, result)
            }
            AuditMsg::Apply { event, reply } => {
                respond(reply, apply(store, std::slice::from_ref(&event)).await)
            }
            AuditMsg::ApplyAll { events, reply } => {
                let results = match apply(store, &events).await {
                    Ok(()) => events.iter().map(|_| Ok(())).collect(),
                    Err(err) => events.iter().map(|_| Err(err.clone())).collect(),
                };
                respond_all(reply, results)
            }
        }
    }
}

/// The caller, if an admin: 403 for anyone else.
pub(super) fn admin(ctx: &RequestContext) -> Result<&Caller, ServiceError> {
    let caller = ctx.caller()?;
    if caller.is_admin() {
        Ok(caller)
    } else {
        Err(ServiceError::Forbidden(
            "the audit log is for admins only".into(),
        ))
    }
}

/// Records events, in one transaction; those recorded before change nothing.
async fn apply(store: &AuditStore, events: &[Event]) -> Result<(), ServiceError> {
    let entries = events.iter().map(NewEntry::from_event).collect();
    let recorded = store.record(entries).await.map_err(internal)?;
    for outcome in recorded {
        match outcome {
            Recorded::New(entry) => {
                tracing::debug!(entry_id = %entry.id, seq = entry.seq, action = %entry.action, "recorded")
            }
            Recorded::Existing(id) => {
                tracing::debug!(entry_id = %id, "event recorded before, nothing to do")
            }
        }
    }
    Ok(())
}
