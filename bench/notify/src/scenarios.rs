//! The scenarios (closed-loop `send`, `send-bulk`, open-loop latency) and
//! the row each reports: accepted/s, delivered/s at the sink, request and
//! accept-to-delivery percentiles, failures, duplicates and missing
//! deliveries, and the CPU use while loading and while draining.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use time::OffsetDateTime;

use crate::api::{Api, Channel, Sent};
use crate::sinks::{first_arrivals, Mark, Sinks};
use crate::stats::{percentile, sorted_ms, CpuSnapshot};

pub struct Bench {
    pub api: Api,
    pub sinks: Sinks,
    pub server_pid: Option<u32>,
    /// How long a wait for deliveries goes on with none arriving.
    pub idle: Duration,
}

/// One line of the table, with the notes printed under the scenario.
#[derive(Default)]
pub struct Row {
    pub name: String,
    pub accepted: usize,
    pub failed: usize,
    pub accepted_per_s: Option<f64>,
    pub delivered_per_s: Option<f64>,
    /// p50, p99 of the POSTs as the client timed them (ms).
    pub request: (Option<f64>, Option<f64>),
    /// p50, p99, max from `created_at` to arrival at the sink (ms).
    pub latency: Option<(f64, f64, f64)>,
    pub delivered: usize,
    pub duplicates: usize,
    pub missing: usize,
    pub notes: Vec<String>,
}

/// The instants of the sinks mapped onto the wall clock the server stamps
/// `created_at` with (one clock, one machine).
fn wall(at: Instant) -> OffsetDateTime {
    let (now_instant, now_wall) = (Instant::now(), OffsetDateTime::now_utc());
    if at <= now_instant {
        now_wall - (now_instant - at)
    } else {
        now_wall + (at - now_instant)
    }
}

/// Deliveries a second: (n − 1) over the time from the first arrival to
/// the last.
fn delivery_rate(arrivals: &[(String, Instant)]) -> Option<f64> {
    let first = arrivals.iter().map(|a| a.1).min()?;
    let last = arrivals.iter().map(|a| a.1).max()?;
    let span = (last - first).as_secs_f64();
    (arrivals.len() > 1 && span > 0.0).then(|| (arrivals.len() - 1) as f64 / span)
}

impl Bench {
    fn cpu(&self) -> CpuSnapshot {
        CpuSnapshot::take(self.server_pid)
    }

    /// Closed loop: `concurrency` clients `POST /send` for `duration`.
    pub async fn send(
        &self,
        channel: Channel,
        concurrency: usize,
        duration: Duration,
    ) -> Result<Row> {
        let mark = self.sinks.mark(channel);
        let cpu = self.cpu();
        let started = Instant::now();
        let deadline = started + duration;
        let clients: Vec<_> = (0..concurrency)
            .map(|c| {
                let api = self.api.clone();
                tokio::spawn(async move {
                    let mut sent = Vec::new();
                    while Instant::now() < deadline {
                        sent.push(api.send(channel, &format!("send-{c}-{}", sent.len())).await);
                    }
                    sent
                })
            })
            .collect();
        let mut sent = Vec::new();
        for client in clients {
            sent.extend(client.await.context("a send client")?);
        }
        let load = started.elapsed();
        let name = format!(
            "send {} (closed loop, {concurrency} clients)",
            channel.as_str()
        );
        let mut row = self
            .settle_sends(name, channel, mark, &sent, load, cpu)
            .await;
        row.latency = None; // queueing behind a closed loop's backlog: see the latency scenarios
        Ok(row)
    }

    /// Open loop: `rate` `POST /send` a second for `duration`, each on its
    /// own task so a slow answer does not delay the next.
    pub async fn latency(&self, channel: Channel, rate: u64, duration: Duration) -> Result<Row> {
        let mark = self.sinks.mark(channel);
        let cpu = self.cpu();
        let total = rate * duration.as_secs();
        let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / rate.max(1) as f64));
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let started = Instant::now();
        let mut tasks = Vec::new();
        for i in 0..total {
            ticks.tick().await;
            let api = self.api.clone();
            tasks.push(tokio::spawn(async move {
                api.send(channel, &format!("lat-{i}")).await
            }));
        }
        let issued = started.elapsed();
        let mut sent = Vec::new();
        for task in tasks {
            sent.push(task.await.context("a send task")?);
        }
        let load = started.elapsed();
        let name = format!(
            "send {} (open loop {rate}/s, {} s)",
            channel.as_str(),
            duration.as_secs()
        );
        let mut row = self
            .settle_sends(name, channel, mark, &sent, load, cpu)
            .await;
        row.notes.insert(
            0,
            format!(
                "issued {total} in {:.2} s ({:.0}/s)",
                issued.as_secs_f64(),
                total as f64 / issued.as_secs_f64()
            ),
        );
        Ok(row)
    }

    /// Waits for what `sent` accepted to arrive, and reports on it.
    async fn settle_sends(
        &self,
        name: String,
        channel: Channel,
        mark: Mark,
        sent: &[Sent],
        load: Duration,
        cpu: CpuSnapshot,
    ) -> Row {
        let accepted: Vec<&Sent> = sent.iter().filter(|s| s.accepted.is_some()).collect();
        let loaded = self.cpu();
        let drain_started = Instant::now();
        self.sinks
            .wait_for(channel, mark, accepted.len(), self.idle)
            .await;
        let drain = drain_started.elapsed();
        let drained = self.cpu();
        let arrivals = self.sinks.arrivals(channel, mark);
        let (first, duplicates) = first_arrivals(&arrivals);
        let mut from_created = Vec::new();
        let mut from_202 = Vec::new();
        let mut missing = 0;
        for s in &accepted {
            let Some(a) = &s.accepted else { continue };
            let Some(at) = first.get(a.id.as_str()) else {
                missing += 1;
                continue;
            };
            from_202.push(at.saturating_duration_since(s.answered));
            if let Some(created) = a.created_at {
                from_created.push(ms_between(created, wall(*at)));
            }
        }
        from_created.sort_by(f64::total_cmp);
        let from_202 = sorted_ms(from_202);
        let requests = sorted_ms(sent.iter().map(Sent::took));
        let pct = |v: &[f64]| -> Option<(f64, f64, f64)> {
            Some((
                percentile(v, 0.5)?,
                percentile(v, 0.99)?,
                percentile(v, 1.0)?,
            ))
        };
        let mut notes = vec![
            format!(
                "load {:.2} s: {}",
                load.as_secs_f64(),
                drained_since(&loaded, &cpu)
            ),
            format!(
                "after the load: {:.2} s until the last delivery: {}",
                drain.as_secs_f64(),
                drained.since(&loaded).describe()
            ),
        ];
        if let Some((p50, p99, max)) = pct(&from_202) {
            notes.push(format!(
                "202 at the client -> delivery: p50 {p50:.1} ms, p99 {p99:.1} ms, max {max:.1} ms"
            ));
        }
        notes.push(format!(
            "{} arrivals at the sink, {} distinct",
            arrivals.len(),
            first.len()
        ));
        Row {
            name,
            accepted: accepted.len(),
            failed: sent.len() - accepted.len(),
            accepted_per_s: Some(accepted.len() as f64 / load.as_secs_f64()),
            delivered_per_s: delivery_rate(&arrivals),
            request: (percentile(&requests, 0.5), percentile(&requests, 0.99)),
            latency: pct(&from_created),
            delivered: first.len(),
            duplicates,
            missing,
            notes,
        }
    }

    /// `batches` bulk sends of `size`, then one of `big`.
    pub async fn bulk(
        &self,
        channel: Channel,
        (batches, size, big): (usize, usize, usize),
    ) -> Result<Vec<Row>> {
        Ok(vec![
            self.bulk_round(channel, batches, size, "bulk").await?,
            self.bulk_round(channel, 1, big, "bigbulk").await?,
        ])
    }

    async fn bulk_round(
        &self,
        channel: Channel,
        batches: usize,
        size: usize,
        prefix: &str,
    ) -> Result<Row> {
        let mark = self.sinks.mark(channel);
        let cpu = self.cpu();
        let started = Instant::now();
        let mut posts = Vec::new();
        let mut ids = Vec::new();
        for b in 0..batches {
            let t = Instant::now();
            ids.push(
                self.api
                    .send_bulk(channel, &format!("{prefix}{b}"), size)
                    .await?,
            );
            posts.push(t.elapsed());
        }
        let accepted_at = Instant::now();
        let load = accepted_at - started;
        let loaded = self.cpu();
        let expected = batches * size;
        self.sinks
            .wait_for(channel, mark, expected, self.idle)
            .await;
        let drained = self.cpu();
        let arrivals = self.sinks.arrivals(channel, mark);
        let (first, duplicates) = first_arrivals(&arrivals);
        let last = arrivals.iter().map(|a| a.1).max();
        let posting: Duration = posts.iter().sum();
        let requests = sorted_ms(posts.iter().copied());
        let mut notes = vec![
            format!(
                "POSTs {:.2} s: {}",
                load.as_secs_f64(),
                drained_since(&loaded, &cpu)
            ),
            format!(
                "last delivery {:.2} s after the last 202: {}",
                last.map_or(0.0, |l| l
                    .saturating_duration_since(accepted_at)
                    .as_secs_f64()),
                drained.since(&loaded).describe()
            ),
            format!(
                "{} arrivals at the sink, {} distinct",
                arrivals.len(),
                first.len()
            ),
        ];
        notes.push(self.batch_counts(&ids).await);
        Ok(Row {
            name: format!("send-bulk {} ({batches} x {size})", channel.as_str()),
            accepted: expected,
            failed: 0,
            accepted_per_s: Some(expected as f64 / posting.as_secs_f64()),
            delivered_per_s: delivery_rate(&arrivals),
            request: (percentile(&requests, 0.5), percentile(&requests, 0.99)),
            latency: None,
            delivered: first.len(),
            duplicates,
            missing: expected.saturating_sub(first.len()),
            notes,
        })
    }

    /// What `GET /batches/{id}` says of each batch, summed.
    async fn batch_counts(&self, ids: &[String]) -> String {
        let keys = [
            "total", "queued", "sending", "sent", "retrying", "skipped", "dead",
        ];
        let mut sums = [0u64; 7];
        for id in ids {
            match self.api.batch(id).await {
                Ok(batch) => {
                    for (sum, key) in sums.iter_mut().zip(keys) {
                        *sum += batch[key].as_u64().unwrap_or(0);
                    }
                }
                Err(err) => return format!("GET /batches/{id} failed: {err:#}"),
            }
        }
        let shown: Vec<String> = keys
            .iter()
            .zip(sums)
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        format!("GET /batches: {}", shown.join(", "))
    }
}

fn drained_since(now: &CpuSnapshot, earlier: &CpuSnapshot) -> String {
    now.since(earlier).describe()
}

fn ms_between(from: OffsetDateTime, to: OffsetDateTime) -> f64 {
    (to - from).as_seconds_f64() * 1000.0
}

impl Row {
    pub fn print_notes(&self) {
        println!("{}:", self.name);
        for note in &self.notes {
            println!("    {note}");
        }
    }
}

fn show(v: Option<f64>, decimals: usize) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.decimals$}"))
}

pub fn print_table(rows: &[Row]) {
    const WIDTHS: [usize; 12] = [40, 8, 10, 9, 11, 8, 8, 9, 9, 9, 6, 11];
    let line = |cells: [&str; 12]| {
        let shown: Vec<String> = cells
            .iter()
            .zip(WIDTHS)
            .enumerate()
            .map(|(i, (c, w))| {
                if i == 0 {
                    format!("{c:<w$}")
                } else {
                    format!("{c:>w$}")
                }
            })
            .collect();
        println!("| {} |", shown.join(" | "));
    };
    line([
        "scenario",
        "accepted",
        "accepted/s",
        "delivered",
        "delivered/s",
        "POST p50",
        "POST p99",
        "deliv p50",
        "deliv p99",
        "deliv max",
        "failed",
        "dup/missing",
    ]);
    let dashes = WIDTHS.map(|n| "-".repeat(n));
    line(dashes.each_ref().map(String::as_str));
    for r in rows {
        let (p50, p99, max) = match r.latency {
            Some((a, b, c)) => (Some(a), Some(b), Some(c)),
            None => (None, None, None),
        };
        line([
            &r.name,
            &r.accepted.to_string(),
            &show(r.accepted_per_s, 0),
            &r.delivered.to_string(),
            &show(r.delivered_per_s, 0),
            &show(r.request.0, 1),
            &show(r.request.1, 1),
            &show(p50, 1),
            &show(p99, 1),
            &show(max, 1),
            &r.failed.to_string(),
            &format!("{}/{}", r.duplicates, r.missing),
        ]);
    }
    println!("(ms; deliv = from the notification's created_at to its arrival at the sink, open-loop rows only;");
    println!(" delivered/s = (n - 1) / (last arrival - first arrival); dup/missing: ids delivered twice / never)");
    // One line per scenario for bench/all.sh's table: delivery keeping up
    // with acceptance, and nothing lost or doubled.
    for r in rows {
        let ratio = match (r.delivered_per_s, r.accepted_per_s) {
            (Some(d), Some(a)) if a > 0.0 => format!("{:.2}", d / a),
            _ => "-".to_owned(),
        };
        println!(
            "headline\tnotify {}\tdelivered/s; dup/missing\t{}/s; {}/{}\t{}/s accepted\t{ratio}",
            r.name,
            show(r.delivered_per_s, 0),
            r.duplicates,
            r.missing,
            show(r.accepted_per_s, 0),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rate_needs_two_arrivals() {
        let t = Instant::now();
        assert_eq!(delivery_rate(&[("a".into(), t)]), None);
        let two = [
            ("a".into(), t),
            ("b".into(), t + Duration::from_millis(500)),
        ];
        assert_eq!(delivery_rate(&two), Some(2.0));
    }
}
