//! The Redis Streams transport, for replicas sharing one Redis: the relays
//! append events to one stream (`<key_prefix>events`), and each subscribing
//! service reads it through its own consumer group (named after the
//! service), so every event is settled once per service however many
//! replicas run. Each process is one consumer in each group, named by its
//! stable instance id (`instance_id`), so a restarted process is the same
//! consumer: it first settles the entries it had been handed and not
//! acknowledged (its own pending entries, read from id `0`) before reading
//! new ones, at once rather than after a take-over. Entries another
//! consumer left pending are taken over (`XAUTOCLAIM`) once they have been
//! idle for `events.stream_claim_idle`, and a consumer with nothing pending
//! that has not read for that long is gone: it is removed from the group
//! (`XGROUP DELCONSUMER`). An entry is acknowledged (`XACK`) only once
//! settled: applied, or kept as a dead letter.
//!
//! The stream is trimmed (`XTRIM MINID`) below the oldest entry any group
//! still needs, so it does not grow without bound.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use fred::clients::Client;
use fred::interfaces::{ClientLike, StreamsInterface};
use fred::prelude::{Builder, Config, ReconnectPolicy, Value};
use fred::types::streams::XID;
use futures::StreamExt;
use time::OffsetDateTime;
use tokio::task::JoinHandle;

use super::delivery::{Attempt, Settled, Settler};
use super::outbox::OutboxRecord;
use super::Event;
use crate::kv::redis::split_protocol;
use crate::kv::RedisSettings;

/// How long one `XREADGROUP` waits for new entries.
const BLOCK: Duration = Duration::from_secs(1);

/// How long to wait after Redis failed before reading again.
const TROUBLE_PAUSE: Duration = Duration::from_secs(1);

/// How often the stream is trimmed.
const TRIM_EVERY: Duration = Duration::from_secs(60);

pub struct RedisStream {
    client: Client,
    key: String,
    consumer: String,
    claim_idle: Duration,
}

impl RedisStream {
    /// Builds the client and connects in the background: Redis down at boot
    /// is an outage the relays and consumers wait out, not a dead process.
    /// `instance` names this process's consumer in every group.
    pub fn start(
        settings: &RedisSettings,
        instance: &str,
        claim_idle: Duration,
    ) -> Result<Self, String> {
        let client = build_client(settings, settings.command_timeout)?;
        connect_in_background(&client);
        Ok(Self {
            client,
            key: format!("{}events", settings.key_prefix),
            consumer: instance.to_owned(),
            claim_idle,
        })
    }

    /// Appends the events to the stream, in order.
    pub async fn append(&self, records: &[OutboxRecord]) -> Result<(), String> {
        for record in records {
            let json = record.event.to_json().map_err(|e| e.to_string())?;
            let fields = vec![
                ("topic", record.event.topic.as_str().to_owned()),
                ("event", json),
            ];
            let _: String = self
                .client
                .xadd(&self.key, false, None::<()>, XID::Auto, fields)
                .await
                .map_err(|e| format!("XADD {}: {e}", self.key))?;
            metrics::counter!("events_published_total", "topic" => record.event.topic.label())
                .increment(1);
        }
        Ok(())
    }

    /// Starts the consumer of one subscriber's group, on a connection of its
    /// own (its reads block).
    pub fn spawn_consumer(&self, settler: Settler, batch: u32) -> JoinHandle<()> {
        let consumer = Consumer {
            client: self.client.clone_new(),
            key: self.key.clone(),
            group: settler.subscription.subscriber.to_owned(),
            name: self.consumer.clone(),
            claim_idle: self.claim_idle,
            batch: u64::from(batch.max(1)),
            settler,
        };
        connect_in_background(&consumer.client);
        tokio::spawn(consumer.run())
    }

    /// For `/admin/events`: entries the group has been handed and not
    /// acknowledged plus those not yet handed, and the age of the oldest.
    pub async fn backlog(&self, group: &str) -> Result<(u64, Option<Duration>), String> {
        let groups: Value = self
            .client
            .xinfo_groups(&self.key)
            .await
            .map_err(|e| e.to_string())?;
        let Some(info) = list(groups)
            .into_iter()
            .map(fields)
            .find(|f| text(f.get("name")) == Some(group.to_owned()))
        else {
            return Ok((0, None));
        };
        let pending = integer(info.get("pending")).unwrap_or(0);
        let lag = integer(info.get("lag")).unwrap_or(0);
        let summary: Value = self
            .client
            .xpending(&self.key, group, ())
            .await
            .map_err(|e| e.to_string())?;
        let oldest_pending = list(summary).get(1).and_then(|v| text(Some(v)));
        let oldest_undelivered = match text(info.get("last-delivered-id")) {
            Some(last) if lag > 0 => {
                let next: Value = self
                    .client
                    .xrange(&self.key, format!("({last}"), "+", Some(1))
                    .await
                    .map_err(|e| e.to_string())?;
                list(next)
                    .into_iter()
                    .next()
                    .and_then(|entry| list(entry).into_iter().next())
                    .and_then(|id| text(Some(&id)))
            }
            _ => None,
        };
        let oldest = [oldest_pending, oldest_undelivered]
            .into_iter()
            .flatten()
            .filter_map(|id| id_millis(&id))
            .min()
            .map(age_of_millis);
        Ok((u64::try_from(pending + lag).unwrap_or(0), oldest))
    }

    /// Deletes entries every group is done with, every [`TRIM_EVERY`].
    pub fn spawn_trimmer(&self, mut stop: tokio::sync::watch::Receiver<bool>) {
        let client = self.client.clone();
        let key = self.key.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(TRIM_EVERY);
            loop {
                tokio::select! {
                    _ = every.tick() => {}
                    _ = super::stopped(&mut stop) => return,
                }
                if let Err(err) = trim(&client, &key).await {
                    tracing::debug!(error = %err, "cannot trim the event stream");
                }
            }
        });
    }
}

/// `XTRIM MINID` at the oldest entry a group still needs: its oldest pending
/// entry, or the one after its last delivered.
async fn trim(client: &Client, key: &str) -> Result<(), String> {
    let groups: Value = client.xinfo_groups(key).await.map_err(|e| e.to_string())?;
    let mut keep_from: Option<(u64, u64)> = None;
    for info in list(groups).into_iter().map(fields) {
        let Some(name) = text(info.get("name")) else {
            continue;
        };
        let summary: Value = client
            .xpending(key, name.as_str(), ())
            .await
            .map_err(|e| e.to_string())?;
        let needed = list(summary)
            .get(1)
            .and_then(|v| text(Some(v)))
            .or_else(|| text(info.get("last-delivered-id")))
            .and_then(|id| parse_id(&id));
        let Some(needed) = needed else { return Ok(()) };
        keep_from = Some(keep_from.map_or(needed, |k| k.min(needed)));
    }
    if let Some((ms, seq)) = keep_from {
        let _: Value = client
            .xtrim(key, ("MINID", "~", format!("{ms}-{seq}")))
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

struct Consumer {
    client: Client,
    key: String,
    group: String,
    name: String,
    claim_idle: Duration,
    batch: u64,
    settler: Settler,
}

impl Consumer {
    async fn run(self) {
        let mut stop = self.settler.stop.clone();
        let mut group_ready = false;
        let mut own_pending_done = false;
        let mut last_claim: Option<Instant> = None;
        loop {
            if *stop.borrow() {
                break;
            }
            let step = async {
                if !group_ready {
                    self.create_group().await?;
                    group_ready = true;
                }
                if !own_pending_done {
                    self.settle_own_pending().await?;
                    own_pending_done = true;
                }
                if last_claim.is_none_or(|at| at.elapsed() >= self.claim_idle / 2) {
                    last_claim = Some(Instant::now());
                    let stale = self.reclaim().await?;
                    self.settle_all(stale).await?;
                    self.remove_gone_consumers().await?;
                }
                let fresh = self.read().await?;
                self.settle_all(fresh).await
            };
            let outcome = tokio::select! {
                outcome = step => outcome,
                _ = super::stopped(&mut stop) => break,
            };
            if let Err(err) = outcome {
                tracing::warn!(group = %self.group, error = %err, "event stream read failed");
                tokio::select! {
                    _ = tokio::time::sleep(TROUBLE_PAUSE) => {}
                    _ = super::stopped(&mut stop) => break,
                }
            }
        }
        let _ = self.client.quit().await;
    }

    /// Creates the group at the start of the stream (an existing one is kept).
    async fn create_group(&self) -> Result<(), String> {
        let created: Result<Value, _> = self
            .client
            .xgroup_create(&self.key, self.group.as_str(), "0", true)
            .await;
        match created {
            Ok(_) => Ok(()),
            Err(err) if err.details().contains("BUSYGROUP") => Ok(()),
            Err(err) => Err(format!("XGROUP CREATE {} {}: {err}", self.key, self.group)),
        }
    }

    /// Takes over entries idle past `claim_idle` (their consumer is presumed dead).
    async fn reclaim(&self) -> Result<Vec<(String, Option<Event>)>, String> {
        let idle = u64::try_from(self.claim_idle.as_millis()).unwrap_or(u64::MAX);
        let mut claimed = Vec::new();
        let mut cursor = "0-0".to_owned();
        loop {
            let reply: Value = self
                .client
                .xautoclaim(
                    &self.key,
                    self.group.as_str(),
                    self.name.as_str(),
                    idle,
                    cursor.as_str(),
                    Some(self.batch),
                    false,
                )
                .await
                .map_err(|e| format!("XAUTOCLAIM: {e}"))?;
            let mut parts = list(reply).into_iter();
            let next = parts
                .next()
                .and_then(|v| text(Some(&v)))
                .unwrap_or_else(|| "0-0".into());
            claimed.extend(
                parts
                    .next()
                    .map(list)
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(entry),
            );
            if next == "0-0" || claimed.len() as u64 >= self.batch {
                break;
            }
            cursor = next;
        }
        if !claimed.is_empty() {
            tracing::info!(group = %self.group, entries = claimed.len(), "took over pending events from an idle consumer");
        }
        Ok(claimed)
    }

    /// At start: the entries this consumer (this instance, before a crash
    /// or restart) was handed and never acknowledged, settled before
    /// anything new.
    async fn settle_own_pending(&self) -> Result<(), String> {
        let mut total = 0;
        loop {
            let own = self.read_from("0").await?;
            if own.is_empty() {
                break;
            }
            total += own.len();
            // Every entry read is acknowledged once settled; one not settled
            // (the process is stopping) stays pending: read no further.
            self.settle_all(own).await?;
            if *self.settler.stop.borrow() {
                break;
            }
        }
        if total > 0 {
            tracing::info!(group = %self.group, entries = total, "settled the events this instance had pending before it restarted");
        }
        Ok(())
    }

    /// Removes consumers that are gone: nothing pending (a dead one's
    /// entries have been taken over by now) and no read for `claim_idle`.
    /// Live consumers read every [`BLOCK`], so they are never idle that long.
    async fn remove_gone_consumers(&self) -> Result<(), String> {
        let consumers: Value = self
            .client
            .xinfo_consumers(&self.key, self.group.as_str())
            .await
            .map_err(|e| format!("XINFO CONSUMERS: {e}"))?;
        let idle_limit = i64::try_from(self.claim_idle.as_millis()).unwrap_or(i64::MAX);
        for info in list(consumers).into_iter().map(fields) {
            let Some(name) = text(info.get("name")) else {
                continue;
            };
            let pending = integer(info.get("pending")).unwrap_or(1);
            let idle = integer(info.get("idle")).unwrap_or(0);
            if name == self.name || pending > 0 || idle < idle_limit {
                continue;
            }
            let _: Value = self
                .client
                .xgroup_delconsumer(&self.key, self.group.as_str(), name.as_str())
                .await
                .map_err(|e| format!("XGROUP DELCONSUMER: {e}"))?;
            tracing::info!(group = %self.group, consumer = %name, idle_ms = idle, "removed a consumer that is gone");
        }
        Ok(())
    }

    /// New entries for this group, waiting up to [`BLOCK`].
    async fn read(&self) -> Result<Vec<(String, Option<Event>)>, String> {
        self.read_from(">").await
    }

    /// `>`: entries never handed to anyone (blocking up to [`BLOCK`]); `0`:
    /// this consumer's own pending entries, from the oldest.
    async fn read_from(&self, from: &str) -> Result<Vec<(String, Option<Event>)>, String> {
        let block = (from == ">").then(|| u64::try_from(BLOCK.as_millis()).unwrap_or(1000));
        let reply: Value = self
            .client
            .xreadgroup(
                self.group.as_str(),
                self.name.as_str(),
                Some(self.batch),
                block,
                false,
                &self.key,
                from,
            )
            .await
            .map_err(|e| format!("XREADGROUP: {e}"))?;
        // RESP3: {stream: [entries]}; RESP2: [[stream, [entries]]].
        let entries = match reply {
            Value::Map(map) => map.inner().into_iter().next().map(|(_, v)| v),
            other => list(other)
                .into_iter()
                .next()
                .and_then(|s| list(s).into_iter().nth(1)),
        };
        Ok(entries
            .map(list)
            .unwrap_or_default()
            .into_iter()
            .filter_map(entry)
            .collect())
    }

    /// Settles the entries and acknowledges each settled one: the wanted
    /// events first in one batch (one message to the subscriber), then
    /// those whose first attempt failed, on their own, up to the
    /// subscriber's concurrency at once.
    async fn settle_all(&self, entries: Vec<(String, Option<Event>)>) -> Result<(), String> {
        let wanted: Vec<Event> = entries
            .iter()
            .filter_map(|(_, event)| event.clone())
            .filter(|event| self.settler.subscription.wants(&event.topic))
            .collect();
        let mut attempts: HashMap<uuid::Uuid, Attempt> = wanted
            .iter()
            .map(|e| e.id)
            .zip(self.settler.attempt_all(&wanted).await)
            .collect();
        let concurrency = self.settler.subscription.concurrency;
        let results: Vec<Result<(), String>> = futures::stream::iter(entries)
            .map(|(id, event)| {
                let first = event
                    .as_ref()
                    .and_then(|e| attempts.remove(&e.id))
                    .unwrap_or(Attempt::NotTried);
                self.settle_one(id, event, first)
            })
            .buffer_unordered(concurrency)
            .collect()
            .await;
        results.into_iter().collect()
    }

    async fn settle_one(
        &self,
        id: String,
        event: Option<Event>,
        first: Attempt,
    ) -> Result<(), String> {
        let settled = match event {
            None => {
                tracing::error!(group = %self.group, entry = %id, "unreadable event in the stream; skipped");
                true
            }
            Some(event) if !self.settler.subscription.wants(&event.topic) => true,
            Some(event) => self.settler.settle_after(event, first).await != Settled::Abandoned,
        };
        if settled {
            let _: Value = self
                .client
                .xack(&self.key, self.group.as_str(), id.as_str())
                .await
                .map_err(|e| format!("XACK: {e}"))?;
        }
        Ok(())
    }
}

fn build_client(settings: &RedisSettings, command_timeout: Duration) -> Result<Client, String> {
    let (url, version) = split_protocol(&settings.url).map_err(|e| e.to_string())?;
    let mut config =
        Config::from_url(&url).map_err(|e| format!("invalid redis url: {}", e.details()))?;
    config.version = version;
    config.fail_fast = false;
    let mut builder = Builder::from_config(config);
    // Blocking reads wait BLOCK on the server: the command timeout covers that too.
    let timeout = command_timeout.max(Duration::from_millis(1)) + BLOCK;
    builder
        .with_connection_config(|c| {
            c.connection_timeout = settings.connect_timeout.max(Duration::from_millis(1));
            c.max_command_attempts = 1;
        })
        .with_performance_config(|p| p.default_command_timeout = timeout)
        .set_policy(ReconnectPolicy::new_exponential(0, 100, 30_000, 2));
    builder
        .build()
        .map_err(|e| format!("invalid redis settings: {}", e.details()))
}

fn connect_in_background(client: &Client) {
    let client = client.clone();
    tokio::spawn(async move {
        if let Err(err) = client.init().await {
            tracing::warn!(error = %err, "event stream: cannot connect to redis yet");
        }
    });
}

/// One stream entry: its id and the event in it (`None` if unreadable).
/// Public for the fuzz target `stream_entries`.
pub fn entry(value: Value) -> Option<(String, Option<Event>)> {
    let mut parts = list(value).into_iter();
    let id = text(parts.next().as_ref())?;
    let fields = fields(parts.next()?);
    let event = text(fields.get("event")).and_then(|json| Event::from_json(&json).ok());
    Some((id, event))
}

fn list(value: Value) -> Vec<Value> {
    match value {
        Value::Array(items) => items,
        Value::Null => Vec::new(),
        other => vec![other],
    }
}

/// A RESP3 map or a RESP2 flat list of pairs, by key.
fn fields(value: Value) -> HashMap<String, Value> {
    match value {
        Value::Map(map) => map
            .inner()
            .into_iter()
            .filter_map(|(k, v)| k.as_str().map(|k| (k.to_string(), v)))
            .collect(),
        other => {
            let items = list(other);
            let mut out = HashMap::new();
            let mut it = items.into_iter();
            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                if let Some(k) = text(Some(&k)) {
                    out.insert(k, v);
                }
            }
            out
        }
    }
}

fn text(value: Option<&Value>) -> Option<String> {
    value.and_then(|v| v.as_string())
}

fn integer(value: Option<&Value>) -> Option<i64> {
    value.and_then(|v| v.as_i64())
}

/// `1700000000000-3` → `(1700000000000, 3)`.
fn parse_id(id: &str) -> Option<(u64, u64)> {
    let (ms, seq) = id.split_once('-')?;
    Some((ms.parse().ok()?, seq.parse().ok()?))
}

fn id_millis(id: &str) -> Option<u64> {
    parse_id(id).map(|(ms, _)| ms)
}

fn age_of_millis(ms: u64) -> Duration {
    let now =
        u64::try_from(OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000).unwrap_or(0);
    Duration::from_millis(now.saturating_sub(ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_ids_parse() {
        assert_eq!(parse_id("1700000000000-3"), Some((1_700_000_000_000, 3)));
        assert_eq!(parse_id("nonsense"), None);
    }

    #[test]
    fn fields_read_both_protocols() {
        let resp2 = Value::Array(vec![
            "name".into(),
            "billing".into(),
            "pending".into(),
            Value::Integer(2),
        ]);
        let f = fields(resp2);
        assert_eq!(text(f.get("name")).as_deref(), Some("billing"));
        assert_eq!(integer(f.get("pending")), Some(2));
    }
}
