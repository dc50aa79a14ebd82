//! The audit SQL written once for both backends ([`per_backend!`]): the
//! batch that appends to the chain, the searches (a `WHERE` built from the
//! filters, every value bound), the keyset pages of exports and `/verify`,
//! and the retention purge.

use std::collections::HashSet;

use sqlx::{Pool, Transaction};
use time::OffsetDateTime;
use uuid::Uuid;

use super::{AuditSql, AuditWrite, Head, Recorded, Stored, COLUMNS, PAGE_ROWS};
use crate::api::PageRequest;
use crate::audit::chain::Link;
use crate::audit::model::{ActionFilter, Filter};
use crate::idempotency::IdempotencySql;
use crate::storage::group_commit::Batch;
use crate::storage::sql::{per_backend, Dialect};
use crate::storage::{now_micros, StoreError};

/// A value a built statement binds, in placeholder order.
enum Arg {
    Text(String),
    Id(Uuid),
    Time(OffsetDateTime),
    Int(i64),
}

/// The `WHERE` condition of `filter`, its values appended to `args`
/// (placeholders numbered on from `args.len()`). Each filter is a column
/// compared to a bound value, so the indexes in the migrations answer it.
fn condition(filter: &Filter, args: &mut Vec<Arg>) -> String {
    let mut parts = vec!["1 = 1".to_owned()];
    let mut push = |sql: &str, arg: Arg, args: &mut Vec<Arg>| {
        args.push(arg);
        parts.push(sql.replace('?', &format!("${}", args.len())));
    };
    match &filter.action {
        Some(ActionFilter::Exact(action)) => push("action = ?", Arg::Text(action.clone()), args),
        Some(ActionFilter::Prefix(prefix)) => {
            push("action >= ?", Arg::Text(prefix.clone()), args);
            push(
                "action < ?",
                Arg::Text(ActionFilter::prefix_end(prefix)),
                args,
            );
        }
        None => {}
    }
    if let Some(actor) = filter.actor_id {
        push("actor_id = ?", Arg::Id(actor), args);
    }
    if let Some(t) = &filter.resource_type {
        push("resource_type = ?", Arg::Text(t.clone()), args);
    }
    if let Some(id) = &filter.resource_id {
        push("resource_id = ?", Arg::Text(id.clone()), args);
    }
    if let Some(id) = &filter.request_id {
        push("request_id = ?", Arg::Text(id.clone()), args);
    }
    if let Some(from) = filter.from {
        push("occurred_at >= ?", Arg::Time(from), args);
    }
    if let Some(to) = filter.to {
        push("occurred_at < ?", Arg::Time(to), args);
    }
    if let Some(q) = &filter.q {
        push(
            "lower(data) LIKE ? ESCAPE '\\'",
            Arg::Text(like_pattern(q)),
            args,
        );
    }
    parts.join(" AND ")
}

/// `%q%`, lowercased, with LIKE's own characters escaped.
fn like_pattern(q: &str) -> String {
    let mut pattern = String::from("%");
    for c in q.to_lowercase().chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}

/// The next placeholder after `args`.
fn next(args: &[Arg], offset: usize) -> String {
    format!("${}", args.len() + offset)
}

/// Binds `args` to a query, in order.
macro_rules! bind_args {
    ($query:expr, $args:expr) => {{
        let mut query = $query;
        for arg in $args {
            query = match arg {
                Arg::Text(text) => query.bind(text.clone()),
                Arg::Id(id) => query.bind(DB::id(*id)),
                Arg::Time(t) => query.bind(DB::time(*t)?),
                Arg::Int(n) => query.bind(*n),
            };
        }
        query
    }};
}

per_backend! {
    /// A row of `audit_entries`, in [`COLUMNS`] order.
    pub type EntryRow = (
        i64,
        <DB as Dialect>::Id,
        <DB as Dialect>::Time,
        <DB as Dialect>::Time,
        String,
        Option<<DB as Dialect>::Id>,
        String,
        Option<String>,
        Option<String>,
        String,
        String,
    );

    pub fn stored_from_row(row: EntryRow) -> Result<Stored, StoreError> {
        let (seq, id, occurred_at, recorded_at, action, actor_id, resource_type, resource_id, request_id, data, hash) = row;
        let what = |field: &str| format!("audit entry {seq}: {field}");
        Ok(Stored {
            seq,
            id: DB::read_id(id, &what("id"))?,
            occurred_at: DB::read_time(occurred_at, &what("occurred_at"))?,
            recorded_at: DB::read_time(recorded_at, &what("recorded_at"))?,
            action,
            actor_id: actor_id.map(|a| DB::read_id(a, &what("actor_id"))).transpose()?,
            resource_type,
            resource_id,
            request_id,
            data,
            hash,
        })
    }

    impl Batch<DB> for AuditWrite {
        type Output = Vec<Recorded>;

        fn summary(&self) -> &'static str {
            "INSERT audit_entries"
        }

        /// Appends every new entry of `ops` to the chain, holding its head.
        async fn write(
            tx: &mut Transaction<'_, DB>,
            ops: &[Self],
        ) -> Result<Vec<Vec<Recorded>>, StoreError> {
            let (mut seq, mut hash): (i64, String) = sqlx::query_as(&format!(
                "SELECT seq, hash FROM chain_head WHERE id = 1{}",
                DB::FOR_UPDATE
            ))
            .fetch_one(&mut **tx)
            .await?;
            let ids: Vec<Uuid> = ops.iter().flat_map(|op| op.entries.iter().map(|e| e.id)).collect();
            let mut seen: HashSet<Uuid> = DB::existing(tx, &ids).await?;
            let recorded_at = now_micros();
            let mut new = Vec::new();
            let mut outputs = Vec::with_capacity(ops.len());
            for op in ops {
                let mut output = Vec::with_capacity(op.entries.len());
                for entry in &op.entries {
                    if !seen.insert(entry.id) {
                        output.push(Recorded::Existing(entry.id));
                        continue;
                    }
                    seq += 1;
                    let link = Link {
                        seq,
                        id: entry.id,
                        occurred_at: entry.occurred_at,
                        recorded_at,
                        action: &entry.action,
                        actor_id: entry.actor_id,
                        resource_type: &entry.resource_type,
                        resource_id: entry.resource_id.as_deref(),
                        request_id: entry.request_id.as_deref(),
                        data: &entry.data,
                    };
                    hash = link.hash(&hash)?;
                    let stored = Stored {
                        seq,
                        id: entry.id,
                        occurred_at: entry.occurred_at,
                        recorded_at,
                        action: entry.action.clone(),
                        actor_id: entry.actor_id,
                        resource_type: entry.resource_type.clone(),
                        resource_id: entry.resource_id.clone(),
                        request_id: entry.request_id.clone(),
                        data: entry.data.clone(),
                        hash: hash.clone(),
                    };
                    output.push(Recorded::New(Box::new(stored.clone().into_entry()?)));
                    new.push(stored);
                }
                if let (Some(key), Some(Recorded::New(entry))) = (&op.key, output.first()) {
                    let body = serde_json::to_vec(entry)
                        .map_err(|e| StoreError::Corrupt(format!("audit entry {}: {e}", entry.id)))?;
                    DB::complete_in(tx, key, 201, &body).await?;
                }
                outputs.push(output);
            }
            if new.is_empty() {
                return Ok(outputs);
            }
            DB::insert_all(tx, &new).await?;
            sqlx::query("UPDATE chain_head SET seq = $1, hash = $2 WHERE id = 1")
                .bind(seq)
                .bind(&hash)
                .execute(&mut **tx)
                .await?;
            Ok(outputs)
        }
    }

    pub(in crate::audit::store) async fn get(db: &Db, id: Uuid) -> Result<Option<Stored>, StoreError> {
        let mut conn = db.read().await?;
        let row: Option<EntryRow> =
            sqlx::query_as(&format!("SELECT {COLUMNS} FROM audit_entries WHERE id = $1"))
                .bind(DB::id(id))
                .fetch_optional(&mut *conn)
                .await?;
        row.map(stored_from_row).transpose()
    }

    /// One page of `filter`'s entries, newest first, and their total.
    pub(in crate::audit::store) async fn search(
        db: &Db,
        filter: &Filter,
        page: PageRequest,
    ) -> Result<(Vec<Stored>, i64), StoreError> {
        let mut args = Vec::new();
        let condition = condition(filter, &mut args);
        let mut conn = db.read().await?;
        let sql = format!(
            "SELECT {COLUMNS} FROM audit_entries WHERE {condition}
             ORDER BY occurred_at DESC, seq DESC LIMIT {} OFFSET {}",
            next(&args, 1),
            next(&args, 2)
        );
        // Searches, exports and `/verify` page through a table that grows
        // from nothing: planned with their values each time, not prepared
        // (`storage::postgres`, "Statements whose plan depends on the data").
        let query = bind_args!(sqlx::query_as::<_, EntryRow>(&sql).persistent(false), &args);
        let rows = query
            .bind(i64::from(page.limit))
            .bind(page.offset())
            .fetch_all(&mut *conn)
            .await?;
        let count = format!("SELECT COUNT(*) FROM audit_entries WHERE {condition}");
        let total: i64 = bind_args!(sqlx::query_scalar::<_, i64>(&count).persistent(false), &args)
            .fetch_one(&mut *conn)
            .await?;
        let rows = rows.into_iter().map(stored_from_row).collect::<Result<_, _>>()?;
        Ok((rows, total))
    }

    /// Up to [`PAGE_ROWS`] of `filter`'s entries after seq `after`, by seq.
    pub(in crate::audit::store) async fn export_page(
        db: &Db,
        filter: &Filter,
        after: i64,
    ) -> Result<Vec<Stored>, StoreError> {
        let mut args = Vec::new();
        let condition = condition(filter, &mut args);
        args.push(Arg::Int(after));
        let sql = format!(
            "SELECT {COLUMNS} FROM audit_entries WHERE {condition} AND seq > {}
             ORDER BY seq LIMIT {PAGE_ROWS}",
            next(&args, 0)
        );
        let mut conn = db.read().await?;
        let rows = bind_args!(sqlx::query_as::<_, EntryRow>(&sql).persistent(false), &args)
            .fetch_all(&mut *conn)
            .await?;
        rows.into_iter().map(stored_from_row).collect()
    }

    pub(in crate::audit::store) async fn head(db: &Db) -> Result<Head, StoreError> {
        let mut conn = db.read().await?;
        let (seq, hash, anchor_seq, anchor_hash): (i64, String, i64, String) = sqlx::query_as(
            "SELECT seq, hash, anchor_seq, anchor_hash FROM chain_head WHERE id = 1",
        )
        .fetch_one(&mut *conn)
        .await?;
        Ok(Head { seq, hash, anchor_seq, anchor_hash })
    }

    /// Up to [`PAGE_ROWS`] entries with `after < seq <= until`, by seq.
    pub(in crate::audit::store) async fn chain_page(
        db: &Db,
        after: i64,
        until: i64,
    ) -> Result<Vec<Stored>, StoreError> {
        let mut conn = db.read().await?;
        let rows: Vec<EntryRow> = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM audit_entries WHERE seq > $1 AND seq <= $2
             ORDER BY seq LIMIT {PAGE_ROWS}"
        ))
        .persistent(false)
        .bind(after)
        .bind(until)
        .fetch_all(&mut *conn)
        .await?;
        rows.into_iter().map(stored_from_row).collect()
    }

    /// Deletes the prefix of the chain recorded before `cutoff` (up to the
    /// first entry recorded since, so the kept entries stay one unbroken
    /// chain) and makes the last deleted entry the anchor, in one
    /// transaction holding the head.
    pub(in crate::audit::store) async fn purge_before(
        writer: &Pool<DB>,
        cutoff: OffsetDateTime,
    ) -> Result<u64, StoreError> {
        let mut tx = writer.begin().await?;
        let (head, anchor): (i64, i64) = sqlx::query_as(&format!(
            "SELECT seq, anchor_seq FROM chain_head WHERE id = 1{}",
            DB::FOR_UPDATE
        ))
        .fetch_one(&mut *tx)
        .await?;
        let first_kept: Option<i64> = sqlx::query_scalar(
            "SELECT seq FROM audit_entries WHERE recorded_at >= $1 ORDER BY seq LIMIT 1",
        )
        .bind(DB::time(cutoff)?)
        .fetch_optional(&mut *tx)
        .await?;
        let last_purged = first_kept.map_or(head, |seq| seq - 1);
        if last_purged <= anchor {
            return Ok(0);
        }
        let hash: String = sqlx::query_scalar("SELECT hash FROM audit_entries WHERE seq = $1")
            .bind(last_purged)
            .fetch_one(&mut *tx)
            .await?;
        let deleted = sqlx::query("DELETE FROM audit_entries WHERE seq <= $1")
            .bind(last_purged)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        sqlx::query("UPDATE chain_head SET anchor_seq = $1, anchor_hash = $2 WHERE id = 1")
            .bind(last_purged)
            .bind(&hash)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(deleted)
    }
}
