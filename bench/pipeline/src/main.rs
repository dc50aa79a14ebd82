//! Load generator for the order-to-invoice pipeline. Signs in, creates
//! orders from `--concurrency` writers for `--duration` (as fast as they can,
//! or at `--rate` orders/s in total), samples the billing
//! subscriber's lag on the admin listener every second, waits for invoicing
//! to catch up, then reads every invoice back and reports:
//!
//! * orders/s accepted (201) during the load;
//! * order-to-invoice latency: the invoice's `created_at` minus its order's
//!   `created_at` (both stamped by the server's clock at commit, so no
//!   polling skews it; the 201 leaves right after the order's commit);
//! * the largest billing lag and pending count seen while loading, and how
//!   long invoicing took to catch up after the load stopped.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

#[derive(Parser)]
struct Args {
    /// Public base URL of stageworks.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// Admin base URL (for `/admin/events`).
    #[arg(long, default_value = "http://127.0.0.1:9090")]
    admin: String,
    #[arg(long, default_value = "pipeline-bench@example.com")]
    email: String,
    #[arg(long, default_value = "pipeline-bench-password")]
    password: String,
    /// Concurrent order writers.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Orders per second in total, spread over the writers; 0: as fast as
    /// the writers go (closed loop).
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// How long to create orders, in seconds.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Label printed with the results.
    #[arg(long, default_value = "")]
    label: String,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let client = reqwest::Client::builder().no_proxy().build()?;
    let token = sign_in(&client, &args).await?;

    let accepted = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let writers: Vec<_> = (0..args.concurrency)
        .map(|_| {
            let (client, token, url) = (client.clone(), token.clone(), args.url.clone());
            let (accepted, failed, stop) = (accepted.clone(), failed.clone(), stop.clone());
            // Open loop: each writer keeps its share of the rate (a late
            // request does not delay the next one's start by more than it took).
            let mut pace = (args.rate > 0).then(|| {
                let every = Duration::from_secs_f64(args.concurrency as f64 / args.rate as f64);
                let mut ticks = tokio::time::interval(every);
                ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
                ticks
            });
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    if let Some(ticks) = pace.as_mut() {
                        ticks.tick().await;
                    }
                    let created = client
                        .post(format!("{url}/api/v1/orders"))
                        .bearer_auth(&token)
                        .json(&json!({"amount": 1999}))
                        .send()
                        .await;
                    match created {
                        Ok(r) if r.status() == 201 => accepted.fetch_add(1, Ordering::Relaxed),
                        _ => failed.fetch_add(1, Ordering::Relaxed),
                    };
                }
            })
        })
        .collect();

    let mut max_lag = 0.0f64;
    let mut max_pending = 0u64;
    while started.elapsed() < Duration::from_secs(args.duration) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if let Ok((pending, lag)) = billing_backlog(&client, &args.admin).await {
            max_lag = max_lag.max(lag);
            max_pending = max_pending.max(pending);
        }
    }
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        writer.await?;
    }
    let load_time = started.elapsed();
    let orders = accepted.load(Ordering::Relaxed);

    let drain_started = Instant::now();
    loop {
        let (pending, _) = billing_backlog(&client, &args.admin).await?;
        let invoiced = total(&client, &args.url, &token, "/api/v1/invoices").await?;
        let ordered = total(&client, &args.url, &token, "/api/v1/orders").await?;
        if pending == 0 && invoiced >= ordered {
            break;
        }
        if drain_started.elapsed() > Duration::from_secs(120) {
            bail!("invoicing did not catch up within 120 s ({invoiced} of {ordered})");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let drain = drain_started.elapsed();

    let latencies = latencies(&client, &args.url, &token).await?;
    let pct = |p: f64| {
        let i = ((latencies.len() as f64 - 1.0) * p).round() as usize;
        latencies.get(i).copied().unwrap_or(0.0) * 1000.0
    };
    println!(
        "{label}{target}orders {orders} in {secs:.1} s = {rate:.0} orders/s ({failed} failed) | \
         order→invoice p50 {p50:.1} ms p99 {p99:.1} ms max {max:.1} ms (n={n}) | \
         billing lag max {max_lag:.2} s, pending max {max_pending} | caught up {drain:.2} s after the load",
        label = if args.label.is_empty() { String::new() } else { format!("{}: ", args.label) },
        target = if args.rate > 0 { format!("target {}/s, ", args.rate) } else { "closed loop, ".into() },
        secs = load_time.as_secs_f64(),
        rate = orders as f64 / load_time.as_secs_f64(),
        failed = failed.load(Ordering::Relaxed),
        p50 = pct(0.50),
        p99 = pct(0.99),
        max = pct(1.0),
        n = latencies.len(),
        drain = drain.as_secs_f64(),
    );
    // One line for bench/all.sh's table: what was accepted against what was
    // offered (closed loop: nothing offered, no ratio).
    let rate = orders as f64 / load_time.as_secs_f64();
    let (against, ratio) = if args.rate > 0 {
        (
            format!("{} orders/s offered", args.rate),
            format!("{:.2}", rate / args.rate as f64),
        )
    } else {
        ("closed loop".to_owned(), "-".to_owned())
    };
    println!(
        "headline\tpipeline {}\torders/s accepted, order→invoice p99, caught up\t{rate:.0}/s, {:.1} ms, {:.2} s\t{against}\t{ratio}",
        args.label,
        pct(0.99),
        drain.as_secs_f64(),
    );
    Ok(())
}

async fn sign_in(client: &reqwest::Client, args: &Args) -> Result<String> {
    let body = json!({"email": args.email, "password": args.password, "name": "pipeline bench"});
    let registered = client
        .post(format!("{}/api/v1/auth/register", args.url))
        .json(&body)
        .send()
        .await?;
    if !(registered.status() == 201 || registered.status() == 409) {
        bail!("register: {}", registered.status());
    }
    let login: Value = client
        .post(format!("{}/api/v1/auth/login", args.url))
        .json(&json!({"email": args.email, "password": args.password}))
        .send()
        .await?
        .json()
        .await?;
    login["access_token"]
        .as_str()
        .map(str::to_owned)
        .context("no access token in the login answer")
}

/// Billing's pending events and lag in seconds, from `/admin/events`.
async fn billing_backlog(client: &reqwest::Client, admin: &str) -> Result<(u64, f64)> {
    let overview: Value = client
        .get(format!("{admin}/admin/events"))
        .send()
        .await?
        .json()
        .await?;
    let billing = overview["subscribers"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == "billing"))
        .context("no billing subscriber in /admin/events")?;
    Ok((
        billing["pending"].as_u64().unwrap_or(0),
        billing["lag_seconds"].as_f64().unwrap_or(0.0),
    ))
}

async fn total(client: &reqwest::Client, url: &str, token: &str, path: &str) -> Result<u64> {
    let page: Value = client
        .get(format!("{url}{path}?limit=1"))
        .bearer_auth(token)
        .send()
        .await?
        .json()
        .await?;
    page["pagination"]["total"]
        .as_u64()
        .context("no pagination total")
}

async fn all(client: &reqwest::Client, url: &str, token: &str, path: &str) -> Result<Vec<Value>> {
    let mut items = Vec::new();
    for page in 1.. {
        let body: Value = client
            .get(format!("{url}{path}?limit=100&page={page}"))
            .bearer_auth(token)
            .send()
            .await?
            .json()
            .await?;
        let batch = body["data"]
            .as_array()
            .context("no data in a list answer")?;
        if batch.is_empty() {
            break;
        }
        items.extend(batch.iter().cloned());
    }
    Ok(items)
}

/// Seconds from each order's creation to its invoice's, sorted.
async fn latencies(client: &reqwest::Client, url: &str, token: &str) -> Result<Vec<f64>> {
    let orders = all(client, url, token, "/api/v1/orders").await?;
    let created: HashMap<String, OffsetDateTime> = orders
        .iter()
        .filter_map(|o| Some((o["id"].as_str()?.to_owned(), parse(&o["created_at"])?)))
        .collect();
    let mut latencies: Vec<f64> = all(client, url, token, "/api/v1/invoices")
        .await?
        .iter()
        .filter_map(|i| {
            let order = created.get(i["order_id"].as_str()?)?;
            Some((parse(&i["created_at"])? - *order).as_seconds_f64())
        })
        .collect();
    latencies.sort_by(f64::total_cmp);
    Ok(latencies)
}

fn parse(value: &Value) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(value.as_str()?, &Rfc3339).ok()
}
