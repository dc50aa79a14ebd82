//! Load generator for overload (issue 12): floods one route at a multiple of
//! what its service can serve and reports what overload does to it.
//!
//! 1. **Calm**: `GET /api/v1/orders/{id}` alone at `--probe-rate` for
//!    `--calm-for` seconds: the read latency to compare against.
//! 2. **Capacity**: the flooded route closed-loop from one client per worker
//!    of its service (or `--capacity-concurrency`) for `--capacity-for`
//!    seconds; its successes per second are the service's capacity.
//! 3. **Flood**: the route open-loop at `--factor` × capacity (or, with
//!    `--closed N`, N clients as fast as they are answered, as `wrk -cN`
//!    does) for `--duration` seconds, with the same read probe beside it.
//!    Open loop: requests are sent on schedule whatever the answers, so a
//!    slow server does not slow the client down (no coordinated omission);
//!    at most `--max-in-flight` at once, the rest counted as not sent.
//! 4. **After**: the flooded service's restarts and circuit from the admin
//!    listener (before and after), then one more request of the route.
//!
//! Reported: offered and admitted rate, p50/p99 of the admitted requests
//! only, shed (503) rate, 504s, other answers and socket errors, the read
//! probe's p99 calm vs during the flood, restarts during the flood, the
//! circuit, and the answer right after.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Parser, ValueEnum};
use serde_json::{json, Value};
use tokio::sync::Semaphore;

#[derive(Parser)]
struct Args {
    /// Public base URL of stageworks.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// Admin base URL (for `/admin/actors`).
    #[arg(long, default_value = "http://127.0.0.1:9090")]
    admin: String,
    /// The admin token, if the admin listener has one.
    #[arg(long, env = "STAGEWORKS__ADMIN__TOKEN")]
    admin_token: Option<String>,
    #[arg(long, default_value = "overload-bench@example.com")]
    email: String,
    #[arg(long, default_value = "overload-bench-password")]
    password: String,
    /// The route to flood.
    #[arg(long, value_enum)]
    target: Target,
    /// The flood's rate as a multiple of the measured capacity.
    #[arg(long, default_value_t = 4.0)]
    factor: f64,
    /// Flood with this many closed-loop clients instead of an open-loop rate.
    #[arg(long)]
    closed: Option<usize>,
    /// Seconds of flood.
    #[arg(long, default_value_t = 20)]
    duration: u64,
    /// Seconds of the capacity run.
    #[arg(long, default_value_t = 10)]
    capacity_for: u64,
    /// Closed-loop clients of the capacity run; default: one per worker of
    /// the service (from the admin listener), so that the run measures what
    /// the workers get through without queueing or shedding.
    #[arg(long)]
    capacity_concurrency: Option<usize>,
    /// Seconds of the calm read probe.
    #[arg(long, default_value_t = 10)]
    calm_for: u64,
    /// Reads per second of the probe, calm and during the flood.
    #[arg(long, default_value_t = 50)]
    probe_rate: u64,
    /// Open loop: requests in flight at most (each holds a connection).
    #[arg(long, default_value_t = 8192)]
    max_in_flight: usize,
    /// Label printed with the results.
    #[arg(long, default_value = "")]
    label: String,
}

#[derive(Clone, Copy, ValueEnum)]
enum Target {
    /// `POST /api/v1/auth/login` with the right password (argon2id each).
    Login,
    /// `POST /api/v1/orders` as the bench user.
    CreateOrder,
}

impl Target {
    fn service(self) -> &'static str {
        match self {
            Target::Login => "auth",
            Target::CreateOrder => "orders",
        }
    }
}

/// What a run's requests got.
#[derive(Default)]
struct Outcomes {
    /// Latency of every success.
    admitted: Vec<Duration>,
    /// 503 with retry-after.
    shed: u64,
    /// 504: admitted but not answered within the call timeout.
    timed_out: u64,
    /// Any other status.
    other: u64,
    /// Socket errors and client timeouts.
    errors: u64,
    /// Open loop: not sent because `--max-in-flight` were in flight.
    not_sent: u64,
}

impl Outcomes {
    fn record(&mut self, answer: Result<reqwest::StatusCode, reqwest::Error>, took: Duration) {
        match answer {
            Ok(status) if status.is_success() => self.admitted.push(took),
            Ok(status) if status == 503 => self.shed += 1,
            Ok(status) if status == 504 => self.timed_out += 1,
            Ok(_) => self.other += 1,
            Err(_) => self.errors += 1,
        }
    }

    fn answered(&self) -> u64 {
        self.admitted.len() as u64 + self.shed + self.timed_out + self.other
    }

    /// The `p` quantile of the successes' latency, in milliseconds.
    fn quantile_ms(&mut self, p: f64) -> f64 {
        if self.admitted.is_empty() {
            return f64::NAN;
        }
        self.admitted.sort_unstable();
        let i = ((self.admitted.len() as f64 - 1.0) * p).round() as usize;
        self.admitted[i].as_secs_f64() * 1000.0
    }
}

/// Sends one request of a kind and tells its status.
#[derive(Clone)]
struct Requester {
    client: reqwest::Client,
    url: String,
    token: String,
    email: String,
    password: String,
}

impl Requester {
    async fn send(&self, target: Target) -> Result<reqwest::StatusCode, reqwest::Error> {
        let request = match target {
            Target::Login => self
                .client
                .post(format!("{}/api/v1/auth/login", self.url))
                .json(&json!({"email": self.email, "password": self.password})),
            Target::CreateOrder => self
                .client
                .post(format!("{}/api/v1/orders", self.url))
                .bearer_auth(&self.token)
                .json(&json!({"amount": 1234, "currency": "USD"})),
        };
        Ok(request.send().await?.status())
    }

    async fn read(&self, path: &str) -> Result<reqwest::StatusCode, reqwest::Error> {
        let url = format!("{}{path}", self.url);
        let answer = self.client.get(url).bearer_auth(&self.token).send().await?;
        Ok(answer.status())
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()?;
    let token = sign_in(&client, &args).await?;
    let requester = Requester {
        client: client.clone(),
        url: args.url.clone(),
        token,
        email: args.email.clone(),
        password: args.password.clone(),
    };
    let order_path = create_order(&requester).await?;
    let service = args.target.service();

    let workers = service_node(&client, &args, service).await?["children"]
        .as_array()
        .map_or(1, Vec::len);
    let mut calm = probe(
        &requester,
        &order_path,
        args.probe_rate,
        secs(args.calm_for),
    )
    .await;
    let capacity = closed_loop(
        &requester,
        args.target,
        args.capacity_concurrency.unwrap_or(workers),
        secs(args.capacity_for),
    )
    .await;
    let capacity_rate = capacity.admitted.len() as f64 / args.capacity_for as f64;
    if capacity_rate < 1.0 {
        bail!(
            "the capacity run admitted {} requests",
            capacity.admitted.len()
        );
    }

    let before = service_node(&client, &args, service).await?;
    let started = Instant::now();
    let offered_rate = args.factor * capacity_rate;
    let flood = {
        let requester = requester.clone();
        let (target, duration) = (args.target, secs(args.duration));
        let (closed, max_in_flight) = (args.closed, args.max_in_flight);
        tokio::spawn(async move {
            match closed {
                Some(clients) => closed_loop(&requester, target, clients, duration).await,
                None => open_loop(&requester, target, offered_rate, duration, max_in_flight).await,
            }
        })
    };
    let mut during = probe(
        &requester,
        &order_path,
        args.probe_rate,
        secs(args.duration),
    )
    .await;
    let mut flood = flood.await?;
    // Rates over the flood itself; answers still arriving after it count.
    let flood_secs = (args.duration as f64).max(1.0);
    let drained_after = started.elapsed().as_secs_f64() - flood_secs;
    let after = service_node(&client, &args, service).await?;
    let next = requester.send(args.target).await;

    let restarts = restarts(&after).saturating_sub(restarts(&before));
    let sent = flood.answered() + flood.errors;
    let offered = match args.closed {
        Some(clients) => format!(
            "{clients} closed-loop clients, {:.0}/s sent",
            sent as f64 / flood_secs
        ),
        None => format!(
            "{:.0}/s offered ({}× capacity {capacity_rate:.0}/s), {:.0}/s sent",
            offered_rate,
            args.factor,
            sent as f64 / flood_secs
        ),
    };
    let (calm_p99, during_p99) = (calm.quantile_ms(0.99), during.quantile_ms(0.99));
    println!(
        "{label}{target} flood for {flood_secs:.0} s (answered {drained_after:.1} s after): {offered} | admitted {admitted} ({admitted_rate:.0}/s) \
         p50 {p50:.1} ms p99 {p99:.1} ms | shed {shed} ({shed_pct:.1} %) | 504 {timed_out} | other {other} | \
         errors {errors} | not sent {not_sent} | GET order p99 calm {calm_p99:.2} ms, flood {during_p99:.2} ms \
         ({ratio:.2}×; of {probes} reads {read_shed} shed, {read_504} timed out, {read_errors} errors) | restarts {restarts} | circuit {circuit} | \
         next {target}: {next}",
        label = if args.label.is_empty() { String::new() } else { format!("{}: ", args.label) },
        target = service_route(args.target),
        admitted = flood.admitted.len(),
        admitted_rate = flood.admitted.len() as f64 / flood_secs,
        p50 = flood.quantile_ms(0.50),
        p99 = flood.quantile_ms(0.99),
        shed = flood.shed,
        shed_pct = 100.0 * flood.shed as f64 / flood.answered().max(1) as f64,
        timed_out = flood.timed_out,
        other = flood.other,
        errors = flood.errors,
        not_sent = flood.not_sent,
        ratio = during_p99 / calm_p99,
        read_shed = during.shed,
        read_504 = during.timed_out,
        read_errors = during.errors + during.other,
        probes = during.answered() + during.errors,
        circuit = after["circuit"]["state"].as_str().unwrap_or("?"),
        next = match next {
            Ok(status) => status.as_u16().to_string(),
            Err(err) => err.to_string(),
        },
    );
    // Why reads were refused, if they were: the circuit's trips and the
    // outages (a dependency taken for down) during the flood, and the
    // service's last failure.
    println!(
        "{service} during the flood: circuit trips {trips}, outages {outages}; last failure {last}",
        trips = grown(&before, &after, "/circuit/trips"),
        outages = grown(&before, &after, "/outage/outages"),
        last = after["last_failure"],
    );
    // One line for bench/all.sh's table: the reads beside the flood against
    // calm, and what must hold (nothing restarted).
    println!(
        "headline\toverload {}\tGET order p99 during the flood; shed; restarts\t{during_p99:.2} ms; {:.1} % shed; {restarts} restarts\tcalm {calm_p99:.2} ms\t{:.2}",
        args.label,
        100.0 * flood.shed as f64 / flood.answered().max(1) as f64,
        during_p99 / calm_p99,
    );
    Ok(())
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn service_route(target: Target) -> &'static str {
    match target {
        Target::Login => "login",
        Target::CreateOrder => "create-order",
    }
}

/// `clients` tasks each sending the next request when the last is answered.
async fn closed_loop(
    requester: &Requester,
    target: Target,
    clients: usize,
    duration: Duration,
) -> Outcomes {
    let outcomes = Arc::new(Mutex::new(Outcomes::default()));
    let deadline = Instant::now() + duration;
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let (requester, outcomes) = (requester.clone(), outcomes.clone());
            tokio::spawn(async move {
                while Instant::now() < deadline {
                    let sent = Instant::now();
                    let answer = requester.send(target).await;
                    lock(&outcomes).record(answer, sent.elapsed());
                }
            })
        })
        .collect();
    for task in tasks {
        let _ = task.await;
    }
    take(outcomes)
}

/// Requests sent on a schedule of `rate` per second, whatever the answers.
async fn open_loop(
    requester: &Requester,
    target: Target,
    rate: f64,
    duration: Duration,
    max_in_flight: usize,
) -> Outcomes {
    let outcomes = Arc::new(Mutex::new(Outcomes::default()));
    let in_flight = Arc::new(Semaphore::new(max_in_flight));
    let mut tasks = Vec::new();
    let started = Instant::now();
    let mut ticks = tokio::time::interval(Duration::from_millis(1));
    let mut scheduled: u64 = 0;
    while started.elapsed() < duration {
        ticks.tick().await;
        let due = (started.elapsed().as_secs_f64() * rate) as u64;
        while scheduled < due {
            scheduled += 1;
            let Ok(permit) = in_flight.clone().try_acquire_owned() else {
                lock(&outcomes).not_sent += 1;
                continue;
            };
            let (requester, outcomes) = (requester.clone(), outcomes.clone());
            tasks.push(tokio::spawn(async move {
                let sent = Instant::now();
                let answer = requester.send(target).await;
                lock(&outcomes).record(answer, sent.elapsed());
                drop(permit);
            }));
        }
    }
    for task in tasks {
        let _ = task.await;
    }
    take(outcomes)
}

/// Reads `path` at `rate` per second for `duration`, open loop.
async fn probe(requester: &Requester, path: &str, rate: u64, duration: Duration) -> Outcomes {
    let outcomes = Arc::new(Mutex::new(Outcomes::default()));
    let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / rate.max(1) as f64));
    let started = Instant::now();
    let mut tasks = Vec::new();
    while started.elapsed() < duration {
        ticks.tick().await;
        let (requester, outcomes, path) = (requester.clone(), outcomes.clone(), path.to_owned());
        tasks.push(tokio::spawn(async move {
            let sent = Instant::now();
            let answer = requester.read(&path).await;
            lock(&outcomes).record(answer, sent.elapsed());
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
    take(outcomes)
}

fn lock(outcomes: &Mutex<Outcomes>) -> std::sync::MutexGuard<'_, Outcomes> {
    outcomes
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn take(outcomes: Arc<Mutex<Outcomes>>) -> Outcomes {
    std::mem::take(&mut *lock(&outcomes))
}

async fn sign_in(client: &reqwest::Client, args: &Args) -> Result<String> {
    let body = json!({"email": args.email, "password": args.password, "name": "overload bench"});
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

/// Creates the order the read probe reads; answers its path.
async fn create_order(requester: &Requester) -> Result<String> {
    let created: Value = requester
        .client
        .post(format!("{}/api/v1/orders", requester.url))
        .bearer_auth(&requester.token)
        .json(&json!({"amount": 500, "currency": "USD"}))
        .send()
        .await?
        .json()
        .await?;
    let id = created["id"]
        .as_str()
        .context("no id in the created order")?;
    Ok(format!("/api/v1/orders/{id}"))
}

/// The service's node in the supervision tree.
async fn service_node(client: &reqwest::Client, args: &Args, service: &str) -> Result<Value> {
    let mut request = client.get(format!("{}/admin/actors/{service}", args.admin));
    if let Some(token) = &args.admin_token {
        request = request.bearer_auth(token);
    }
    let node: Value = request.send().await?.json().await?;
    if node["name"] != service {
        bail!("no {service} node in the admin answer: {node}");
    }
    Ok(node)
}

/// How much a counter of a service node (a JSON pointer) grew.
fn grown(before: &Value, after: &Value, pointer: &str) -> u64 {
    let read = |node: &Value| node.pointer(pointer).and_then(Value::as_u64).unwrap_or(0);
    read(after).saturating_sub(read(before))
}

/// Restarts of a service node and its workers.
fn restarts(node: &Value) -> u64 {
    let own = node["restarts"].as_u64().unwrap_or(0);
    let workers = node["children"].as_array().map_or(0, |children| {
        children
            .iter()
            .map(|c| c["restarts"].as_u64().unwrap_or(0))
            .sum()
    });
    own + workers
}
