//! A toy service defined outside the `actors` crate, as a program that
//! embeds Stageworks would define one: notes. It has its own settings
//! (`[services.notes] max_length`), its own tables (`migrations/`), a topic
//! it publishes (`note.created`), routes, and it consumes events — the
//! built-in orders' `order.created` (counted per user) and its own
//! `note.created` (marking the note announced once the bus brought it back).
//!
//! Registered with `App::builder(config).service(toy::SERVICE)`; nothing in
//! Stageworks names it.

pub mod store;

use actors::api::Access::User;
use actors::api::{ApiRequest, ApiResponse, Reply, RequestContext, Route, Routes};
use actors::events::{Applied, Event, Subscription, Topic, Topics};
use actors::orders::topics::ORDER_CREATED;
use actors::service::{
    respond, Service, ServiceContext, ServiceDefinition, ServiceSettings, SettingProblem,
    StartError, StartedService,
};
use actors::ServiceError;
use http::StatusCode;
use serde::{Deserialize, Serialize};
use supervision::{BoxError, ServiceHandle, ServiceSupervisor, WorkerHandler};
use uuid::Uuid;

use store::NotesStore;

pub const NAME: &str = "notes";

/// What notes publishes.
pub const NOTE_CREATED: Topic = Topic::new("note.created");

/// What notes consumes: a built-in service's topic and its own.
const TOPICS: Topics = Topics::Named(&[ORDER_CREATED, NOTE_CREATED]);

pub const SERVICE: ServiceDefinition = ServiceDefinition::of::<Notes>();

/// `[services.notes]`: its own keys, beside the supervision keys.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NotesSettings {
    /// The longest note, in characters.
    pub max_length: usize,
}

impl Default for NotesSettings {
    fn default() -> Self {
        Self { max_length: 280 }
    }
}

impl ServiceSettings for NotesSettings {
    fn check(&self) -> Vec<SettingProblem> {
        if (1..=10_000).contains(&self.max_length) {
            Vec::new()
        } else {
            vec![SettingProblem::new("max_length", "must be from 1 to 10000")]
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Note {
    pub id: Uuid,
    pub user_id: Uuid,
    pub text: String,
    /// Its `note.created` has come back through the event bus.
    pub announced: bool,
}

/// The service's API.
pub enum NotesMsg {
    Create { text: String, reply: Reply<Note> },
    Get { id: Uuid, reply: Reply<Note> },
    OrdersSeen { reply: Reply<i64> },
    Apply { event: Event, reply: Applied },
}

pub struct Notes;

impl Service for Notes {
    const NAME: &'static str = NAME;
    type Settings = NotesSettings;

    async fn start(
        ctx: ServiceContext,
        settings: NotesSettings,
    ) -> Result<StartedService, StartError> {
        let store = NotesStore::open(&ctx.data_dir, &ctx.storage)
            .await
            .map_err(StartError::store(NAME))?;
        let (handle, starter) = ServiceSupervisor::<NotesWorker>::build(
            ctx.name,
            ctx.policy.clone(),
            ctx.workers,
            ctx.call_timeout,
            store.clone(),
        );
        let subscription =
            Subscription::new(NAME, TOPICS, ctx.workers, handle.clone(), |event, reply| {
                NotesMsg::Apply { event, reply }
            })
            .with_inbox(store.inbox());
        Ok(StartedService {
            starter,
            routes: routes(handle, settings.max_length),
            dependencies: vec![store.dependency()],
            outbox: Some(store.outbox()),
            subscriptions: vec![subscription],
            parts: Vec::new(),
        })
    }
}

type Handle = ServiceHandle<NotesMsg, RequestContext>;

/// What the handlers share.
#[derive(Clone)]
struct State {
    notes: Handle,
    max_length: usize,
}

fn routes(notes: Handle, max_length: usize) -> Vec<Route> {
    let r = Routes::new(notes.shared().clone(), State { notes, max_length });
    vec![
        r.post("/api/v1/notes", User, create),
        r.get("/api/v1/notes/orders-seen", User, orders_seen),
        r.get("/api/v1/notes/counting", User, counting),
        r.get("/api/v1/notes/{id}", User, get),
    ]
}

async fn create(state: State, req: ApiRequest) -> Result<ApiResponse, ServiceError> {
    let body = req.json_object()?;
    let text = match body.get("text").and_then(|t| t.as_str()) {
        Some(text) if !text.is_empty() && text.chars().count() <= state.max_length => text,
        _ => {
            return Err(ServiceError::validation(
                "text",
                format!("must be a string of 1 to {} characters", state.max_length),
            ))
        }
    };
    let text = text.to_owned();
    let note = req
        .ask(&state.notes, |reply| NotesMsg::Create { text, reply })
        .await?;
    ApiResponse::json(StatusCode::CREATED, &note)
}

async fn get(state: State, req: ApiRequest) -> Result<ApiResponse, ServiceError> {
    let id = req.uuid_param("id", "note")?;
    let note = req
        .ask(&state.notes, |reply| NotesMsg::Get { id, reply })
        .await?;
    ApiResponse::json(StatusCode::OK, &note)
}

async fn orders_seen(state: State, req: ApiRequest) -> Result<ApiResponse, ServiceError> {
    let orders = req
        .ask(&state.notes, |reply| NotesMsg::OrdersSeen { reply })
        .await?;
    ApiResponse::json(StatusCode::OK, &serde_json::json!({ "orders": orders }))
}

/// How each `counting` stream ended, by its `tag`: how many lines it
/// produced, and whether the client left before the end.
pub static COUNTINGS: std::sync::Mutex<Vec<(String, u64, bool)>> =
    std::sync::Mutex::new(Vec::new());

/// `GET /api/v1/notes/counting?to=N&tag=t`: the lines `1` to `N`, streamed
/// as they are produced (a streamed response's plumbing, for the tests).
async fn counting(_state: State, req: ApiRequest) -> Result<ApiResponse, ServiceError> {
    let query = req.query_pairs();
    let find = |key: &str| query.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
    let to: u64 = find("to")
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| ServiceError::validation("to", "must be a whole number"))?;
    let tag = find("tag").unwrap_or_default();
    let (sender, stream) =
        actors::api::BodyStream::channel(http::HeaderValue::from_static("text/plain"), 4);
    tokio::spawn(async move {
        let mut produced = 0;
        let mut left = false;
        for n in 1..=to {
            if sender
                .send(bytes::Bytes::from(format!("{n}\n")))
                .await
                .is_err()
            {
                left = true;
                break;
            }
            produced = n;
        }
        COUNTINGS.lock().unwrap().push((tag, produced, left));
    });
    Ok(ApiResponse::streamed(stream))
}

struct NotesWorker;

impl WorkerHandler for NotesWorker {
    type Msg = NotesMsg;
    type Context = RequestContext;
    type State = NotesStore;
    type Args = NotesStore;

    async fn init(store: &NotesStore, _index: usize) -> Result<NotesStore, BoxError> {
        store.ensure_ready().await?;
        Ok(store.clone())
    }

    async fn before(ctx: &RequestContext) -> Result<(), BoxError> {
        ctx.strike_fault().await
    }

    async fn handle(
        msg: NotesMsg,
        ctx: &RequestContext,
        store: &mut NotesStore,
    ) -> Result<(), BoxError> {
        match msg {
            NotesMsg::Create { text, reply } => respond(reply, create_note(store, ctx, text).await),
            NotesMsg::Get { id, reply } => {
                let result = async {
                    let caller = ctx.caller()?;
                    store
                        .get(id)
                        .await
                        .map_err(ServiceError::internal)?
                        .filter(|note| caller.may_access(note.user_id))
                        .ok_or_else(|| ServiceError::NotFound("note not found".into()))
                }
                .await;
                respond(reply, result)
            }
            NotesMsg::OrdersSeen { reply } => {
                let result = async {
                    let caller = ctx.caller()?;
                    store
                        .orders_seen(caller.user_id)
                        .await
                        .map_err(ServiceError::internal)
                }
                .await;
                respond(reply, result)
            }
            NotesMsg::Apply { event, reply } => respond(reply, apply(store, &event).await),
        }
    }
}

async fn create_note(
    store: &NotesStore,
    ctx: &RequestContext,
    text: String,
) -> Result<Note, ServiceError> {
    let caller = ctx.caller()?;
    let note = Note {
        id: Uuid::now_v7(),
        user_id: caller.user_id,
        text,
        announced: false,
    };
    let event = Event::new(
        NOTE_CREATED,
        Some(ctx.request_id.as_str()),
        Some(caller.user_id),
        &serde_json::json!({ "note_id": note.id }),
    )
    .map_err(ServiceError::internal)?;
    store
        .create(&note, &event)
        .await
        .map_err(ServiceError::internal)?;
    Ok(note)
}

/// The fields of the events it reads.
#[derive(Deserialize)]
struct OrderCreated {
    user_id: Uuid,
}

#[derive(Deserialize)]
struct NoteCreated {
    note_id: Uuid,
}

async fn apply(store: &NotesStore, event: &Event) -> Result<(), ServiceError> {
    if event.topic == ORDER_CREATED {
        let order: OrderCreated = event.payload()?;
        store.count_order(event, order.user_id).await
    } else if event.topic == NOTE_CREATED {
        let note: NoteCreated = event.payload()?;
        store.announce(event, note.note_id).await
    } else {
        return Ok(());
    }
    .map_err(ServiceError::internal)
}
