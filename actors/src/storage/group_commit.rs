//! Group commit: the writes of one service database gathered into shared
//! transactions.
//!
//! Callers (the service's workers) submit a write and wait for its outcome;
//! a writer lane takes everything waiting (up to `max_batch`), writes it in
//! one transaction and commits once, then answers each caller. While a lane
//! commits, the next writes collect in the queue, so under load a commit
//! carries many writes and an idle writer adds no wait at all. The batch's
//! [`Batch::write`] may merge its writes into multi-row statements.
//!
//! One bad write never fails its neighbours: when a batch fails, it is rolled
//! back and each write is tried again in a transaction of its own, so only the
//! write at fault gets the error. A caller hears `Ok` only after the
//! transaction holding its write has committed.
//!
//! SQLite runs one lane (one writer connection); PostgreSQL may run several
//! over its pool (`database.write_lanes`).

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use futures::FutureExt;
use sqlx::{Database, Pool, Transaction};
use tokio::sync::{mpsc, oneshot, Mutex};
use tracing::Instrument;

use super::StoreError;

/// A kind of write a service submits, and how a batch of them is written.
pub trait Batch<DB: Database>: Sized + Send + Sync + 'static {
    /// What one write answers its caller once committed.
    type Output: Send + 'static;

    /// Writes `ops`, in order, in the open transaction `tx`, answering one
    /// output per op. An error fails the whole batch (it is rolled back and
    /// each op written again alone): return business outcomes (not found,
    /// conflict) as outputs, and errors only for what the database refused.
    fn write(
        tx: &mut Transaction<'_, DB>,
        ops: &[Self],
    ) -> impl Future<Output = Result<Vec<Self::Output>, StoreError>> + Send;

    /// What the write does, as a trace's statement summary (`INSERT orders`).
    fn summary(&self) -> &'static str {
        "write"
    }
}

/// How a service's writes are grouped (`[database]` in the configuration).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GroupCommitSettings {
    /// At most this many writes in one transaction.
    pub max_batch: usize,
    /// Transactions committing at once (SQLite: always 1).
    pub lanes: usize,
}

impl Default for GroupCommitSettings {
    fn default() -> Self {
        Self {
            max_batch: 256,
            lanes: 2,
        }
    }
}

/// Called by the writer for each write that committed, in commit order,
/// before its caller hears of it: what a service keeps in memory about its
/// own rows (orders' row cache) stays in step with the database.
pub type OnCommit<B, O> = Arc<dyn Fn(&B, &O) + Send + Sync>;

struct Pending<B: Batch<DB>, DB: Database> {
    op: B,
    reply: oneshot::Sender<Result<B::Output, StoreError>>,
}

/// The writer of one service database for one kind of write (cheap to clone).
pub struct GroupCommit<DB: Database, B: Batch<DB>> {
    queue: mpsc::Sender<Pending<B, DB>>,
    service: &'static str,
}

impl<DB: Database, B: Batch<DB>> Clone for GroupCommit<DB, B> {
    fn clone(&self) -> Self {
        Self {
            queue: self.queue.clone(),
            service: self.service,
        }
    }
}

impl<DB: Database, B: Batch<DB>> std::fmt::Debug for GroupCommit<DB, B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCommit")
            .field("service", &self.service)
            .finish()
    }
}

impl<DB: Database, B: Batch<DB>> GroupCommit<DB, B> {
    /// Starts the writer lanes on `pool`. They stop once every handle is dropped.
    pub fn start(
        service: &'static str,
        pool: Pool<DB>,
        settings: GroupCommitSettings,
        on_commit: Option<OnCommit<B, B::Output>>,
    ) -> Self {
        metrics::counter!("db_write_batch_retries_total", "service" => service).increment(0);
        let max_batch = settings.max_batch.max(1);
        let (queue, receiver) = mpsc::channel(max_batch * settings.lanes.max(1) * 2);
        let receiver = Arc::new(Mutex::new(receiver));
        for _ in 0..settings.lanes.max(1) {
            let lane = Lane {
                service,
                pool: pool.clone(),
                receiver: receiver.clone(),
                max_batch,
                on_commit: on_commit.clone(),
            };
            tokio::spawn(lane.run());
        }
        Self { queue, service }
    }

    /// Writes `op` with whatever else is waiting; answers once its transaction
    /// committed. With traces on, in a span from submission to commit (the
    /// wait for the batch's transaction included).
    pub async fn submit(&self, op: B) -> Result<B::Output, StoreError> {
        if supervision::trace::enabled() {
            let span = super::db_span(self.service, DB::NAME, op.summary());
            return self.submit_untraced(op).instrument(span).await;
        }
        self.submit_untraced(op).await
    }

    async fn submit_untraced(&self, op: B) -> Result<B::Output, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Pending { op, reply })
            .await
            .map_err(|_| StoreError::WriterStopped(self.service))?;
        answer
            .await
            .map_err(|_| StoreError::WriterStopped(self.service))?
    }
}

struct Lane<DB: Database, B: Batch<DB>> {
    service: &'static str,
    pool: Pool<DB>,
    receiver: Arc<Mutex<mpsc::Receiver<Pending<B, DB>>>>,
    max_batch: usize,
    on_commit: Option<OnCommit<B, B::Output>>,
}

impl<DB: Database, B: Batch<DB>> Lane<DB, B> {
    async fn run(self) {
        let mut batch = Vec::with_capacity(self.max_batch);
        loop {
            {
                // One lane collects at a time; the others commit meanwhile.
                let mut receiver = self.receiver.lock().await;
                if receiver.recv_many(&mut batch, self.max_batch).await == 0 {
                    return;
                }
            }
            self.commit(std::mem::take(&mut batch)).await;
        }
    }

    async fn commit(&self, batch: Vec<Pending<B, DB>>) {
        let started = Instant::now();
        let size = batch.len();
        let (ops, replies): (Vec<B>, Vec<_>) = batch.into_iter().map(|p| (p.op, p.reply)).unzip();
        let service = self.service;
        metrics::histogram!("db_write_batch_size", "service" => service).record(size as f64);
        match self.write_in_transaction(&ops).await {
            Ok(outputs) => {
                for (op, output) in ops.iter().zip(&outputs) {
                    self.committed(op, output);
                }
                for (reply, output) in replies.into_iter().zip(outputs) {
                    // The caller may have timed out and gone.
                    let _ = reply.send(Ok(output));
                }
            }
            Err(err) if size == 1 => {
                let _ = replies.into_iter().next().map(|reply| reply.send(Err(err)));
            }
            Err(err) => {
                // Also when COMMIT itself failed, whose outcome may be unknown
                // (the connection dropped): writes carry their ids (orders,
                // events) from before the batch, so one that had committed
                // after all fails its retry on a unique key, never twice.
                tracing::debug!(service, writes = size, error = %err, "batch failed; writing each write alone");
                metrics::counter!("db_write_batch_retries_total", "service" => service)
                    .increment(1);
                for (op, reply) in ops.iter().zip(replies) {
                    let alone = self
                        .write_in_transaction(std::slice::from_ref(op))
                        .await
                        .and_then(|mut outputs| {
                            outputs.pop().ok_or_else(|| {
                                StoreError::Corrupt("a write answered nothing".into())
                            })
                        });
                    if let Ok(output) = &alone {
                        self.committed(op, output);
                    }
                    let _ = reply.send(alone);
                }
            }
        }
        metrics::histogram!("db_write_batch_duration_seconds", "service" => service)
            .record(started.elapsed().as_secs_f64());
    }

    fn committed(&self, op: &B, output: &B::Output) {
        if let Some(on_commit) = &self.on_commit {
            on_commit(op, output);
        }
    }

    async fn write_in_transaction(&self, ops: &[B]) -> Result<Vec<B::Output>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        let written = Self::write_on(&mut conn, ops).await;
        if written.as_ref().is_err_and(StoreError::is_write_refused) {
            // A connection that met a refused write may stay unable to write
            // when the storage can again (SQLite reopens its WAL read-only
            // while the file cannot be written, and keeps it so): the next
            // write gets a fresh one.
            conn.close_on_drop();
        }
        written
    }

    async fn write_on(
        conn: &mut sqlx::pool::PoolConnection<DB>,
        ops: &[B],
    ) -> Result<Vec<B::Output>, StoreError> {
        use sqlx::Connection;
        let mut tx = conn.begin().await?;
        // A panic in a write is that write's failure, like a database error:
        // the lane lives on and the batch's other writes are written alone.
        let written = std::panic::AssertUnwindSafe(B::write(&mut tx, ops))
            .catch_unwind()
            .await
            .unwrap_or_else(|panic| Err(StoreError::Panicked(panic_message(&*panic))));
        match written {
            Ok(outputs) if outputs.len() == ops.len() => {
                tx.commit().await?;
                Ok(outputs)
            }
            Ok(outputs) => {
                let _ = tx.rollback().await;
                Err(StoreError::Corrupt(format!(
                    "{} writes answered {} outputs",
                    ops.len(),
                    outputs.len()
                )))
            }
            Err(err) => {
                let _ = tx.rollback().await;
                Err(err)
            }
        }
    }
}

/// A service's writer on whichever backend its database is: the same writes
/// (`B`), written by the SQL of each backend.
pub enum Writer<B>
where
    B: Batch<sqlx::Sqlite> + Batch<sqlx::Postgres, Output = <B as Batch<sqlx::Sqlite>>::Output>,
{
    Sqlite(GroupCommit<sqlx::Sqlite, B>),
    Postgres(GroupCommit<sqlx::Postgres, B>),
}

impl<B> Clone for Writer<B>
where
    B: Batch<sqlx::Sqlite> + Batch<sqlx::Postgres, Output = <B as Batch<sqlx::Sqlite>>::Output>,
{
    fn clone(&self) -> Self {
        match self {
            Writer::Sqlite(w) => Writer::Sqlite(w.clone()),
            Writer::Postgres(w) => Writer::Postgres(w.clone()),
        }
    }
}

impl<B> std::fmt::Debug for Writer<B>
where
    B: Batch<sqlx::Sqlite> + Batch<sqlx::Postgres, Output = <B as Batch<sqlx::Sqlite>>::Output>,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Writer::Sqlite(w) => w.fmt(f),
            Writer::Postgres(w) => w.fmt(f),
        }
    }
}

impl<B> Writer<B>
where
    B: Batch<sqlx::Sqlite> + Batch<sqlx::Postgres, Output = <B as Batch<sqlx::Sqlite>>::Output>,
{
    /// Starts the writer of `db`: one lane on SQLite (its single writer
    /// connection), `settings.lanes` over the pool on PostgreSQL.
    pub fn start(
        service: &'static str,
        db: &super::Database,
        settings: GroupCommitSettings,
        on_commit: Option<OnCommit<B, <B as Batch<sqlx::Sqlite>>::Output>>,
    ) -> Self {
        match db {
            super::Database::Sqlite(db) => Writer::Sqlite(GroupCommit::start(
                service,
                db.writer().clone(),
                GroupCommitSettings {
                    lanes: 1,
                    ..settings
                },
                on_commit,
            )),
            super::Database::Postgres(db) => Writer::Postgres(GroupCommit::start(
                service,
                db.pool().clone(),
                settings,
                on_commit,
            )),
        }
    }

    /// Writes `op` in the next transaction; answers once it committed.
    pub async fn submit(&self, op: B) -> Result<<B as Batch<sqlx::Sqlite>>::Output, StoreError> {
        match self {
            Writer::Sqlite(w) => w.submit(op).await,
            Writer::Postgres(w) => w.submit(op).await,
        }
    }
}

/// What a panic said, if it said it as text.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".to_owned())
}
