//! The relay of one producing service: claims committed outbox rows, hands
//! them to the bus, and marks them published once they are safe elsewhere
//! (in-process: settled by every subscriber; Redis: on the stream). It wakes
//! on every commit in this process and polls every `relay_interval` for the
//! rest (other replicas' commits, leases that ran out). Hourly it deletes
//! published rows past `outbox_retention`. Rows it holds but has not
//! published are given back (their lease cleared) when the bus refuses them
//! and when the relay stops, so a graceful restart or another replica takes
//! them at once instead of after `claim_lease`. A killed relay cannot give
//! anything back: its claims name this instance, and the same instance,
//! restarted, ends them before its first claim (PostgreSQL; on SQLite the
//! claim cursor starts again with the process).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use supervision::ServiceHandle;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::bus::{BusMsg, EventsSettings, Published};
use super::outbox::Outbox;

/// How many in-process events one relay keeps on the bus's queues at most;
/// past it, events wait in the outbox (on disk) rather than in memory.
const MAX_IN_FLIGHT: usize = 10_000;

/// How often published rows past their retention are deleted.
const PURGE_EVERY: Duration = Duration::from_secs(60 * 60);

/// How long a stopping relay may spend giving its rows back.
const GIVE_BACK_TIMEOUT: Duration = Duration::from_secs(2);

/// How long to wait before claiming again after the bus or the database failed.
const TROUBLE_PAUSE: Duration = Duration::from_secs(1);

pub(super) fn spawn(
    outbox: Outbox,
    bus: ServiceHandle<BusMsg>,
    settings: EventsSettings,
    instance: String,
    stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(run(outbox, bus, settings, instance, stop))
}

struct Relay {
    outbox: Outbox,
    bus: ServiceHandle<BusMsg>,
    settings: EventsSettings,
    /// This instance's name on the leases it takes ([`crate::instance`]).
    instance: String,
    /// Whether the leases a previous run of this instance left were ended.
    taken_back: bool,
    done_tx: mpsc::UnboundedSender<i64>,
    /// Rows this relay has claimed and not yet marked published (in-process:
    /// on the bus's queues until every subscriber settled them).
    claimed: BTreeSet<i64>,
}

async fn run(
    outbox: Outbox,
    bus: ServiceHandle<BusMsg>,
    settings: EventsSettings,
    instance: String,
    mut stop: watch::Receiver<bool>,
) {
    let (done_tx, mut done_rx) = mpsc::unbounded_channel();
    let mut relay = Relay {
        outbox,
        bus,
        settings,
        instance,
        taken_back: false,
        done_tx,
        claimed: BTreeSet::new(),
    };
    let mut last_purge = Instant::now();
    let mut poll = tokio::time::interval(relay.settings.relay_interval);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = super::stopped(&mut stop) => return relay.give_back().await,
            Some(seq) = done_rx.recv() => {
                let mut settled = vec![seq];
                while let Ok(seq) = done_rx.try_recv() {
                    settled.push(seq);
                }
                relay.mark_published(&settled).await;
                continue;
            }
            _ = relay.outbox.wait_committed() => {}
            _ = poll.tick() => {}
        }
        if !relay.pump().await {
            tokio::select! {
                _ = super::stopped(&mut stop) => return relay.give_back().await,
                _ = tokio::time::sleep(TROUBLE_PAUSE) => {}
            }
        }
        if last_purge.elapsed() >= PURGE_EVERY {
            last_purge = Instant::now();
            relay.purge().await;
        }
    }
}

impl Relay {
    /// Claims and publishes until the outbox has nothing more to hand on (or
    /// the in-process queues are full). `false` on trouble.
    async fn pump(&mut self) -> bool {
        if !self.taken_back && !self.take_back().await {
            return false;
        }
        loop {
            if self.claimed.len() >= MAX_IN_FLIGHT {
                return true;
            }
            let records = match self
                .outbox
                .claim(
                    &self.instance,
                    self.settings.relay_batch,
                    self.settings.claim_lease,
                )
                .await
            {
                Ok(records) => records,
                Err(err) => {
                    tracing::warn!(service = self.outbox.service(), error = %err, "cannot read the outbox");
                    return false;
                }
            };
            if records.is_empty() {
                return true;
            }
            let full_batch = records.len() >= self.settings.relay_batch as usize;
            let seqs: Vec<i64> = records.iter().map(|r| r.seq).collect();
            self.claimed.extend(&seqs);
            let done = self.done_tx.clone();
            let published = self
                .bus
                .call(|reply| BusMsg::Publish {
                    records,
                    done,
                    reply,
                })
                .await;
            match published {
                // Marked published as each is settled (`done`).
                Ok(Ok(Published::Queued(_))) => {}
                Ok(Ok(Published::Appended)) => self.mark_published(&seqs).await,
                Ok(Err(err)) => {
                    tracing::warn!(service = self.outbox.service(), error = %err, "the event bus could not publish");
                    self.release(&seqs).await;
                    return false;
                }
                Err(err) => {
                    tracing::warn!(service = self.outbox.service(), error = %err, "the event bus is not taking events");
                    self.release(&seqs).await;
                    return false;
                }
            }
            if !full_batch {
                return true;
            }
        }
    }

    /// Before the first claim: ends the leases this instance held when it
    /// last stopped (killed before it could give them back).
    async fn take_back(&mut self) -> bool {
        match self.outbox.take_back(&self.instance).await {
            Ok(rows) => {
                if rows > 0 {
                    tracing::info!(
                        service = self.outbox.service(),
                        rows,
                        "took back this instance's outbox claims"
                    );
                }
                self.taken_back = true;
                true
            }
            Err(err) => {
                tracing::warn!(service = self.outbox.service(), error = %err, "cannot take back this instance's outbox claims");
                false
            }
        }
    }

    async fn mark_published(&mut self, seqs: &[i64]) {
        for seq in seqs {
            self.claimed.remove(seq);
        }
        // If this fails the rows are claimed and delivered again after their
        // lease: subscribers ignore what they have applied.
        if let Err(err) = self.outbox.mark_published(seqs).await {
            tracing::warn!(service = self.outbox.service(), error = %err, "cannot mark outbox rows published");
        }
    }

    /// Clears the lease of rows the bus did not take, so they are claimed
    /// again on the next try rather than after `claim_lease`.
    async fn release(&mut self, seqs: &[i64]) {
        for seq in seqs {
            self.claimed.remove(seq);
        }
        if let Err(err) = self.outbox.release(seqs).await {
            // Their lease runs out by itself.
            tracing::debug!(service = self.outbox.service(), error = %err, "cannot release outbox rows");
        }
    }

    /// At stop: gives back every row not published yet (bounded, so a
    /// database that is down does not hold up the shutdown).
    async fn give_back(mut self) {
        let seqs: Vec<i64> = std::mem::take(&mut self.claimed).into_iter().collect();
        if seqs.is_empty() {
            return;
        }
        let count = seqs.len();
        match tokio::time::timeout(GIVE_BACK_TIMEOUT, self.release(&seqs)).await {
            Ok(()) => tracing::info!(
                service = self.outbox.service(),
                events = count,
                "unsettled events given back to the outbox"
            ),
            Err(_) => tracing::warn!(
                service = self.outbox.service(),
                events = count,
                "could not give events back in time; they wait for their lease"
            ),
        }
    }

    async fn purge(&self) {
        match self
            .outbox
            .purge_published(self.settings.outbox_retention)
            .await
        {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                service = self.outbox.service(),
                deleted = n,
                "purged published outbox rows"
            ),
            Err(err) => {
                tracing::warn!(service = self.outbox.service(), error = %err, "cannot purge the outbox")
            }
        }
    }
}
