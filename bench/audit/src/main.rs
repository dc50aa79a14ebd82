//! Load generator for the audit and analytics services (issue 15's
//! benchmark), in four steps that `bench/audit.sh` runs in order against one
//! server:
//!
//! * `pipeline`: orders from `--users` users at full speed for `--duration`
//!   (the order → invoice pipeline); samples the audit and analytics
//!   subscribers' backlog every second, waits for both to catch up, and
//!   reports the entries audit recorded per second against the events the
//!   pipeline published, the lag (event → applied) p50/p99 of each
//!   subscriber from `event_delivery_lag_seconds` over the run, and whether
//!   analytics counted every accepted order;
//! * `seed`: posts entries until audit holds `--entries` (a million by
//!   default), keeping a sample of their resource and request ids;
//! * `search`: each indexed filter in turn for `--seconds`, from
//!   `--concurrency` clients, with values drawn from the sample: p50/p99;
//! * `export`: the whole audit log as CSV: time to first byte, rows/s and
//!   the server's resident memory before and at its peak during the export.

mod api;
mod figures;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use futures::StreamExt;
use rand::seq::IndexedRandom;
use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use api::Api;
use figures::{counter_sum, histogram_quantile, percentile, rss_bytes, sorted_ms};

#[derive(Parser)]
struct Args {
    /// Public base URL of stageworks.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// Admin listener base URL (`/admin/events`, `/metrics`).
    #[arg(long, default_value = "http://127.0.0.1:9090")]
    admin: String,
    /// The admin user the script created (audit and analytics are admin's).
    #[arg(long, default_value = "audit-bench@example.com")]
    email: String,
    #[arg(long, env = "AUDIT_BENCH_PASSWORD")]
    password: String,
    /// Where `seed` keeps its sample of ids for `search`.
    #[arg(long, default_value = "audit-bench-sample.json")]
    sample: PathBuf,
    /// Label printed with the results.
    #[arg(long, default_value = "")]
    label: String,
    #[command(subcommand)]
    step: Step,
}

#[derive(Subcommand)]
enum Step {
    Pipeline {
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
        /// Users placing the orders (the entries' actors).
        #[arg(long, default_value_t = 50)]
        users: usize,
        #[arg(long, default_value_t = 10)]
        duration: u64,
    },
    Seed {
        /// How many entries audit should hold when seeding ends.
        #[arg(long, default_value_t = 1_000_000)]
        entries: u64,
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
    },
    Search {
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
        /// Seconds of each filter.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
    Export {
        /// The server's pid, for its resident memory.
        #[arg(long)]
        server_pid: u32,
    },
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let client = Api::client()?;
    let (admin, _) = Api::sign_in(&client, &args.url, &args.admin, &args.email, &args.password)
        .await
        .context("signing in as the bench's admin")?;
    let label = if args.label.is_empty() {
        String::new()
    } else {
        format!("{}: ", args.label)
    };
    match args.step {
        Step::Pipeline {
            concurrency,
            users,
            duration,
        } => pipeline(&admin, &label, &args.sample, concurrency, users, duration).await,
        Step::Seed {
            entries,
            concurrency,
        } => seed(&admin, &label, &args.sample, entries, concurrency).await,
        Step::Search {
            concurrency,
            seconds,
        } => search(&admin, &label, &args.sample, concurrency, seconds).await,
        Step::Export { server_pid } => export(&admin, &label, server_pid).await,
    }
}

/// The subscribers whose lag `pipeline` reports.
const SUBSCRIBERS: [&str; 3] = ["billing", "audit", "analytics"];

async fn pipeline(
    admin: &Api,
    label: &str,
    sample: &Path,
    concurrency: usize,
    users: usize,
    duration: u64,
) -> Result<()> {
    let mut callers = Vec::with_capacity(users);
    let mut actors = Vec::with_capacity(users);
    for n in 0..users.max(1) {
        let email = format!("audit-bench-user-{n}@example.com");
        let (api, id) = Api::user(&admin.client, &admin.url, &admin.admin, &email).await?;
        callers.push(api);
        actors.push(id);
    }
    write_sample(sample, &json!({ "actor_ids": actors }))?;
    let entries_before = admin.audit_total().await?;
    let metrics_before = admin.metrics().await?;
    let orders_before = orders_created(admin).await?;

    let accepted = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let writers: Vec<_> = (0..concurrency)
        .map(|n| {
            let caller = callers[n % callers.len()].clone();
            let (accepted, stop) = (accepted.clone(), stop.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    if caller.create_order().await {
                        accepted.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    let mut worst = [api::Backlog::default(); SUBSCRIBERS.len()];
    while started.elapsed() < Duration::from_secs(duration) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        for (subscriber, worst) in SUBSCRIBERS.iter().zip(worst.iter_mut()) {
            if let Ok(now) = admin.backlog(subscriber).await {
                worst.pending = worst.pending.max(now.pending);
                worst.lag_seconds = worst.lag_seconds.max(now.lag_seconds);
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        writer.await?;
    }
    let load = started.elapsed();
    let orders = accepted.load(Ordering::Relaxed);

    // Caught up: no subscriber has anything pending and analytics has
    // counted every accepted order.
    loop {
        let mut pending = 0;
        for subscriber in SUBSCRIBERS {
            pending += admin.backlog(subscriber).await?.pending;
        }
        let counted = orders_created(admin).await? - orders_before;
        if pending == 0 && counted >= orders {
            break;
        }
        if started.elapsed() > load + Duration::from_secs(180) {
            bail!("the subscribers did not catch up within 180 s ({pending} pending, {counted} of {orders} orders counted)");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let caught_up = started.elapsed();
    let entries = admin.audit_total().await? - entries_before;
    let metrics_after = admin.metrics().await?;
    let published = counter_sum(&metrics_after, "events_published_total", &[])
        - counter_sum(&metrics_before, "events_published_total", &[]);
    let counted = orders_created(admin).await? - orders_before;

    println!(
        "{label}pipeline: {orders} orders in {load:.1} s = {rate:.0} orders/s from {users} users | \
         {published:.0} events published = {published_rate:.0}/s | audit recorded {entries} entries, \
         {entries_rate:.0}/s over the {caught:.1} s until every subscriber caught up ({after:.2} s after the load) | \
         analytics counted {counted} of {orders} orders",
        load = load.as_secs_f64(),
        rate = orders as f64 / load.as_secs_f64(),
        published_rate = published / load.as_secs_f64(),
        entries_rate = entries as f64 / caught_up.as_secs_f64(),
        caught = caught_up.as_secs_f64(),
        after = (caught_up - load).as_secs_f64(),
    );
    // One line for bench/all.sh's table: audit keeping up with the events.
    println!(
        "headline\taudit {}\taudit entries recorded/s\t{:.0}/s\t{:.0} events published/s\t{:.2}",
        label.trim_end_matches(": "),
        entries as f64 / caught_up.as_secs_f64(),
        published / load.as_secs_f64(),
        (entries as f64 / caught_up.as_secs_f64()) / (published / load.as_secs_f64()).max(1.0),
    );
    for (subscriber, worst) in SUBSCRIBERS.iter().zip(worst) {
        let quantile = |q| {
            histogram_quantile(
                &metrics_before,
                &metrics_after,
                "event_delivery_lag_seconds",
                &[&format!("subscriber=\"{subscriber}\"")],
                q,
            )
        };
        let (p50, p99) = (quantile(0.5), quantile(0.99));
        println!(
            "{label}  {subscriber}: lag p50 {} p99 {} (n={}) | while loading: pending max {}, lag max {:.2} s",
            ms(p50.map(|(s, _)| s)),
            ms(p99.map(|(s, _)| s)),
            p99.map_or(0, |(_, n)| n),
            worst.pending,
            worst.lag_seconds,
        );
    }
    if counted < orders {
        bail!("analytics counted {counted} orders of {orders} accepted");
    }
    Ok(())
}

fn ms(seconds: Option<f64>) -> String {
    seconds.map_or("-".into(), |s| format!("{:.1} ms", s * 1000.0))
}

async fn orders_created(admin: &Api) -> Result<u64> {
    let stats = admin.stats().await?;
    stats["orders"]["created"]
        .as_u64()
        .context("no orders.created in /analytics/stats")
}

/// What `seed` leaves for `search`: ids to look up and the time span.
fn sample_of(
    actors: &[String],
    resources: &[String],
    requests: &[String],
    from: OffsetDateTime,
    to: OffsetDateTime,
) -> Result<Value> {
    Ok(json!({
        "actor_ids": actors,
        "resource_ids": resources,
        "request_ids": requests,
        "from": from.format(&Rfc3339)?,
        "to": to.format(&Rfc3339)?,
    }))
}

fn read_sample(path: &Path) -> Result<Value> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(serde_json::from_slice(&bytes)?)
}

fn write_sample(path: &Path, sample: &Value) -> Result<()> {
    std::fs::write(path, serde_json::to_vec(sample)?)
        .with_context(|| format!("writing {}", path.display()))
}

const ACTIONS: [&str; 5] = [
    "document.created",
    "document.shared",
    "report.exported",
    "setting.changed",
    "key.rotated",
];

/// Every `SAMPLE_EVERY`-th seeded entry's ids go into the sample.
const SAMPLE_EVERY: u64 = 997;

async fn seed(
    admin: &Api,
    label: &str,
    sample: &Path,
    entries: u64,
    concurrency: usize,
) -> Result<()> {
    let have = admin.audit_total().await?;
    let to_post = entries.saturating_sub(have);
    let next = Arc::new(AtomicU64::new(0));
    let from = OffsetDateTime::now_utc();
    let started = Instant::now();
    let run = uuid::Uuid::now_v7().simple().to_string();
    let clients: Vec<_> = (0..concurrency)
        .map(|_| {
            let (admin, next, run) = (admin.clone(), next.clone(), run.clone());
            tokio::spawn(async move {
                let mut kept = (Vec::new(), Vec::new());
                let mut refused = 0u64;
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= to_post {
                        return (kept, refused);
                    }
                    let resource = uuid::Uuid::now_v7().to_string();
                    let request = format!("audit-bench-{run}-{n}");
                    let entry = json!({
                        "action": ACTIONS[n as usize % ACTIONS.len()],
                        "resource_type": ACTIONS[n as usize % ACTIONS.len()].split('.').next(),
                        "resource_id": resource,
                        "data": {"n": n, "note": format!("entry {n} of the audit bench"), "size": n % 4096},
                    });
                    match admin.post_entry(&request, &entry).await {
                        Ok(true) => {
                            if n % SAMPLE_EVERY == 0 {
                                kept.0.push(resource);
                                kept.1.push(request);
                            }
                        }
                        _ => refused += 1,
                    }
                }
            })
        })
        .collect();
    let (mut resources, mut requests, mut refused) = (Vec::new(), Vec::new(), 0);
    for client in clients {
        let ((r, q), failed) = client.await?;
        resources.extend(r);
        requests.extend(q);
        refused += failed;
    }
    let took = started.elapsed();
    let to = OffsetDateTime::now_utc();
    // The pipeline step's actors (its users), for the actor filter.
    let actors: Vec<String> = read_sample(sample)
        .ok()
        .and_then(|s| serde_json::from_value(s["actor_ids"].clone()).ok())
        .unwrap_or_default();
    write_sample(
        sample,
        &sample_of(&actors, &resources, &requests, from, to)?,
    )?;
    println!(
        "{label}seed: {posted} entries posted in {secs:.1} s = {rate:.0} entries/s ({refused} refused); audit holds {total}",
        posted = to_post - refused,
        secs = took.as_secs_f64(),
        rate = (to_post - refused) as f64 / took.as_secs_f64(),
        total = admin.audit_total().await?,
    );
    Ok(())
}

/// One indexed filter: its name and a query drawn from the sample.
struct Filter {
    name: &'static str,
    query: fn(&Value, &mut rand::rngs::ThreadRng) -> Option<String>,
}

fn pick(sample: &Value, key: &str, rng: &mut rand::rngs::ThreadRng) -> Option<String> {
    let values = sample[key].as_array()?;
    values.choose(rng)?.as_str().map(str::to_owned)
}

/// A one-minute window inside the seeded span.
fn window(sample: &Value, rng: &mut rand::rngs::ThreadRng) -> Option<String> {
    let from = OffsetDateTime::parse(sample["from"].as_str()?, &Rfc3339).ok()?;
    let to = OffsetDateTime::parse(sample["to"].as_str()?, &Rfc3339).ok()?;
    let span = (to - from).whole_seconds().max(61);
    let start = from + time::Duration::seconds(rand::Rng::random_range(rng, 0..span - 60));
    let end = start + time::Duration::minutes(1);
    Some(format!(
        "from={}&to={}",
        encode(&start.format(&Rfc3339).ok()?),
        encode(&end.format(&Rfc3339).ok()?)
    ))
}

fn encode(value: &str) -> String {
    value.replace('+', "%2B").replace(':', "%3A")
}

const FILTERS: [Filter; 8] = [
    Filter {
        name: "actor_id",
        query: |s, r| pick(s, "actor_ids", r).map(|v| format!("actor_id={v}")),
    },
    Filter {
        name: "resource_id",
        query: |s, r| pick(s, "resource_ids", r).map(|v| format!("resource_id={v}")),
    },
    Filter {
        name: "request_id",
        query: |s, r| pick(s, "request_ids", r).map(|v| format!("request_id={v}")),
    },
    Filter {
        name: "time range (1 min)",
        query: window,
    },
    Filter {
        name: "action",
        query: |_, r| ACTIONS.choose(r).map(|a| format!("action={a}")),
    },
    Filter {
        name: "action prefix",
        query: |_, r| {
            ACTIONS
                .choose(r)
                .and_then(|a| a.split('.').next())
                .map(|p| format!("action={p}.*"))
        },
    },
    Filter {
        name: "resource_type",
        query: |_, r| {
            ACTIONS
                .choose(r)
                .and_then(|a| a.split('.').next())
                .map(|t| format!("resource_type={t}"))
        },
    },
    Filter {
        name: "none (newest first)",
        query: |_, r| Some(format!("page={}", rand::Rng::random_range(r, 1..=5))),
    },
];

async fn search(
    admin: &Api,
    label: &str,
    sample: &Path,
    concurrency: usize,
    seconds: u64,
) -> Result<()> {
    let sample = Arc::new(read_sample(sample)?);
    println!(
        "{label}search over {} entries, {concurrency} clients, {seconds} s per filter:",
        admin.audit_total().await?
    );
    for filter in &FILTERS {
        let stop = Instant::now() + Duration::from_secs(seconds);
        let clients: Vec<_> = (0..concurrency)
            .map(|_| {
                let (admin, sample, query) = (admin.clone(), sample.clone(), filter.query);
                tokio::spawn(async move {
                    let (mut took, mut empty) = (Vec::new(), 0u64);
                    while Instant::now() < stop {
                        let Some(q) = query(&sample, &mut rand::rng()) else {
                            break;
                        };
                        match admin.search(&q).await {
                            Ok((t, true)) => took.push(t),
                            _ => empty += 1,
                        }
                    }
                    (took, empty)
                })
            })
            .collect();
        let (mut took, mut empty) = (Vec::new(), 0);
        for client in clients {
            let (t, e) = client.await?;
            took.extend(t);
            empty += e;
        }
        let sorted = sorted_ms(took);
        let show = |p| percentile(&sorted, p).map_or("-".into(), |v| format!("{v:.1} ms"));
        println!(
            "{label}  {:<28} n={:<6} {:>6.0}/s  p50 {}  p99 {}  max {}  ({empty} empty or failed)",
            filter.name,
            sorted.len(),
            sorted.len() as f64 / seconds as f64,
            show(0.5),
            show(0.99),
            show(1.0),
        );
    }
    Ok(())
}

async fn export(admin: &Api, label: &str, server_pid: u32) -> Result<()> {
    let before = rss_bytes(server_pid).context("the server's pid has no /proc entry")?;
    let peak = Arc::new(AtomicU64::new(before));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, done) = (peak.clone(), done.clone());
        tokio::spawn(async move {
            while !done.load(Ordering::Relaxed) {
                if let Some(rss) = rss_bytes(server_pid) {
                    peak.fetch_max(rss, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let started = Instant::now();
    let response = admin.export().await?;
    let mut body = response.bytes_stream();
    let (mut first_byte, mut bytes, mut lines) = (None, 0u64, 0u64);
    while let Some(chunk) = body.next().await {
        let chunk = chunk?;
        first_byte.get_or_insert_with(|| started.elapsed());
        bytes += chunk.len() as u64;
        // Quoted cells may hold newlines; the data column is compact JSON
        // without any, so each row is one line.
        lines += chunk.iter().filter(|&&b| b == b'\n').count() as u64;
    }
    let took = started.elapsed();
    done.store(true, Ordering::Relaxed);
    sampler.await?;
    let rows = lines.saturating_sub(1);
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    println!(
        "{label}export: {rows} rows, {size:.0} MiB in {secs:.1} s = {rate:.0} rows/s ({mibs:.1} MiB/s) | \
         first byte after {first:.1} ms | server RSS {before:.1} MiB before, peak {peak:.1} MiB (+{growth:.1})",
        size = mib(bytes),
        secs = took.as_secs_f64(),
        rate = rows as f64 / took.as_secs_f64(),
        mibs = mib(bytes) / took.as_secs_f64(),
        first = first_byte.unwrap_or_default().as_secs_f64() * 1000.0,
        before = mib(before),
        peak = mib(peak.load(Ordering::Relaxed)),
        growth = mib(peak.load(Ordering::Relaxed).saturating_sub(before)),
    );
    Ok(())
}
