//! The soak (issue 17): a steady mixed load on every service for
//! `--minutes`, while one service (`--crash`, billing by default) is made to
//! panic every `--crash-every` (a request with `x-fault: panic`, so the
//! server must be built with the `fault-injection` feature). Every
//! `--sample-every` it records the server's resident memory and open
//! descriptors (from /proc/<pid>), the requests made and the errors per
//! service; at the end it prints the samples and a summary, and exits 1 when
//! a bound is broken:
//! - RSS at the end within `--max-rss-drift` (10 %) of RSS after the warm-up
//!   (the first `--warm-up`: caches, pools and arenas fill once);
//! - open descriptors at the end within `--max-fd-growth` of the warm-up's,
//!   the database files apart; those (SQLite readers are opened as load
//!   first needs them, then kept) within the pools' bound, from the
//!   server's `db_pool_max_connections` gauges;
//! - 0 errors (a 5xx or no answer) from any service but the crashing one;
//! - the crashing service restarted (the crashes really happened) and serving
//!   again by itself once the crashes stop: within 10 s of its circuit's
//!   retry time (`circuit.retry_at` at /admin/actors, open_for having doubled
//!   on each trip up to open_for_max).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use serde_json::{json, Value};

#[derive(Parser, Debug)]
struct Args {
    /// The public listener, host:port.
    #[arg(long)]
    public: String,
    /// The admin listener, host:port.
    #[arg(long)]
    admin: String,
    #[arg(long, env = "STAGEWORKS__ADMIN__TOKEN")]
    admin_token: String,
    /// The server's process id (for /proc/<pid>/status and fd).
    #[arg(long)]
    pid: u32,
    #[arg(long, default_value_t = 10)]
    minutes: u64,
    /// Concurrent clients, each making `--rate` requests a second.
    #[arg(long, default_value_t = 8)]
    clients: usize,
    #[arg(long, default_value_t = 25)]
    rate: u32,
    /// The service made to crash: `billing` (GET /api/v1/invoices) or
    /// `notifications` (GET /api/v1/notifications).
    #[arg(long, default_value = "billing")]
    crash: String,
    #[arg(long, value_parser = humantime_secs, default_value = "3")]
    crash_every: Duration,
    #[arg(long, value_parser = humantime_secs, default_value = "30")]
    sample_every: Duration,
    #[arg(long, value_parser = humantime_secs, default_value = "60")]
    warm_up: Duration,
    /// Largest allowed RSS change from the end of the warm-up, in percent.
    #[arg(long, default_value_t = 10.0)]
    max_rss_drift: f64,
    /// Largest allowed growth of open descriptors from the end of the
    /// warm-up, the database files' apart (they are bounded by the pools).
    #[arg(long, default_value_t = 16)]
    max_fd_growth: i64,
}

fn humantime_secs(text: &str) -> Result<Duration, String> {
    text.trim_end_matches('s')
        .parse::<f64>()
        .map(Duration::from_secs_f64)
        .map_err(|e| format!("`{text}`: {e} (seconds)"))
}

/// The services the load touches, by the route prefix that reaches them.
const SERVICES: [(&str, &str); 4] = [
    ("orders", "/api/v1/orders"),
    ("billing", "/api/v1/invoices"),
    ("auth", "/api/v1/auth"),
    ("notifications", "/api/v1/notifications"),
];

/// Requests and errors per service since the start.
#[derive(Default)]
struct Tally {
    requests: BTreeMap<&'static str, AtomicU64>,
    errors: BTreeMap<&'static str, AtomicU64>,
}

impl Tally {
    fn new() -> Self {
        let mut tally = Tally::default();
        for (name, _) in SERVICES {
            tally.requests.insert(name, AtomicU64::new(0));
            tally.errors.insert(name, AtomicU64::new(0));
        }
        tally
    }

    fn count(&self, service: &'static str, ok: bool) {
        self.requests[service].fetch_add(1, Ordering::Relaxed);
        if !ok {
            self.errors[service].fetch_add(1, Ordering::Relaxed);
        }
    }

    fn snapshot(&self) -> (BTreeMap<&'static str, u64>, BTreeMap<&'static str, u64>) {
        let read = |m: &BTreeMap<&'static str, AtomicU64>| {
            m.iter()
                .map(|(k, v)| (*k, v.load(Ordering::Relaxed)))
                .collect()
        };
        (read(&self.requests), read(&self.errors))
    }
}

struct Sample {
    at: Duration,
    rss_kib: u64,
    fds: i64,
    /// The descriptors by kind (what grew, if anything did).
    fd_kinds: BTreeMap<&'static str, i64>,
    requests: u64,
    errors: BTreeMap<&'static str, u64>,
    restarts: u64,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    let token = sign_up(&http, &args.public).await?;
    let crash_path = SERVICES
        .iter()
        .find(|(name, _)| *name == args.crash)
        .map(|(_, path)| *path)
        .with_context(|| format!("--crash {}: not one of the loaded services", args.crash))?;

    let tally = Arc::new(Tally::new());
    let deadline = Instant::now() + Duration::from_secs(args.minutes * 60);
    let mut tasks = Vec::new();
    for client in 0..args.clients {
        tasks.push(tokio::spawn(load(
            http.clone(),
            args.public.clone(),
            token.clone(),
            args.rate,
            client,
            tally.clone(),
            deadline,
        )));
    }
    let crashes = Arc::new(AtomicU64::new(0));
    tasks.push(tokio::spawn(crasher(
        http.clone(),
        format!("http://{}{crash_path}", args.public),
        token.clone(),
        args.crash_every,
        crashes.clone(),
        deadline,
    )));

    let started = Instant::now();
    let mut samples = Vec::new();
    let mut baseline: Option<(u64, i64, BTreeMap<&'static str, i64>)> = None;
    while Instant::now() < deadline {
        tokio::time::sleep(args.sample_every.min(deadline - Instant::now())).await;
        let sample = sample(&http, &args, started.elapsed(), &tally).await?;
        if baseline.is_none() && sample.at >= args.warm_up {
            baseline = Some((sample.rss_kib, sample.fds, sample.fd_kinds.clone()));
        }
        println!(
            "{:>5.0}s rss {:>7.1} MiB fds {:>4} {:?} requests {:>8} errors {:?} {} restarts {}",
            sample.at.as_secs_f64(),
            sample.rss_kib as f64 / 1024.0,
            sample.fds,
            sample.fd_kinds,
            sample.requests,
            sample.errors,
            args.crash,
            sample.restarts
        );
        samples.push(sample);
    }
    for task in tasks {
        task.await?;
    }
    // The crashing service must be serving again by itself once the
    // crashes stop: after its circuit's retry time (open_for has doubled
    // on every trip, up to open_for_max), and a restart, within 10 s.
    let stopped = Instant::now();
    let retry_in = circuit_retry_in(&http, &args).await?;
    let recovered = serving_again(
        &http,
        &format!("http://{}{crash_path}", args.public),
        &token,
        retry_in + Duration::from_secs(10),
    )
    .await
    .then(|| stopped.elapsed());

    let last = samples
        .last()
        .context("no sample taken: --minutes too short")?;
    let (first_rss, first_fds, first_kinds) =
        baseline.context("the run ended within its warm-up")?;
    let drift = 100.0 * (last.rss_kib as f64 - first_rss as f64) / first_rss as f64;
    let peak_rss = samples.iter().map(|s| s.rss_kib).max().unwrap_or(0);
    // SQLite readers open as load first needs them and are kept: the
    // database files may grow up to the pools' bound, read from the server;
    // everything else must stay where the warm-up left it.
    let db = |kinds: &BTreeMap<&'static str, i64>| kinds.get(DATABASE_FILES).copied().unwrap_or(0);
    let fd_growth = (last.fds - db(&last.fd_kinds)) - (first_fds - db(&first_kinds));
    let db_bound = database_descriptor_bound(&http, &args).await?;
    let elsewhere: u64 = last
        .errors
        .iter()
        .filter(|(name, _)| **name != args.crash)
        .map(|(_, n)| n)
        .sum();
    let minutes = last.at.as_secs_f64() / 60.0;
    println!();
    println!("| figure | value | bound |");
    println!("|---|---|---|");
    println!("| duration | {minutes:.1} min | |");
    println!(
        "| requests | {} ({:.0}/s) | |",
        last.requests,
        last.requests as f64 / last.at.as_secs_f64()
    );
    println!(
        "| crashes sent to {} | {} | |",
        args.crash,
        crashes.load(Ordering::Relaxed)
    );
    println!("| {} restarts | {} | > 0 |", args.crash, last.restarts);
    println!(
        "| RSS after warm-up → end (peak) | {:.1} → {:.1} MiB ({:.1}) | |",
        first_rss as f64 / 1024.0,
        last.rss_kib as f64 / 1024.0,
        peak_rss as f64 / 1024.0
    );
    println!(
        "| RSS drift | {drift:+.1} % | ≤ {:.0} % |",
        args.max_rss_drift
    );
    println!(
        "| open descriptors after warm-up → end | {first_fds} → {} | |",
        last.fds
    );
    println!(
        "| of which not database files: growth | {fd_growth:+} | ≤ +{} |",
        args.max_fd_growth
    );
    println!(
        "| database files after warm-up → end | {} → {} | ≤ {db_bound} (the pools' bound) |",
        db(&first_kinds),
        db(&last.fd_kinds)
    );
    let kinds: Vec<String> = first_kinds
        .keys()
        .chain(last.fd_kinds.keys())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .map(|kind| {
            let of = |m: &BTreeMap<&'static str, i64>| m.get(kind).copied().unwrap_or(0);
            format!("{kind} {} → {}", of(&first_kinds), of(&last.fd_kinds))
        })
        .collect();
    println!("| of which, by kind | {} | |", kinds.join(", "));
    println!(
        "| errors outside {} | {elsewhere} of {} | 0 |",
        args.crash, last.requests
    );
    println!(
        "| {} errors (its crashes, its open circuit) | {} | |",
        args.crash,
        last.errors.get(args.crash.as_str()).copied().unwrap_or(0)
    );
    println!(
        "| {} serving again after the crashes stop (its circuit's retry was {:.1} s away) | {} | within that + 10 s |",
        args.crash,
        retry_in.as_secs_f64(),
        recovered.map_or("never".to_owned(), |after| format!("{:.1} s", after.as_secs_f64()))
    );

    // Lines of bench/all.sh's table: each figure against its bound.
    println!(
        "headline\tsoak {minutes:.0} min, {} crashing every {:?}\tRSS after warm-up → end\t{:.1} MiB ({drift:+.1} %)\t{:.1} MiB, bound ±{:.0} %\t{:.2}",
        args.crash,
        args.crash_every,
        last.rss_kib as f64 / 1024.0,
        first_rss as f64 / 1024.0,
        args.max_rss_drift,
        last.rss_kib as f64 / first_rss as f64,
    );
    println!(
        "headline\tsoak {minutes:.0} min\terrors outside {}; descriptors' growth (database files apart); database files; {} restarts\t{elsewhere} of {}; {fd_growth:+}; {}; {}\t0; ≤ +{}; ≤ {db_bound}; > 0\t-",
        args.crash,
        args.crash,
        last.requests,
        db(&last.fd_kinds),
        last.restarts,
        args.max_fd_growth,
    );

    let mut broken = Vec::new();
    if drift.abs() > args.max_rss_drift {
        broken.push(format!("RSS drifted {drift:+.1} %"));
    }
    if fd_growth > args.max_fd_growth {
        broken.push(format!(
            "{fd_growth} more descriptors open (database files apart)"
        ));
    }
    if db(&last.fd_kinds) > db_bound {
        broken.push(format!(
            "{} database files open, over the pools' bound {db_bound}",
            db(&last.fd_kinds)
        ));
    }
    if elsewhere > 0 {
        broken.push(format!("{elsewhere} errors outside {}", args.crash));
    }
    if last.restarts == 0 {
        broken.push(format!("{} never restarted: no crash happened", args.crash));
    }
    if recovered.is_none() {
        broken.push(format!(
            "{} not serving within {:.1} s of the crashes' end",
            args.crash,
            (retry_in + Duration::from_secs(10)).as_secs_f64()
        ));
    }
    if !broken.is_empty() {
        bail!("soak failed: {}", broken.join("; "));
    }
    Ok(())
}

/// Registers a user of the run's own and signs in.
async fn sign_up(http: &reqwest::Client, public: &str) -> Result<String> {
    let email = format!("soak-{}@example.com", std::process::id());
    let password = "soak-password-long-enough";
    let registered = http
        .post(format!("http://{public}/api/v1/auth/register"))
        .json(&json!({"email": email, "password": password, "name": "Soak"}))
        .send()
        .await?;
    if !registered.status().is_success() {
        bail!("register: {}", registered.status());
    }
    let login: Value = http
        .post(format!("http://{public}/api/v1/auth/login"))
        .json(&json!({"email": email, "password": password}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    login["access_token"]
        .as_str()
        .map(str::to_owned)
        .context("login answered no access_token")
}

/// One client: a create, a read of it, the invoices, `me` and the
/// notifications, round and round at `rate` requests a second.
async fn load(
    http: reqwest::Client,
    public: String,
    token: String,
    rate: u32,
    client: usize,
    tally: Arc<Tally>,
    deadline: Instant,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(1) / rate.max(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut order: Option<String> = None;
    let mut step = client;
    while Instant::now() < deadline {
        tick.tick().await;
        let (service, request) = match step % 5 {
            0 => (
                "orders",
                http.post(format!("http://{public}/api/v1/orders"))
                    .json(&json!({"amount": 1250, "description": "soak"})),
            ),
            1 => match &order {
                Some(id) => (
                    "orders",
                    http.get(format!("http://{public}/api/v1/orders/{id}")),
                ),
                None => ("orders", http.get(format!("http://{public}/api/v1/orders"))),
            },
            2 => (
                "billing",
                http.get(format!("http://{public}/api/v1/invoices?limit=5")),
            ),
            3 => ("auth", http.get(format!("http://{public}/api/v1/auth/me"))),
            _ => (
                "notifications",
                http.get(format!("http://{public}/api/v1/notifications?limit=5")),
            ),
        };
        step += 1;
        let answer = request.bearer_auth(&token).send().await;
        let ok = match answer {
            Ok(response) if response.status().is_success() => {
                if service == "orders" && response.status() == 201 {
                    if let Ok(body) = response.json::<Value>().await {
                        order = body["id"].as_str().map(str::to_owned);
                    }
                }
                true
            }
            Ok(response) => {
                // The error's message tells a shed from an open circuit,
                // a restart or a database outage.
                let status = response.status();
                let message = match response.json::<Value>().await {
                    Ok(body) => body["error"]["message"].as_str().unwrap_or("").to_owned(),
                    Err(_) => String::new(),
                };
                eprintln!("{service}: {status} {message}");
                false
            }
            Err(err) => {
                eprintln!("{service}: {err}");
                false
            }
        };
        tally.count(service, ok);
    }
}

/// Makes the crashing service's worker panic every `every`.
async fn crasher(
    http: reqwest::Client,
    url: String,
    token: String,
    every: Duration,
    crashes: Arc<AtomicU64>,
    deadline: Instant,
) {
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    while Instant::now() < deadline {
        tick.tick().await;
        let sent = http
            .get(&url)
            .bearer_auth(&token)
            .header("x-fault", "panic")
            .send()
            .await;
        if let Ok(response) = sent {
            if response.status() == 500 {
                crashes.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

async fn sample(
    http: &reqwest::Client,
    args: &Args,
    at: Duration,
    tally: &Tally,
) -> Result<Sample> {
    let status = std::fs::read_to_string(format!("/proc/{}/status", args.pid))
        .context("the server is gone")?;
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS")?;
    let fd_kinds = descriptors_by_kind(args.pid)?;
    let fds = fd_kinds.values().sum();
    let node: Value = admin_get(http, args, &format!("/admin/actors/{}", args.crash))
        .await?
        .json()
        .await?;
    let (requests, errors) = tally.snapshot();
    Ok(Sample {
        at,
        rss_kib,
        fds,
        fd_kinds,
        requests: requests.values().sum(),
        errors,
        restarts: restarts_of(&node),
    })
}

/// A successful answer of the admin listener at `path`.
async fn admin_get(http: &reqwest::Client, args: &Args, path: &str) -> Result<reqwest::Response> {
    Ok(http
        .get(format!("http://{}{path}", args.admin))
        .bearer_auth(&args.admin_token)
        .send()
        .await?
        .error_for_status()?)
}

const DATABASE_FILES: &str = "database files";

/// The most descriptors the server's SQLite pools may hold, from its
/// `db_pool_max_connections{service}` gauges: each connection holds its
/// database file and its WAL, and each database has one `-shm`.
async fn database_descriptor_bound(http: &reqwest::Client, args: &Args) -> Result<i64> {
    let metrics = admin_get(http, args, "/metrics").await?.text().await?;
    let pools: Vec<f64> = metrics
        .lines()
        .filter(|line| line.starts_with("db_pool_max_connections{"))
        .filter_map(|line| line.rsplit(' ').next()?.parse().ok())
        .collect();
    if pools.is_empty() {
        bail!("/metrics has no db_pool_max_connections");
    }
    Ok(pools.iter().map(|max| 2 * *max as i64 + 1).sum())
}

/// The server's open descriptors by what they are: sockets, its database
/// files (SQLite's `.db`, `-wal`, `-shm`), pipes, anonymous inodes (epoll,
/// eventfd, timerfd) and other files.
fn descriptors_by_kind(pid: u32) -> Result<BTreeMap<&'static str, i64>> {
    let mut kinds = BTreeMap::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd")).context("the server is gone")? {
        // A descriptor closed between the listing and the read is not open.
        let Ok(target) = std::fs::read_link(entry?.path()) else {
            continue;
        };
        let target = target.to_string_lossy();
        let kind = if target.starts_with("socket:") {
            "sockets"
        } else if target.starts_with("pipe:") {
            "pipes"
        } else if target.starts_with("anon_inode:") {
            "anon inodes"
        } else if [".db", ".db-wal", ".db-shm"]
            .iter()
            .any(|end| target.ends_with(end))
        {
            DATABASE_FILES
        } else {
            "other files"
        };
        *kinds.entry(kind).or_insert(0) += 1;
    }
    Ok(kinds)
}

/// How long until the crashing service's open circuit retries (zero if it
/// is not open).
async fn circuit_retry_in(http: &reqwest::Client, args: &Args) -> Result<Duration> {
    let node: Value = admin_get(http, args, &format!("/admin/actors/{}", args.crash))
        .await?
        .json()
        .await?;
    let Some(retry_at) = node["circuit"]["retry_at"].as_str() else {
        return Ok(Duration::ZERO);
    };
    let retry_at =
        time::OffsetDateTime::parse(retry_at, &time::format_description::well_known::Rfc3339)
            .context("circuit.retry_at is not RFC 3339")?;
    let left = retry_at - time::OffsetDateTime::now_utc();
    Ok(Duration::try_from(left).unwrap_or(Duration::ZERO))
}

/// Asks `url` every 250 ms until it answers a success, for at most `limit`:
/// whether it did.
async fn serving_again(http: &reqwest::Client, url: &str, token: &str, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        let answer = http.get(url).bearer_auth(token).send().await;
        if answer.is_ok_and(|response| response.status().is_success()) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    false
}

/// The service's restarts (`restarts` of its node: one per restart, however
/// many of its workers its strategy restarted; each worker's node counts
/// its own, so summing the tree would count a one_for_all restart again per
/// worker).
fn restarts_of(node: &Value) -> u64 {
    node["restarts"].as_u64().unwrap_or(0)
}
