//! [`MemoryKv`]: the in-process key-value store, the default when no Redis is
//! configured.
//!
//! One `std::sync::Mutex` guards a map plus two ordered indexes. Critical
//! sections are short and never await, so a plain mutex beats an async one;
//! at the request rates one process serves, sharding has not been needed.
//!
//! # Expiry
//!
//! An expired entry is invisible at once (every read compares its deadline to
//! now) and is removed when it is next touched. Entries nobody touches again
//! are reclaimed by the reaper ([`MemoryKv::spawn_reaper`]), which walks the
//! expiry index from the earliest deadline, so its cost is proportional to
//! what has expired, not to the size of the store.
//!
//! # Bound
//!
//! The store never holds more than `max_keys` entries. When a new key would
//! exceed that, it first purges every expired entry; if the store is still
//! full it evicts **the entry closest to expiry**, or, when no entry has a
//! TTL, **the oldest one** (least recently written). Why this order: an entry
//! with a TTL is declared temporary (a cache line, a counter, a rate-limit
//! timestamp) and the one nearest its deadline loses the least by going
//! early; entries without a TTL were meant to stay, so they go last, oldest
//! first. Every eviction is counted in `kv_memory_evictions_total`: a
//! non-zero rate means `max_keys` is too small (and, for rate limits, that
//! some clients are being let through early).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use futures::FutureExt;

use super::{gcra, ttl_millis, Gcra, KvError, KvStore, RateDecision, RateLimit};

/// How many expired entries the reaper removes per lock hold, so a mass
/// expiry does not stall requests behind one long critical section.
const REAP_BATCH: usize = 1024;

/// The in-memory [`KvStore`]. See the module docs for expiry and eviction.
pub struct MemoryKv {
    inner: Mutex<Inner>,
    max_keys: usize,
    key_prefix: String,
    /// The zero of the microsecond clock the GCRA timestamps use: monotonic,
    /// so a wall-clock step cannot hand out or withhold a burst.
    epoch: Instant,
}

struct Entry {
    value: Vec<u8>,
    expires_at: Option<Instant>,
    /// Unique per write; orders entries in the indexes.
    seq: u64,
}

#[derive(Default)]
struct Inner {
    map: HashMap<String, Entry>,
    /// Entries with a TTL, earliest deadline first.
    by_expiry: BTreeMap<(Instant, u64), String>,
    /// Entries without a TTL, oldest write first.
    by_age: BTreeMap<u64, String>,
    next_seq: u64,
}

impl Inner {
    fn unindex(&mut self, entry: &Entry) {
        match entry.expires_at {
            Some(at) => self.by_expiry.remove(&(at, entry.seq)),
            None => self.by_age.remove(&entry.seq),
        };
    }

    fn index(&mut self, key: &str, entry: &Entry) {
        match entry.expires_at {
            Some(at) => self.by_expiry.insert((at, entry.seq), key.to_owned()),
            None => self.by_age.insert(entry.seq, key.to_owned()),
        };
    }

    fn remove(&mut self, key: &str) -> Option<Entry> {
        let entry = self.map.remove(key)?;
        self.unindex(&entry);
        Some(entry)
    }

    /// The entry if it is live; an expired one is removed on the way.
    fn live(&mut self, key: &str, now: Instant) -> Option<&mut Entry> {
        let expired = match self.map.get(key) {
            None => return None,
            Some(entry) => entry.expires_at.is_some_and(|at| at <= now),
        };
        if expired {
            self.remove(key);
            return None;
        }
        self.map.get_mut(key)
    }

    /// Stores a fresh entry under `key`, replacing any previous one, making
    /// room first if the key is new and the store is full.
    fn insert(
        &mut self,
        key: &str,
        value: Vec<u8>,
        expires_at: Option<Instant>,
        now: Instant,
        max_keys: usize,
    ) {
        if self.remove(key).is_none() {
            self.make_room(now, max_keys);
        }
        self.next_seq += 1;
        let entry = Entry {
            value,
            expires_at,
            seq: self.next_seq,
        };
        self.index(key, &entry);
        self.map.insert(key.to_owned(), entry);
    }

    /// Brings the store below `max_keys` so one entry can be added.
    fn make_room(&mut self, now: Instant, max_keys: usize) {
        if self.map.len() < max_keys {
            return;
        }
        self.purge_expired(now, usize::MAX);
        while self.map.len() >= max_keys {
            let victim = match self.by_expiry.first_key_value() {
                Some((_, key)) => key.clone(),
                None => match self.by_age.first_key_value() {
                    Some((_, key)) => key.clone(),
                    // Both indexes empty means the map is empty too.
                    None => return,
                },
            };
            self.remove(&victim);
            metrics::counter!("kv_memory_evictions_total").increment(1);
            tracing::debug!(key = %victim, max_keys, "memory kv full, evicted a key");
        }
    }

    /// Removes up to `limit` expired entries; returns how many it removed.
    fn purge_expired(&mut self, now: Instant, limit: usize) -> usize {
        let mut removed = 0;
        while removed < limit {
            let key = match self.by_expiry.first_key_value() {
                Some(((at, _), key)) if *at <= now => key.clone(),
                _ => break,
            };
            self.remove(&key);
            removed += 1;
        }
        removed
    }
}

impl MemoryKv {
    /// A store holding at most `max_keys` entries (at least 1), each key
    /// stored under `key_prefix`. Call [`spawn_reaper`](Self::spawn_reaper)
    /// on the `Arc` to reclaim expired entries nobody reads again.
    pub fn new(max_keys: usize, key_prefix: impl Into<String>) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            max_keys: max_keys.max(1),
            key_prefix: key_prefix.into(),
            epoch: Instant::now(),
        }
    }

    /// Spawns the task that removes expired entries every `every`. It holds
    /// only a weak reference, so it ends on its own once the store is
    /// dropped. Must be called inside a tokio runtime.
    pub fn spawn_reaper(self: &Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        let weak: Weak<Self> = Arc::downgrade(self);
        let every = every.max(Duration::from_millis(1));
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(every);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                let Some(store) = weak.upgrade() else { break };
                store.purge_expired();
            }
        })
    }

    /// Removes every expired entry now; returns how many. The reaper calls
    /// this; it takes the lock in batches so requests interleave.
    pub fn purge_expired(&self) -> usize {
        let mut total = 0;
        loop {
            let now = Instant::now();
            let mut inner = self.lock();
            let removed = inner.purge_expired(now, REAP_BATCH);
            total += removed;
            if removed < REAP_BATCH {
                metrics::gauge!("kv_memory_keys").set(inner.map.len() as f64);
                return total;
            }
        }
    }

    /// How many entries are stored, counting expired ones not yet reclaimed.
    pub fn len(&self) -> usize {
        self.lock().map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn max_keys(&self) -> usize {
        self.max_keys
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // No code that can panic runs while the lock is held (no user
        // callbacks, no indexing that can fail), so a poisoned lock still
        // guards consistent data: keep serving rather than fail every call.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn key(&self, key: &str) -> String {
        format!("{}{}", self.key_prefix, key)
    }

    /// The microseconds since `epoch` that GCRA timestamps are counted in.
    fn micros_since_epoch(&self, now: Instant) -> i64 {
        i64::try_from(now.saturating_duration_since(self.epoch).as_micros()).unwrap_or(i64::MAX)
    }

    fn get_now(&self, key: &str) -> Option<Vec<u8>> {
        let key = self.key(key);
        let now = Instant::now();
        self.lock().live(&key, now).map(|e| e.value.clone())
    }

    fn set_now(&self, key: &str, value: &[u8], ttl: Option<Duration>) {
        let key = self.key(key);
        let now = Instant::now();
        let expires_at = ttl.and_then(|ttl| deadline(now, ttl));
        self.lock()
            .insert(&key, value.to_vec(), expires_at, now, self.max_keys);
    }

    fn set_if_absent_now(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> bool {
        let key = self.key(key);
        let now = Instant::now();
        let mut inner = self.lock();
        if inner.live(&key, now).is_some() {
            return false;
        }
        let expires_at = ttl.and_then(|ttl| deadline(now, ttl));
        inner.insert(&key, value.to_vec(), expires_at, now, self.max_keys);
        true
    }

    fn delete_now(&self, key: &str) -> bool {
        let key = self.key(key);
        let now = Instant::now();
        let mut inner = self.lock();
        // An expired entry did not "exist"; `live` removes it either way.
        if inner.live(&key, now).is_none() {
            return false;
        }
        inner.remove(&key).is_some()
    }

    fn incr_now(&self, key: &str, by: i64, ttl: Duration) -> Result<i64, KvError> {
        let key = self.key(key);
        let now = Instant::now();
        let mut inner = self.lock();
        let (current, expires_at) = match inner.live(&key, now) {
            None => (0, None),
            Some(entry) => (parse_counter(&entry.value)?, entry.expires_at),
        };
        let next = current
            .checked_add(by)
            .ok_or_else(|| KvError::Other("increment or decrement would overflow".into()))?;
        let value = next.to_string().into_bytes();
        match expires_at {
            // Updating in place keeps the deadline and the entry's place in
            // the expiry index.
            Some(_) => {
                if let Some(entry) = inner.map.get_mut(&key) {
                    entry.value = value;
                }
            }
            // Created now (or found without a TTL, as Redis' script does):
            // this is when the TTL is set.
            None => {
                let expires_at = deadline(now, ttl);
                inner.insert(&key, value, expires_at, now, self.max_keys);
            }
        }
        Ok(next)
    }

    fn ttl_now(&self, key: &str) -> Option<Duration> {
        let key = self.key(key);
        let now = Instant::now();
        let mut inner = self.lock();
        let at = inner.live(&key, now)?.expires_at?;
        Some(at.saturating_duration_since(now))
    }

    fn rate_limit_now(&self, key: &str, limit: RateLimit) -> Result<RateDecision, KvError> {
        let params = Gcra::new(limit)?;
        let key = self.key(key);
        let now = Instant::now();
        let now_us = self.micros_since_epoch(now);
        let mut inner = self.lock();
        // Stored like the Redis script stores it: the theoretical arrival
        // time as a decimal string; anything unparsable counts as no state.
        let tat = inner
            .live(&key, now)
            .and_then(|e| std::str::from_utf8(&e.value).ok()?.parse::<i64>().ok());
        let (decision, new_tat) = gcra(params, now_us, tat);
        if let Some(new_tat) = new_tat {
            let full_in = Duration::from_micros(u64::try_from(new_tat - now_us).unwrap_or(0));
            let expires_at = deadline(now, full_in);
            let value = new_tat.to_string().into_bytes();
            inner.insert(&key, value, expires_at, now, self.max_keys);
        }
        Ok(decision)
    }
}

/// `now + ttl` as Redis would round it; `None` (no expiry) only if the
/// deadline is beyond what `Instant` can represent.
fn deadline(now: Instant, ttl: Duration) -> Option<Instant> {
    now.checked_add(Duration::from_millis(ttl_millis(ttl)))
}

fn parse_counter(value: &[u8]) -> Result<i64, KvError> {
    std::str::from_utf8(value)
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
        .ok_or_else(|| KvError::Other("value is not an integer or out of range".into()))
}

impl KvStore for MemoryKv {
    fn name(&self) -> &'static str {
        "memory"
    }

    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Vec<u8>>, KvError>> {
        async move { Ok(self.get_now(key)) }.boxed()
    }

    fn set<'a>(
        &'a self,
        key: &'a str,
        value: &'a [u8],
        ttl: Option<Duration>,
    ) -> BoxFuture<'a, Result<(), KvError>> {
        async move {
            self.set_now(key, value, ttl);
            Ok(())
        }
        .boxed()
    }

    fn set_if_absent<'a>(
        &'a self,
        key: &'a str,
        value: &'a [u8],
        ttl: Option<Duration>,
    ) -> BoxFuture<'a, Result<bool, KvError>> {
        async move { Ok(self.set_if_absent_now(key, value, ttl)) }.boxed()
    }

    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<bool, KvError>> {
        async move { Ok(self.delete_now(key)) }.boxed()
    }

    fn incr<'a>(
        &'a self,
        key: &'a str,
        by: i64,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<i64, KvError>> {
        async move { self.incr_now(key, by, ttl) }.boxed()
    }

    fn ttl<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Duration>, KvError>> {
        async move { Ok(self.ttl_now(key)) }.boxed()
    }

    fn rate_limit<'a>(
        &'a self,
        key: &'a str,
        limit: RateLimit,
    ) -> BoxFuture<'a, Result<RateDecision, KvError>> {
        async move { self.rate_limit_now(key, limit) }.boxed()
    }

    fn ping(&self) -> BoxFuture<'_, Result<Duration, KvError>> {
        async move {
            let started = Instant::now();
            drop(self.lock());
            Ok(started.elapsed())
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LONG: Duration = Duration::from_secs(3600);

    #[test]
    fn a_full_store_evicts_the_entry_closest_to_expiry() {
        let kv = MemoryKv::new(3, "t:");
        kv.set_now("late", b"1", Some(LONG * 3));
        kv.set_now("soon", b"2", Some(LONG));
        kv.set_now("later", b"3", Some(LONG * 2));
        kv.set_now("new", b"4", None);
        assert_eq!(kv.len(), 3);
        assert_eq!(kv.get_now("soon"), None, "closest to expiry goes first");
        for key in ["late", "later", "new"] {
            assert!(kv.get_now(key).is_some(), "{key} should remain");
        }
    }

    #[test]
    fn entries_with_a_ttl_go_before_entries_without() {
        let kv = MemoryKv::new(2, "t:");
        kv.set_now("permanent", b"1", None);
        kv.set_now("temporary", b"2", Some(LONG * 100));
        kv.set_now("new", b"3", None);
        assert_eq!(kv.get_now("temporary"), None);
        assert!(kv.get_now("permanent").is_some());
        assert!(kv.get_now("new").is_some());
    }

    #[test]
    fn without_ttls_the_oldest_write_goes_first() {
        let kv = MemoryKv::new(3, "t:");
        kv.set_now("a", b"1", None);
        kv.set_now("b", b"2", None);
        kv.set_now("c", b"3", None);
        // Rewriting `a` makes it the newest.
        kv.set_now("a", b"1'", None);
        kv.set_now("d", b"4", None);
        assert_eq!(kv.get_now("b"), None);
        for key in ["a", "c", "d"] {
            assert!(kv.get_now(key).is_some(), "{key} should remain");
        }
    }

    #[test]
    fn expired_entries_are_purged_before_anything_live_is_evicted() {
        let kv = MemoryKv::new(3, "t:");
        kv.set_now("live1", b"1", Some(LONG));
        kv.set_now("gone1", b"x", Some(Duration::from_millis(1)));
        kv.set_now("gone2", b"x", Some(Duration::from_millis(1)));
        std::thread::sleep(Duration::from_millis(5));
        kv.set_now("live2", b"2", Some(LONG));
        kv.set_now("live3", b"3", None);
        assert_eq!(kv.len(), 3);
        for key in ["live1", "live2", "live3"] {
            assert!(kv.get_now(key).is_some(), "{key} should remain");
        }
    }

    #[test]
    fn overwriting_an_existing_key_at_capacity_evicts_nothing() {
        let kv = MemoryKv::new(2, "t:");
        kv.set_now("a", b"1", None);
        kv.set_now("b", b"2", None);
        kv.set_now("a", b"3", Some(LONG));
        assert!(kv.set_if_absent_now("c", b"4", None));
        assert_eq!(kv.len(), 2);
        assert_eq!(kv.get_now("a"), None, "a, with a TTL, was the one to go");
        assert!(kv.get_now("b").is_some());
    }

    #[test]
    fn the_bound_holds_under_every_kind_of_write() {
        let kv = MemoryKv::new(5, "t:");
        let limit = RateLimit::new(10, Duration::from_secs(10));
        for i in 0..100 {
            kv.set_now(&format!("s{i}"), b"v", None);
            kv.set_if_absent_now(&format!("n{i}"), b"v", Some(LONG));
            kv.incr_now(&format!("c{i}"), 1, LONG).expect("counter");
            kv.rate_limit_now(&format!("r{i}"), limit).expect("limit");
            assert!(kv.len() <= 5, "len {} after round {i}", kv.len());
        }
    }

    #[test]
    fn indexes_stay_in_step_with_the_map() {
        let kv = MemoryKv::new(4, "t:");
        for i in 0..50 {
            let ttl = (i % 3 == 0).then_some(LONG);
            kv.set_now(&format!("k{}", i % 7), b"v", ttl);
            kv.incr_now(&format!("c{}", i % 5), 1, LONG)
                .expect("counter");
            kv.delete_now(&format!("k{}", i % 4));
            let inner = kv.lock();
            assert_eq!(
                inner.map.len(),
                inner.by_expiry.len() + inner.by_age.len(),
                "round {i}"
            );
        }
    }

    #[test]
    fn incr_rejects_a_value_that_is_not_a_counter() {
        let kv = MemoryKv::new(10, "t:");
        kv.set_now("text", b"hello", None);
        assert!(matches!(
            kv.incr_now("text", 1, LONG),
            Err(KvError::Other(_))
        ));
        kv.set_now("max", i64::MAX.to_string().as_bytes(), None);
        assert!(matches!(
            kv.incr_now("max", 1, LONG),
            Err(KvError::Other(_))
        ));
    }

    #[test]
    fn keys_are_stored_under_the_prefix() {
        let kv = MemoryKv::new(10, "app:");
        kv.set_now("k", b"v", None);
        assert!(kv.lock().map.contains_key("app:k"));
    }
}
