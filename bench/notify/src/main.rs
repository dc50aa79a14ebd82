//! Load generator for the notifications service (issue 14's benchmark).
//! Hosts the SMTP sink and the webhook receiver the server delivers to,
//! signs in as an admin, and runs the scenarios named by `--scenarios`,
//! each waiting for its deliveries before the next starts:
//!
//! * `send-email`, `send-webhook`: `POST /send` (inline `subject`/`body`)
//!   from `--concurrency` clients in a closed loop for `--duration`:
//!   accepted/s (202s over the load's time); then delivered/s at the sink
//!   (count over the time from the first arrival to the last).
//! * `bulk-email`, `bulk-webhook`: `--bulk-batches` `POST /send-bulk` of
//!   `--bulk-size` recipients one after the other, then one of
//!   `--big-bulk`: accepted recipients/s (recipients over the time of the
//!   POSTs), delivered/s at the sink (first to last arrival).
//! * `latency-email`, `latency-webhook`: `POST /send` open loop at `--rate`
//!   a second for `--latency-secs`: p50/p99/max from the notification's
//!   `created_at` (the server's commit) to its arrival at the sink, matched
//!   by `Message-ID` / `idempotency-key`; also from the client's 202.
//!
//! Every scenario reports duplicates (an id delivered twice) and missing
//! deliveries, and the CPU of the server's busiest threads and of this
//! process (`--server-pid`).

mod api;
mod scenarios;
mod sinks;
mod stats;

use std::time::Duration;

use anyhow::{bail, Result};
use clap::Parser;

use api::{Api, Channel};
use scenarios::{Bench, Row};
use sinks::Sinks;

#[derive(Parser)]
struct Args {
    /// Public base URL of stageworks.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// The port of the SMTP sink (the server's `email.port`).
    #[arg(long)]
    smtp_port: u16,
    /// The admin to sign in as (made with `stageworks user create --admin`).
    #[arg(long, default_value = "notify-bench@example.com")]
    email: String,
    #[arg(long, env = "NOTIFY_BENCH_PASSWORD")]
    password: String,
    /// The server's process id, for its threads' CPU use.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Space-separated scenarios, in order.
    #[arg(
        long,
        default_value = "send-email send-webhook bulk-email bulk-webhook latency-email latency-webhook"
    )]
    scenarios: String,
    /// Concurrent clients of the closed-loop `send` scenarios.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Seconds of each closed-loop `send` scenario.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Bulk sends of `--bulk-size` per bulk scenario, one after the other.
    #[arg(long, default_value_t = 5)]
    bulk_batches: usize,
    #[arg(long, default_value_t = 1000)]
    bulk_size: usize,
    /// Recipients of the one large bulk send (the API's maximum: 10,000).
    #[arg(long, default_value_t = 10_000)]
    big_bulk: usize,
    /// Notifications a second of the open-loop latency scenarios.
    #[arg(long, default_value_t = 500)]
    rate: u64,
    #[arg(long, default_value_t = 20)]
    latency_secs: u64,
    /// Seconds without a new delivery after which a scenario stops waiting
    /// for the rest (they are reported missing).
    #[arg(long, default_value_t = 60)]
    idle_timeout: u64,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let sinks = Sinks::start(args.smtp_port).await?;
    let api = Api::sign_in(&args.url, &sinks.hook_url(), &args.email, &args.password).await?;
    match sinks.wait_for_welcome(Duration::from_secs(20)).await {
        0 => println!("no welcome email to the admin within 20 s"),
        n => println!("{n} email(s) before the scenarios: the admin's welcome (user.registered)"),
    }
    let bench = Bench {
        api,
        sinks,
        server_pid: args.server_pid,
        idle: Duration::from_secs(args.idle_timeout),
    };
    let mut rows: Vec<Row> = Vec::new();
    for scenario in args.scenarios.split_whitespace() {
        let mut ran = run(&bench, &args, scenario).await?;
        for row in &ran {
            row.print_notes();
        }
        rows.append(&mut ran);
    }
    println!();
    scenarios::print_table(&rows);
    Ok(())
}

async fn run(bench: &Bench, args: &Args, scenario: &str) -> Result<Vec<Row>> {
    eprintln!("notify-bench: {scenario}");
    let duration = Duration::from_secs(args.duration);
    let latency = Duration::from_secs(args.latency_secs);
    Ok(match scenario {
        "send-email" => vec![bench.send(Channel::Email, args.concurrency, duration).await?],
        "send-webhook" => vec![bench.send(Channel::Webhook, args.concurrency, duration).await?],
        "bulk-email" | "bulk-webhook" => {
            let channel = if scenario == "bulk-email" { Channel::Email } else { Channel::Webhook };
            bench.api.ensure_template(channel).await?;
            let sizes = (args.bulk_batches, args.bulk_size, args.big_bulk);
            bench.bulk(channel, sizes).await?
        }
        "latency-email" => vec![bench.latency(Channel::Email, args.rate, latency).await?],
        "latency-webhook" => vec![bench.latency(Channel::Webhook, args.rate, latency).await?],
        other => bail!(
            "unknown scenario {other:?} (send-email, send-webhook, bulk-email, bulk-webhook, latency-email, latency-webhook)"
        ),
    })
}
