//! Group commit against real databases (SQLite and PostgreSQL): concurrent
//! writes share transactions, each caller still gets its own answer, one bad
//! write (a constraint, a panic) fails only its own caller, and an `Ok` means
//! the write is committed.

mod common;

use std::sync::{Arc, Mutex};

use actors::storage::group_commit::{Batch, GroupCommit, GroupCommitSettings, OnCommit};
use actors::storage::StoreError;
use common::Guard;
use sqlx::{Postgres, Sqlite, Transaction};

/// A toy write: one row of `notes`, whose `body` is unique.
struct Note {
    body: String,
    /// Panic while writing (a bug in a write).
    panic: bool,
    /// The sizes of the batches this note's batch was part of.
    batches: Arc<Mutex<Vec<usize>>>,
    /// Where the writer's commit hook logs this note's answer, if anywhere.
    committed: Option<Arc<Mutex<Vec<String>>>>,
}

impl Note {
    fn new(body: impl Into<String>, batches: &Arc<Mutex<Vec<usize>>>) -> Self {
        Self {
            body: body.into(),
            panic: false,
            batches: batches.clone(),
            committed: None,
        }
    }

    fn logged(mut self, committed: &Arc<Mutex<Vec<String>>>) -> Self {
        self.committed = Some(committed.clone());
        self
    }
}

/// The writer's commit hook: logs each committed note's answer.
fn log_commit() -> OnCommit<Note, String> {
    Arc::new(|note: &Note, answer: &String| {
        if let Some(log) = &note.committed {
            log.lock().expect("lock").push(answer.clone());
        }
    })
}

fn record(ops: &[Note]) {
    if let Some(first) = ops.first() {
        first.batches.lock().expect("lock").push(ops.len());
    }
    if ops.iter().any(|n| n.panic) {
        panic!("a note asked to panic");
    }
}

impl Batch<Sqlite> for Note {
    type Output = String;

    async fn write(
        tx: &mut Transaction<'_, Sqlite>,
        ops: &[Self],
    ) -> Result<Vec<String>, StoreError> {
        record(ops);
        let bodies: Vec<&str> = ops.iter().map(|n| n.body.as_str()).collect();
        // One statement for the whole batch.
        let list = serde_json::to_string(&bodies).expect("json");
        sqlx::query("INSERT INTO notes (body) SELECT value FROM json_each($1)")
            .bind(list)
            .execute(&mut **tx)
            .await?;
        Ok(ops.iter().map(|n| format!("stored {}", n.body)).collect())
    }
}

impl Batch<Postgres> for Note {
    type Output = String;

    async fn write(
        tx: &mut Transaction<'_, Postgres>,
        ops: &[Self],
    ) -> Result<Vec<String>, StoreError> {
        record(ops);
        let bodies: Vec<&str> = ops.iter().map(|n| n.body.as_str()).collect();
        sqlx::query("INSERT INTO notes (body) SELECT * FROM UNNEST($1::text[])")
            .bind(bodies)
            .execute(&mut **tx)
            .await?;
        Ok(ops.iter().map(|n| format!("stored {}", n.body)).collect())
    }
}

/// The operations a check needs, whichever the backend.
#[derive(Clone)]
enum Notes {
    Sqlite(GroupCommit<Sqlite, Note>, sqlx::SqlitePool),
    Postgres(GroupCommit<Postgres, Note>, sqlx::PgPool),
}

impl Notes {
    async fn submit(&self, note: Note) -> Result<String, StoreError> {
        match self {
            Notes::Sqlite(writer, _) => writer.submit(note).await,
            Notes::Postgres(writer, _) => writer.submit(note).await,
        }
    }

    /// Read on another connection than the writer's: only committed rows show.
    async fn stored(&self, body: &str) -> bool {
        let count: i64 = match self {
            Notes::Sqlite(_, reader) => {
                sqlx::query_scalar("SELECT COUNT(*) FROM notes WHERE body = $1")
                    .bind(body)
                    .fetch_one(reader)
                    .await
            }
            Notes::Postgres(_, pool) => {
                sqlx::query_scalar("SELECT COUNT(*) FROM notes WHERE body = $1")
                    .bind(body)
                    .fetch_one(pool)
                    .await
            }
        }
        .expect("count notes");
        count == 1
    }
}

const SETTINGS: GroupCommitSettings = GroupCommitSettings {
    max_batch: 64,
    lanes: 2,
};

async fn sqlite_notes() -> (Notes, Guard) {
    let (dir, guard) = common::sqlite_dir();
    let url = format!("sqlite:{}?mode=rwc", dir.join("notes.db").display());
    let writer = sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(1)
        .connect(&url)
        .await
        .expect("open sqlite");
    sqlx::query("PRAGMA journal_mode = WAL")
        .execute(&writer)
        .await
        .expect("wal");
    sqlx::query("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT NOT NULL UNIQUE)")
        .execute(&writer)
        .await
        .expect("create notes");
    let reader = sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(2)
        .connect(&url)
        .await
        .expect("open reader");
    let settings = GroupCommitSettings {
        lanes: 1,
        ..SETTINGS
    };
    (
        Notes::Sqlite(
            GroupCommit::start("notes", writer, settings, Some(log_commit())),
            reader,
        ),
        guard,
    )
}

async fn postgres_notes() -> (Notes, Guard) {
    let (settings, guard) = common::postgres_database().await;
    let url = settings.url.expect("a postgres url");
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(4)
        .connect(&url)
        .await
        .expect("connect");
    sqlx::query("CREATE TABLE notes (id BIGSERIAL PRIMARY KEY, body TEXT NOT NULL UNIQUE)")
        .execute(&pool)
        .await
        .expect("create notes");
    (
        Notes::Postgres(
            GroupCommit::start("notes", pool.clone(), SETTINGS, Some(log_commit())),
            pool,
        ),
        guard,
    )
}

macro_rules! on_both_backends {
    ($($check:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    let (notes, _guard) = super::sqlite_notes().await;
                    super::$check(&notes).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    let (notes, _guard) = super::postgres_notes().await;
                    super::$check(&notes).await;
                }
            )*
        }
    };
}

on_both_backends!(
    check_concurrent_writes_share_transactions,
    check_a_bad_write_fails_only_its_caller,
    check_a_panicking_write_fails_only_its_caller,
    check_an_idle_writer_writes_at_once,
);

/// Submits `notes` all at once; answers each caller's outcome, in order.
async fn submit_all(notes: &Notes, batch: Vec<Note>) -> Vec<Result<String, StoreError>> {
    let calls = batch.into_iter().map(|note| {
        let notes = notes.clone();
        tokio::spawn(async move { notes.submit(note).await })
    });
    futures::future::join_all(calls)
        .await
        .into_iter()
        .map(|joined| joined.expect("the caller task"))
        .collect()
}

async fn check_concurrent_writes_share_transactions(notes: &Notes) {
    let batches = Arc::new(Mutex::new(Vec::new()));
    let many = (0..500)
        .map(|i| Note::new(format!("note {i}"), &batches))
        .collect();
    let answers = submit_all(notes, many).await;
    for (i, answer) in answers.iter().enumerate() {
        assert_eq!(
            answer.as_ref().expect("every write succeeds"),
            &format!("stored note {i}"),
            "each caller gets its own answer"
        );
    }
    for i in [0, 250, 499] {
        assert!(notes.stored(&format!("note {i}")).await, "note {i} stored");
    }
    let batches = batches.lock().expect("lock").clone();
    assert_eq!(
        batches.iter().sum::<usize>(),
        500,
        "every write in one batch"
    );
    assert!(
        batches.len() < 500,
        "500 concurrent writes should share transactions, got batches {batches:?}"
    );
    assert!(
        batches.iter().all(|&size| size <= SETTINGS.max_batch),
        "batches are bounded by max_batch: {batches:?}"
    );
}

async fn check_a_bad_write_fails_only_its_caller(notes: &Notes) {
    let batches = Arc::new(Mutex::new(Vec::new()));
    let committed = Arc::new(Mutex::new(Vec::new()));
    notes
        .submit(Note::new("taken", &batches).logged(&committed))
        .await
        .expect("the first write");
    // 40 writes at once, one of them breaking the unique constraint.
    let mut batch: Vec<Note> = (0..40)
        .map(|i| Note::new(format!("fine {i}"), &batches).logged(&committed))
        .collect();
    batch.insert(20, Note::new("taken", &batches).logged(&committed));
    let answers = submit_all(notes, batch).await;
    for (i, answer) in answers.iter().enumerate() {
        if i == 20 {
            assert!(
                matches!(answer, Err(StoreError::Database(_))),
                "the duplicate fails: {answer:?}"
            );
        } else {
            assert!(
                answer.is_ok(),
                "write {i} fails with its neighbour: {answer:?}"
            );
        }
    }
    for i in 0..40 {
        assert!(notes.stored(&format!("fine {i}")).await, "fine {i} stored");
    }
    assert!(notes.stored("taken").await, "the duplicate wrote nothing");
    // The commit hook heard of every write that committed, once, and of
    // nothing else (not the duplicate, not the batch that was rolled back).
    let mut heard = committed.lock().expect("lock").clone();
    heard.sort();
    let mut expected: Vec<String> = (0..40).map(|i| format!("stored fine {i}")).collect();
    expected.push("stored taken".into());
    expected.sort();
    assert_eq!(heard, expected);
}

async fn check_a_panicking_write_fails_only_its_caller(notes: &Notes) {
    let batches = Arc::new(Mutex::new(Vec::new()));
    let mut batch: Vec<Note> = (0..30)
        .map(|i| Note::new(format!("calm {i}"), &batches))
        .collect();
    batch[7].panic = true;
    let answers = submit_all(notes, batch).await;
    assert!(
        matches!(answers[7], Err(StoreError::Panicked(_))),
        "the panicking write fails: {:?}",
        answers[7]
    );
    for (i, answer) in answers.iter().enumerate().filter(|(i, _)| *i != 7) {
        assert!(
            answer.is_ok(),
            "write {i} fails with its neighbour: {answer:?}"
        );
        assert!(notes.stored(&format!("calm {i}")).await);
    }
    assert!(
        !notes.stored("calm 7").await,
        "the panicking write left nothing"
    );
    // The writer lives on.
    notes
        .submit(Note::new("after the panic", &batches))
        .await
        .expect("a later write");
}

async fn check_an_idle_writer_writes_at_once(notes: &Notes) {
    let batches = Arc::new(Mutex::new(Vec::new()));
    for i in 0..5 {
        let answer = notes
            .submit(Note::new(format!("alone {i}"), &batches))
            .await
            .expect("write");
        assert_eq!(answer, format!("stored alone {i}"));
        assert!(
            notes.stored(&format!("alone {i}")).await,
            "committed before the answer"
        );
    }
    assert_eq!(
        *batches.lock().expect("lock"),
        vec![1; 5],
        "a lone write is not held back for company"
    );
}
