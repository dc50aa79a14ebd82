//! The orders SQL that differs on PostgreSQL: a batch's orders inserted as
//! one statement over array binds (the rest is written once, in `sql.rs`).

use sqlx::{Postgres, Transaction};

use super::OrderRows;
use crate::orders::model::Order;
use crate::storage::StoreError;

const INSERT_ORDERS: &str = "INSERT INTO orders (id, user_id, amount, currency, description, status, created_at, updated_at)
     SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::bigint[], $4::text[], $5::text[], $6::text[],
                          $7::timestamptz[], $8::timestamptz[])";

impl OrderRows for Postgres {
    async fn insert_orders(
        tx: &mut Transaction<'_, Postgres>,
        orders: &[&Order],
    ) -> Result<(), StoreError> {
        sqlx::query(INSERT_ORDERS)
            .bind(orders.iter().map(|o| o.id).collect::<Vec<_>>())
            .bind(orders.iter().map(|o| o.user_id).collect::<Vec<_>>())
            .bind(orders.iter().map(|o| o.amount).collect::<Vec<_>>())
            .bind(
                orders
                    .iter()
                    .map(|o| o.currency.as_str())
                    .collect::<Vec<_>>(),
            )
            .bind(
                orders
                    .iter()
                    .map(|o| o.description.as_deref())
                    .collect::<Vec<_>>(),
            )
            .bind(orders.iter().map(|o| o.status.as_str()).collect::<Vec<_>>())
            .bind(orders.iter().map(|o| o.created_at).collect::<Vec<_>>())
            .bind(orders.iter().map(|o| o.updated_at).collect::<Vec<_>>())
            .execute(&mut **tx)
            .await?;
        Ok(())
    }
}
