//! The audit SQL that differs on SQLite: a batch's ids and rows passed as
//! one JSON array each, read back with `json_each` (PostgreSQL binds arrays).
//! The single writer connection is what serialises appenders.

use std::collections::HashSet;

use sqlx::{Sqlite, Transaction};
use uuid::Uuid;

use super::{AuditSql, Stored};
use crate::storage::sql::Dialect;
use crate::storage::StoreError;

impl AuditSql for Sqlite {
    async fn existing(
        tx: &mut Transaction<'_, Sqlite>,
        ids: &[Uuid],
    ) -> Result<HashSet<Uuid>, StoreError> {
        let list: Vec<String> = ids.iter().map(|id| Sqlite::id(*id)).collect();
        let found: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM audit_entries WHERE id IN (SELECT value FROM json_each($1))",
        )
        .bind(json(&list)?)
        .fetch_all(&mut **tx)
        .await?;
        found
            .into_iter()
            .map(|id| Sqlite::read_id(id, "audit entry id"))
            .collect()
    }

    async fn insert_all(
        tx: &mut Transaction<'_, Sqlite>,
        entries: &[Stored],
    ) -> Result<(), StoreError> {
        let rows = entries
            .iter()
            .map(|e| {
                Ok(serde_json::json!([
                    e.seq,
                    Sqlite::id(e.id),
                    Sqlite::time(e.occurred_at)?,
                    Sqlite::time(e.recorded_at)?,
                    e.action,
                    e.actor_id.map(Sqlite::id),
                    e.resource_type,
                    e.resource_id,
                    e.request_id,
                    e.data,
                    e.hash,
                ]))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        sqlx::query(
            "INSERT INTO audit_entries (seq, id, occurred_at, recorded_at, action, actor_id,
                                        resource_type, resource_id, request_id, data, hash)
             SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4, value ->> 5,
                    value ->> 6, value ->> 7, value ->> 8, value ->> 9, value ->> 10
             FROM json_each($1)",
        )
        .bind(serde_json::Value::Array(rows).to_string())
        .execute(&mut **tx)
        .await?;
        Ok(())
    }
}

fn json(values: &[String]) -> Result<String, StoreError> {
    serde_json::to_string(values).map_err(|e| StoreError::Corrupt(e.to_string()))
}
