//! The hash chain over the entries, by `seq`.
//!
//! `hash(n)` = lowercase hex of SHA-256 over the bytes of `hash(n-1)` (64
//! hex characters; 64 zeros before the first entry, or the anchor after a
//! purge) followed by the entry's canonical JSON: one object, no spaces,
//! with exactly these members in this order:
//!
//! `seq` (integer), `id` (hyphenated lowercase UUID), `occurred_at`,
//! `recorded_at` (RFC 3339 in UTC, six fraction digits, `Z`), `action`,
//! `actor_id` (UUID or `null`), `resource_type`, `resource_id`,
//! `request_id` (strings or `null`), `data` (the stored compact JSON text
//! as is). Strings are escaped as serde_json escapes them.
//!
//! Both backends give the same text for the same entry (PostgreSQL keeps
//! microseconds, SQLite stores them as text), so a chain moved between them
//! still verifies.

use serde::Serialize;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::storage::StoreError;

/// What comes before the first entry.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// How times appear in the canonical JSON.
const TIME: &[time::format_description::BorrowedFormatItem<'static>] = time::macros::format_description!(
    "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z"
);

/// The fields of an entry that are hashed, borrowed.
#[derive(Clone, Copy, Debug)]
pub struct Link<'a> {
    pub seq: i64,
    pub id: Uuid,
    pub occurred_at: OffsetDateTime,
    pub recorded_at: OffsetDateTime,
    pub action: &'a str,
    pub actor_id: Option<Uuid>,
    pub resource_type: &'a str,
    pub resource_id: Option<&'a str>,
    pub request_id: Option<&'a str>,
    /// Compact JSON text, as stored.
    pub data: &'a str,
}

/// The members before `data`, in order.
#[derive(Serialize)]
struct Head<'a> {
    seq: i64,
    id: Uuid,
    occurred_at: String,
    recorded_at: String,
    action: &'a str,
    actor_id: Option<Uuid>,
    resource_type: &'a str,
    resource_id: Option<&'a str>,
    request_id: Option<&'a str>,
}

fn time_text(t: OffsetDateTime) -> Result<String, StoreError> {
    t.to_offset(time::UtcOffset::UTC)
        .format(TIME)
        .map_err(|e| StoreError::Corrupt(format!("time {t}: {e}")))
}

impl Link<'_> {
    /// The canonical JSON (see the module's documentation).
    pub fn canonical(&self) -> Result<String, StoreError> {
        let head = Head {
            seq: self.seq,
            id: self.id,
            occurred_at: time_text(self.occurred_at)?,
            recorded_at: time_text(self.recorded_at)?,
            action: self.action,
            actor_id: self.actor_id,
            resource_type: self.resource_type,
            resource_id: self.resource_id,
            request_id: self.request_id,
        };
        let mut json = serde_json::to_string(&head)
            .map_err(|e| StoreError::Corrupt(format!("entry {}: {e}", self.id)))?;
        // `{…}` → `{…,"data":<data>}`: the data is embedded as stored.
        json.pop();
        json.push_str(",\"data\":");
        json.push_str(self.data);
        json.push('}');
        Ok(json)
    }

    /// This entry's hash, following `previous`.
    pub fn hash(&self, previous: &str) -> Result<String, StoreError> {
        let mut digest = Sha256::new();
        digest.update(previous.as_bytes());
        digest.update(self.canonical()?.as_bytes());
        Ok(hex::encode(digest.finalize()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_canonical_json_is_documented_exactly() {
        let id = Uuid::from_u128(1);
        let at = OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
        let link = Link {
            seq: 7,
            id,
            occurred_at: at,
            recorded_at: at,
            action: "order.created",
            actor_id: None,
            resource_type: "order",
            resource_id: Some("o-1"),
            request_id: None,
            data: r#"{"a":1}"#,
        };
        assert_eq!(
            link.canonical().unwrap(),
            "{\"seq\":7,\"id\":\"00000000-0000-0000-0000-000000000001\",\
             \"occurred_at\":\"2023-11-14T22:13:20.000000Z\",\
             \"recorded_at\":\"2023-11-14T22:13:20.000000Z\",\"action\":\"order.created\",\
             \"actor_id\":null,\"resource_type\":\"order\",\"resource_id\":\"o-1\",\
             \"request_id\":null,\"data\":{\"a\":1}}"
        );
        let hash = link.hash(GENESIS).unwrap();
        assert_eq!(hash.len(), 64);
        assert_ne!(hash, link.hash(&hash).unwrap(), "the previous hash counts");
    }
}
