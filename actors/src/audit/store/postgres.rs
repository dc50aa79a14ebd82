//! The audit SQL that differs on PostgreSQL: a batch's ids and rows bound
//! as arrays (`unnest`). Appenders on every replica take turns on the
//! `chain_head` row, locked by the batch (`sql.rs`).

use std::collections::HashSet;

use sqlx::{Postgres, Transaction};
use uuid::Uuid;

use super::{AuditSql, Stored};
use crate::storage::StoreError;

impl AuditSql for Postgres {
    async fn existing(
        tx: &mut Transaction<'_, Postgres>,
        ids: &[Uuid],
    ) -> Result<HashSet<Uuid>, StoreError> {
        // A semi-join on the unnested array keeps to the index (see billing),
        // planned with this batch's ids each time: see `storage::postgres`,
        // "Statements whose plan depends on the data are not prepared".
        let found: Vec<Uuid> = sqlx::query_scalar(
            "SELECT id FROM audit_entries WHERE id IN (SELECT unnest($1::uuid[]))",
        )
        .persistent(false)
        .bind(ids)
        .fetch_all(&mut **tx)
        .await?;
        Ok(found.into_iter().collect())
    }

    async fn insert_all(
        tx: &mut Transaction<'_, Postgres>,
        entries: &[Stored],
    ) -> Result<(), StoreError> {
        let all = || entries.iter();
        sqlx::query(
            "INSERT INTO audit_entries (seq, id, occurred_at, recorded_at, action, actor_id,
                                        resource_type, resource_id, request_id, data, hash)
             SELECT * FROM UNNEST($1::bigint[], $2::uuid[], $3::timestamptz[], $4::timestamptz[],
                                  $5::text[], $6::uuid[], $7::text[], $8::text[], $9::text[],
                                  $10::text[], $11::text[])",
        )
        .bind(all().map(|e| e.seq).collect::<Vec<_>>())
        .bind(all().map(|e| e.id).collect::<Vec<_>>())
        .bind(all().map(|e| e.occurred_at).collect::<Vec<_>>())
        .bind(all().map(|e| e.recorded_at).collect::<Vec<_>>())
        .bind(all().map(|e| e.action.as_str()).collect::<Vec<_>>())
        .bind(all().map(|e| e.actor_id).collect::<Vec<_>>())
        .bind(all().map(|e| e.resource_type.as_str()).collect::<Vec<_>>())
        .bind(all().map(|e| e.resource_id.as_deref()).collect::<Vec<_>>())
        .bind(all().map(|e| e.request_id.as_deref()).collect::<Vec<_>>())
        .bind(all().map(|e| e.data.as_str()).collect::<Vec<_>>())
        .bind(all().map(|e| e.hash.as_str()).collect::<Vec<_>>())
        .execute(&mut **tx)
        .await?;
        Ok(())
    }
}
