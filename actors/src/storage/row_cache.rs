//! A bounded cache of the rows a service wrote, so that reading one back
//! does not cost a trip to the database.
//!
//! Coherent because of where it is filled: only by the service's writer,
//! right after each commit and in commit order ([`super::group_commit::OnCommit`]),
//! never by a read (a read racing a write could put back the row the write
//! just replaced). A write that cannot say what the row became removes it
//! instead, and a miss is read from the database. It is used on SQLite
//! only, whose file this process alone writes; on PostgreSQL another
//! replica may change a row behind this process's back, so every read goes
//! to the database there and the cache is never made ([`RowCache::for_backend`]).

use std::hash::Hash;
use std::sync::Mutex;

use hashlink::LruCache;

use super::Database;

/// At most `capacity` rows, the least recently used dropped first.
#[derive(Debug)]
pub struct RowCache<K: Hash + Eq, V: Clone> {
    service: &'static str,
    rows: Mutex<LruCache<K, V>>,
}

impl<K: Hash + Eq, V: Clone> RowCache<K, V> {
    /// A cache for `db`'s rows, if caching them is coherent there (SQLite)
    /// and `capacity` is not 0.
    pub fn for_backend(service: &'static str, db: &Database, capacity: usize) -> Option<Self> {
        match db {
            Database::Sqlite(_) if capacity > 0 => {
                for outcome in ["hit", "miss"] {
                    metrics::counter!("db_row_cache_lookups_total", "service" => service, "outcome" => outcome)
                        .increment(0);
                }
                Some(Self {
                    service,
                    rows: Mutex::new(LruCache::new(capacity)),
                })
            }
            _ => None,
        }
    }

    /// The row as last written by this process, if it is still here.
    pub fn get(&self, key: &K) -> Option<V> {
        let found = self.lock().get(key).cloned();
        let outcome = if found.is_some() { "hit" } else { "miss" };
        metrics::counter!("db_row_cache_lookups_total", "service" => self.service, "outcome" => outcome)
            .increment(1);
        found
    }

    /// What the row is now (called by the writer after the commit).
    pub fn put(&self, key: K, row: V) {
        self.lock().insert(key, row);
    }

    /// Forgets the row (the write changed it in a way it cannot repeat here).
    pub fn forget(&self, key: &K) {
        self.lock().remove(key);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LruCache<K, V>> {
        // A panic while holding the lock cannot leave the map half-changed
        // (each call is one map operation): keep using it.
        self.rows
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
