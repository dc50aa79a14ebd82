//! The relay of one producing service: claims committed outbox rows, hands
//! them to the bus, and marks them published once they are safe elsewhere
//! (in-process: settled by every subscriber; Redis: on the stream). It wakes
//! on every commit in this process and polls every `relay_interval` for the
//! rest (other replicas' commits, leases that ran out). Hourly it deletes
//! published rows past `outbox_retention`.

use std::time::{Duration, Instant};

use supervision::ServiceHandle;
use tokio::sync::{mpsc, watch};

use super::bus::{BusMsg, EventsSettings, Published};
use super::outbox::Outbox;

/// How many in-process events one relay keeps on the bus's queues at most;
/// past it, events wait in the outbox (on disk) rather than in memory.
const MAX_IN_FLIGHT: usize = 10_000;

/// How often published rows past their retention are deleted.
const PURGE_EVERY: Duration = Duration::from_secs(60 * 60);

/// How long to wait before claiming again after the bus or the database failed.
const TROUBLE_PAUSE: Duration = Duration::from_secs(1);

pub(super) fn spawn(
    outbox: Outbox,
    bus: ServiceHandle<BusMsg>,
    settings: EventsSettings,
    stop: watch::Receiver<bool>,
) {
    tokio::spawn(run(outbox, bus, settings, stop));
}

struct Relay {
    outbox: Outbox,
    bus: ServiceHandle<BusMsg>,
    settings: EventsSettings,
    done_tx: mpsc::UnboundedSender<i64>,
    /// Events handed to the in-process bus and not yet settled.
    in_flight: usize,
}

async fn run(
    outbox: Outbox,
    bus: ServiceHandle<BusMsg>,
    settings: EventsSettings,
    mut stop: watch::Receiver<bool>,
) {
    let (done_tx, mut done_rx) = mpsc::unbounded_channel();
    let mut relay = Relay {
        outbox,
        bus,
        settings,
        done_tx,
        in_flight: 0,
    };
    let mut last_purge = Instant::now();
    let mut poll = tokio::time::interval(relay.settings.relay_interval);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = super::stopped(&mut stop) => return,
            Some(seq) = done_rx.recv() => {
                let mut settled = vec![seq];
                while let Ok(seq) = done_rx.try_recv() {
                    settled.push(seq);
                }
                relay.in_flight = relay.in_flight.saturating_sub(settled.len());
                relay.mark_published(&settled).await;
                continue;
            }
            _ = relay.outbox.wait_committed() => {}
            _ = poll.tick() => {}
        }
        if !relay.pump().await {
            tokio::select! {
                _ = super::stopped(&mut stop) => return,
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
        loop {
            if self.in_flight >= MAX_IN_FLIGHT {
                return true;
            }
            let records = match self
                .outbox
                .claim(self.settings.relay_batch, self.settings.claim_lease)
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
                Ok(Ok(Published::Queued(accepted))) => self.in_flight += accepted,
                Ok(Ok(Published::Appended)) => self.mark_published(&seqs).await,
                Ok(Err(err)) => {
                    // The claimed rows are taken again when their lease runs out.
                    tracing::warn!(service = self.outbox.service(), error = %err, "the event bus could not publish");
                    return false;
                }
                Err(err) => {
                    tracing::warn!(service = self.outbox.service(), error = %err, "the event bus is not taking events");
                    return false;
                }
            }
            if !full_batch {
                return true;
            }
        }
    }

    async fn mark_published(&self, seqs: &[i64]) {
        // If this fails the rows are claimed and delivered again after their
        // lease: subscribers ignore what they have applied.
        if let Err(err) = self.outbox.mark_published(seqs).await {
            tracing::warn!(service = self.outbox.service(), error = %err, "cannot mark outbox rows published");
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
