//! The orders SQL that differs on SQLite: a batch's orders inserted as one
//! statement, with `json_each` standing in for PostgreSQL's array binds
//! (the rest is written once, in `sql.rs`).

use sqlx::{Sqlite, Transaction};

use super::OrderRows;
use crate::orders::model::Order;
use crate::storage::sql::Dialect;
use crate::storage::StoreError;

const INSERT_ORDERS: &str = "INSERT INTO orders (id, user_id, amount, currency, description, status, created_at, updated_at)
     SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4, value ->> 5, value ->> 6, value ->> 7
     FROM json_each($1)";

impl OrderRows for Sqlite {
    async fn insert_orders(
        tx: &mut Transaction<'_, Sqlite>,
        orders: &[&Order],
    ) -> Result<(), StoreError> {
        let rows = orders
            .iter()
            .map(|order| {
                Ok(serde_json::json!([
                    Sqlite::id(order.id),
                    Sqlite::id(order.user_id),
                    order.amount,
                    order.currency,
                    order.description,
                    order.status.as_str(),
                    Sqlite::time(order.created_at)?,
                    Sqlite::time(order.updated_at)?,
                ]))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        sqlx::query(INSERT_ORDERS)
            .bind(serde_json::Value::Array(rows).to_string())
            .execute(&mut **tx)
            .await?;
        Ok(())
    }
}
