//! `GET /admin/stream`: the live snapshot as server-sent events
//! (`text/event-stream`), one `snapshot` event a second and one as soon as
//! an operator's action changed something. Each stream is a task writing
//! through a bounded [`BodyStream`]; it ends when the client goes away
//! (its body dropped), when the app shuts down, or when a snapshot cannot
//! be encoded. At most `admin.max_streams` run at once: a semaphore permit
//! is held by each task, so a stream counts until its task has ended.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::HeaderValue;
use supervision::Tree;
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};

use actors::api::{BodyStream, ChunkSender};
use actors::events::EventBus;

use super::snapshot;

/// How often a stream sends a snapshot when nothing happens.
pub const EVERY: Duration = Duration::from_secs(1);

/// Snapshots queued for a slow client before the task waits for it.
const CHANNEL_CHUNKS: usize = 2;

/// How long the browser waits before it reconnects (the SSE `retry` field).
const RETRY_MS: u32 = 2000;

#[derive(Debug, thiserror::Error)]
#[error("{0} admin streams are open already (admin.max_streams)")]
pub struct TooManyStreams(pub usize);

/// The open streams and what they read.
pub struct Streams {
    permits: Arc<Semaphore>,
    max: usize,
    tree: Tree,
    events: EventBus,
    /// Bumped by an operator's action: every stream sends at once.
    poked: watch::Sender<u64>,
    closed: watch::Receiver<bool>,
    open: Arc<AtomicU64>,
}

impl Streams {
    pub fn new(max: usize, tree: Tree, events: EventBus, closed: watch::Receiver<bool>) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(max)),
            max,
            tree,
            events,
            poked: watch::channel(0).0,
            closed,
            open: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Starts a stream, or refuses one past the bound.
    pub fn open(&self) -> Result<BodyStream, TooManyStreams> {
        let permit = self
            .permits
            .clone()
            .try_acquire_owned()
            .map_err(|_| TooManyStreams(self.max))?;
        let (sender, body) = BodyStream::channel(
            HeaderValue::from_static("text/event-stream; charset=utf-8"),
            CHANNEL_CHUNKS,
        );
        let task = StreamTask {
            _permit: permit,
            open: Opened::new(self.open.clone()),
            sender,
            tree: self.tree.clone(),
            events: self.events.clone(),
            poked: self.poked.subscribe(),
            closed: self.closed.clone(),
        };
        tokio::spawn(task.run());
        Ok(body)
    }

    /// Something changed (an operator's action): every stream sends now.
    pub fn poke(&self) {
        self.poked.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Streams whose task is running now.
    pub fn open_count(&self) -> u64 {
        self.open.load(Ordering::Relaxed)
    }
}

/// Counts a stream open for as long as its task lives (and the
/// `admin_streams_open` gauge with it).
struct Opened(Arc<AtomicU64>);

impl Opened {
    fn new(open: Arc<AtomicU64>) -> Self {
        let now = open.fetch_add(1, Ordering::Relaxed) + 1;
        metrics::gauge!("admin_streams_open").set(now as f64);
        Self(open)
    }
}

impl Drop for Opened {
    fn drop(&mut self) {
        let now = self.0.fetch_sub(1, Ordering::Relaxed).saturating_sub(1);
        metrics::gauge!("admin_streams_open").set(now as f64);
    }
}

struct StreamTask {
    _permit: OwnedSemaphorePermit,
    open: Opened,
    sender: ChunkSender,
    tree: Tree,
    events: EventBus,
    poked: watch::Receiver<u64>,
    closed: watch::Receiver<bool>,
}

/// Why a stream's loop stopped.
enum Next {
    Send,
    Stop,
}

impl StreamTask {
    async fn run(mut self) {
        let mut id = 0u64;
        let hello = Bytes::from(format!("retry: {RETRY_MS}\n\n"));
        if self.sender.send(hello).await.is_err() {
            return;
        }
        loop {
            if *self.closed.borrow() {
                break;
            }
            id += 1;
            let live = snapshot::take(&self.tree, &self.events).await;
            let Ok(chunk) = event("snapshot", id, &live) else {
                tracing::error!("admin stream: the snapshot cannot be encoded");
                break;
            };
            if self.sender.send(chunk).await.is_err() {
                break;
            }
            if let Next::Stop = self.wait().await {
                break;
            }
        }
        tracing::debug!(sent = id, "admin stream ended");
        drop(self.open);
    }

    /// Waits for the next tick, an operator's action, the client leaving or
    /// the app closing.
    async fn wait(&mut self) -> Next {
        tokio::select! {
            () = tokio::time::sleep(EVERY) => Next::Send,
            changed = self.poked.changed() => match changed {
                Ok(()) => Next::Send,
                Err(_) => Next::Stop,
            },
            () = self.sender.closed() => Next::Stop,
            _ = self.closed.wait_for(|closed| *closed) => Next::Stop,
        }
    }
}

/// One SSE event: `event:`, `id:` and the JSON on one `data:` line (JSON
/// as serde writes it has no raw newline).
fn event(name: &str, id: u64, value: &impl serde::Serialize) -> Result<Bytes, serde_json::Error> {
    let json = serde_json::to_string(value)?;
    Ok(Bytes::from(format!(
        "event: {name}\nid: {id}\ndata: {json}\n\n"
    )))
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_event_is_one_data_line() {
        let chunk = super::event("snapshot", 3, &serde_json::json!({"a": "x\ny"})).unwrap();
        assert_eq!(
            std::str::from_utf8(&chunk).unwrap(),
            "event: snapshot\nid: 3\ndata: {\"a\":\"x\\ny\"}\n\n"
        );
    }
}
