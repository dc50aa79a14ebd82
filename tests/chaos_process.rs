//! The chaos suite's process and data cases (issue 17): each case states
//! what must hold and checks it, over real HTTP (in process, or the real
//! binary where a process must die).
//!
//! | Test | Fault | Expectation |
//! |------|-------|-------------|
//! | `a_panic_loop_in_orders_leaves_billing_and_live_unharmed` | a client hammers orders with `x-fault: panic` in [`WINDOWS`] windows of [`WINDOW`], alternating with calm ones | billing's p50 latency in the panicking windows ≤ 3 × its p50 in the calm ones + 5 ms; `/live` answers 200 to every probe; only 500 and 503 from orders; orders' circuit opens, and once the panics stop it recloses by itself (half-open → closed) and orders serves again |
//! | `handlers_stuck_past_the_call_timeout_answer_504_in_time_and_the_queue_stays_bounded` | handlers sleep past the call timeout (`x-fault: delay=…`) under [`STUCK_CLIENTS`] clients | every answer is 504 (or 503 refused at once), none later than call timeout + [`ANSWER_SLACK`]; the queue never holds more than its limit; after the load the queue drains to 0 within [`DRAIN_WITHIN`]; before that, handlers slower than usual but within the call timeout all answer 200 and restart nobody |
//! | `a_full_disk_refuses_writes_with_503_keeps_reads_and_recovers` | the SQLite data dir is a 24 MiB tmpfs, filled to ENOSPC | writes answer 503 `SERVICE_UNAVAILABLE` saying the storage is full, within [`REFUSED_WITHIN`]; reads and `/live` go on; nothing restarts and the circuit stays closed; once the filler is gone writes are accepted again without a restart; every 201 is still there (in `orders.db` itself, after the app stopped) and invoiced, and `PRAGMA integrity_check` is `ok` on every database file (the regression test of the SQLite writer fix, docs/DESIGN.md) |
//! | `twenty_sigkills_lose_nothing_and_the_pipeline_catches_up_on_sqlite` / `…_on_postgres` | the real binary is SIGKILLed [`CHAOS_KILLS`] times under 8 concurrent order writers | after each restart every order in the database is invoiced within [`CATCH_UP_WITHIN`] of `/ready`; in the end no accepted order is lost, none is invoiced twice, invoice numbers run 1..N |
//! | `database_files_made_read_only_refuse_writes_with_503_and_recover_by_themselves` | orders' `orders.db` and `-wal` made immutable (`chattr +i`) under the running app, then writable again | writes answer 503 `SERVICE_UNAVAILABLE` with retry-after within [`REFUSED_WITHIN`]; reads and `/live` go on; nothing restarts; once writable, writes are accepted again without a restart; every 201 is in `orders.db` and invoiced, integrity `ok` (the regression test of the writer-connection fix in `storage/group_commit.rs`) |
//!
//! The read-only case makes files immutable rather than remounting their
//! filesystem read-only: Linux refuses a read-only remount while a process
//! holds a file on it open for writing (EBUSY), and SQLite keeps its
//! database and WAL open; an immutable file refuses every write, root's and
//! through descriptors already open, as a read-only filesystem does. It
//! needs root and ext4 (`chattr`), and fails under `CI` without them.
//!
//! The tmpfs case mounts a filesystem: it needs root (`mount`). Where that
//! is not permitted it prints a notice and passes, unless `CI` is set, where
//! it fails.

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::binary::wait_ready;
use common::sigkill::{
    assert_nothing_lost, create_until_killed, random_between, start_with, token,
};
use common::{expect_error, spawn_app_in, spawn_app_with, test_config, TestApp, ALICE, BOB};
use reqwest::Method;
use serde_json::{json, Value};

// ---- shared helpers -------------------------------------------------------------

/// One case at a time: the panic loop measures latency, and a SIGKILL run
/// beside it on the same two cores would be what it measured.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The `q`-quantile of some latencies (nearest rank).
fn quantile(latencies: &[Duration], q: f64) -> Duration {
    assert!(!latencies.is_empty(), "no latencies to take a quantile of");
    let mut sorted = latencies.to_vec();
    sorted.sort();
    let rank = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Probes `/live` every 10 ms until `stop`: (probes, answers that were not 200).
async fn probe_live(app: Arc<TestApp>, stop: Arc<AtomicBool>) -> (usize, Vec<String>) {
    let (mut probes, mut bad) = (0, Vec::new());
    while !stop.load(Ordering::Relaxed) {
        probes += 1;
        match app.client.get(app.url("/live")).send().await {
            Ok(live) if live.status() == 200 => {}
            Ok(live) => bad.push(format!("status {}", live.status())),
            Err(e) => bad.push(format!("no answer: {e}")),
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    (probes, bad)
}

// ---- 1. a panic loop ------------------------------------------------------------

/// Calm and panicking windows alternate ([`WINDOWS`] of each, [`WINDOW`]
/// long): on a machine shared with other builds and tests, load moves by
/// the second, and one calm stretch before one panicking stretch measured
/// that drift as often as the panics (from 1x to 6x between runs).
/// Interleaved, drift falls on both sides alike.
const WINDOWS: usize = 4;
const WINDOW: Duration = Duration::from_millis(800);
/// Concurrent clients sending `x-fault: panic` to orders, each pausing
/// [`HAMMER_PAUSE`] between requests: an open circuit answers at once, and
/// an unpaced loop of those (each a request through the edge, its token
/// checked) would measure the test's own CPU use, not the panics' effect,
/// on a shared 2-core machine. Every half-open restart still meets a panic
/// at once: the loop panics as often as the circuit lets it.
const HAMMERS: usize = 2;
const HAMMER_PAUSE: Duration = Duration::from_millis(10);

/// Reads billing's invoice list as Bob, one request after the other, for
/// `how_long`: each request's latency.
async fn measure_billing(app: &TestApp, how_long: Duration) -> Vec<Duration> {
    let mut latencies = Vec::new();
    let until = Instant::now() + how_long;
    while Instant::now() < until {
        let sent = Instant::now();
        let response = app
            .as_user(Method::GET, "/api/v1/invoices", BOB)
            .send()
            .await
            .expect("billing answers");
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        assert_eq!(status, 200, "billing during the panic loop: {body}");
        latencies.push(sent.elapsed());
    }
    latencies
}

/// What orders answered the panicking client.
#[derive(Default, Debug)]
struct PanicTally {
    /// 500: the handler panicked.
    panicked: usize,
    /// 503: circuit open, or workers restarting.
    refused: usize,
    other: Vec<u16>,
}

/// Sends `x-fault: panic` to orders while `panicking`, until `stop`.
async fn hammer_with_panics(
    app: Arc<TestApp>,
    panicking: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
) -> PanicTally {
    let mut tally = PanicTally::default();
    while !stop.load(Ordering::Relaxed) {
        if !panicking.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(5)).await;
            continue;
        }
        let answer = app
            .as_user(Method::GET, "/api/v1/orders", ALICE)
            .header("x-fault", "panic")
            .send()
            .await
            .expect("orders answers");
        match answer.status().as_u16() {
            500 => tally.panicked += 1,
            503 => tally.refused += 1,
            status => tally.other.push(status),
        }
        tokio::time::sleep(HAMMER_PAUSE).await;
    }
    tally
}

/// The bound on billing's p50 during the panic loop: the aim is
/// 1.5× in the bench (bench/chaos.sh); a test on a shared 2-core machine,
/// where the panicking client and the panics' backtraces run on the same
/// cores, can only assert it loosely. 3× plus 5 ms fails if the panics
/// starve other services (restarts serialised behind them, a blocked
/// runtime thread), not when the machine is merely busy.
fn panic_loop_bound(calm_p50: Duration) -> Duration {
    calm_p50 * 3 + Duration::from_millis(5)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_panic_loop_in_orders_leaves_billing_and_live_unharmed() {
    let _serial = SERIAL.lock().await;
    let app = Arc::new(
        spawn_app_with(|c| {
            let orders = c.services.get_mut("orders").unwrap();
            // Short open times, so the loop trips the circuit several times
            // and it recloses soon after the loop ends.
            orders.open_for = Duration::from_millis(300);
            orders.open_for_max = Duration::from_secs(1);
        })
        .await,
    );
    let stop_probe = Arc::new(AtomicBool::new(false));
    let probe = tokio::spawn(probe_live(app.clone(), stop_probe.clone()));

    // A warm-up of billing's connections and caches.
    measure_billing(&app, Duration::from_millis(300)).await;

    let (panicking, stop_hammer) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    let hammers: Vec<_> = (0..HAMMERS)
        .map(|_| {
            tokio::spawn(hammer_with_panics(
                app.clone(),
                panicking.clone(),
                stop_hammer.clone(),
            ))
        })
        .collect();
    let (mut calm, mut during) = (Vec::new(), Vec::new());
    for _ in 0..WINDOWS {
        panicking.store(false, Ordering::Relaxed);
        calm.extend(measure_billing(&app, WINDOW).await);
        panicking.store(true, Ordering::Relaxed);
        during.extend(measure_billing(&app, WINDOW).await);
    }
    stop_hammer.store(true, Ordering::Relaxed);
    let mut tally = PanicTally::default();
    for hammer in hammers {
        let mine = hammer.await.expect("hammer");
        tally.panicked += mine.panicked;
        tally.refused += mine.refused;
        tally.other.extend(mine.other);
    }
    let tripped = app.admin_node("orders").await;

    // The panics have stopped: orders comes back by itself (the next
    // half-open restart, then a first success closes the circuit).
    let stopped_at = Instant::now();
    let recovered_after = loop {
        let created = app.create_order(ALICE, json!({"amount": 17})).await;
        if created.status() == 201 {
            break stopped_at.elapsed();
        }
        assert_eq!(created.status(), 503, "orders after the panic loop");
        assert!(
            stopped_at.elapsed() < Duration::from_secs(10),
            "orders did not serve again within 10 s of the last panic"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    app.wait_for_circuit("orders", "closed").await;
    app.wait_for_status("orders", "running").await;
    stop_probe.store(true, Ordering::Relaxed);
    let (probes, bad_probes) = probe.await.expect("probe");

    let (calm_p50, during_p50) = (quantile(&calm, 0.5), quantile(&during, 0.5));
    eprintln!(
        "panic loop: billing p50 calm {calm_p50:?} ({} requests) vs during {during_p50:?} ({} \
         requests), p99 {:?} vs {:?}; orders answered {} panics (500) and {} refusals (503); \
         circuit trips {}; {probes} /live probes; orders served again {recovered_after:?} after \
         the loop",
        calm.len(),
        during.len(),
        quantile(&calm, 0.99),
        quantile(&during, 0.99),
        tally.panicked,
        tally.refused,
        tripped["circuit"]["trips"],
    );
    assert!(
        bad_probes.is_empty(),
        "/live failed {} of {probes} probes: {bad_probes:?}",
        bad_probes.len()
    );
    assert!(probes >= 100, "only {probes} /live probes ran");
    assert!(tally.other.is_empty(), "orders answered {:?}", tally.other);
    assert!(
        tally.panicked >= 3,
        "the loop made only {} handlers panic",
        tally.panicked
    );
    assert!(
        tripped["circuit"]["trips"].as_u64().unwrap_or(0) >= 1,
        "the panic loop never opened orders' circuit: {tripped}"
    );
    assert!(
        during_p50 <= panic_loop_bound(calm_p50),
        "billing's p50 went from {calm_p50:?} to {during_p50:?} during the panic loop (bound {:?})",
        panic_loop_bound(calm_p50)
    );
    let node = app.admin_node("orders").await;
    assert_eq!(node["circuit"]["state"], "closed", "{node}");
    let billing = app.admin_node("billing").await;
    assert_eq!(billing["restarts"], 0, "billing restarted: {billing}");
    assert_eq!(billing["circuit"]["state"], "closed", "{billing}");
}

// ---- 2. handlers slower than the call timeout -------------------------------------

const CALL_TIMEOUT: Duration = Duration::from_millis(500);
/// How late past the call timeout an answer may come: the front-end's own
/// work and a loaded 2-core machine's scheduling, not another wait.
const ANSWER_SLACK: Duration = Duration::from_millis(400);
const QUEUE_LIMIT: usize = 8;
/// More clients than the workers and the queue hold together.
const STUCK_CLIENTS: usize = 16;
const STUCK_FOR: Duration = Duration::from_secs(3);
/// After the load, the queue is empty within this (every message in it has
/// a deadline at most a call timeout away).
const DRAIN_WITHIN: Duration = Duration::from_secs(2);

#[derive(Default, Debug)]
struct SlowTally {
    ok: usize,
    timed_out: usize,
    refused: usize,
    /// Answers that came later than the call timeout + slack.
    late: Vec<Duration>,
    other: Vec<u16>,
    slowest: Duration,
}

impl SlowTally {
    fn add(&mut self, other: SlowTally) {
        self.ok += other.ok;
        self.timed_out += other.timed_out;
        self.refused += other.refused;
        self.late.extend(other.late);
        self.other.extend(other.other);
        self.slowest = self.slowest.max(other.slowest);
    }
}

/// Reads orders with `x-fault: delay=<delay_ms>` until `until`, timing each.
async fn slow_reads(app: Arc<TestApp>, delay_ms: u64, until: Instant) -> SlowTally {
    let mut tally = SlowTally::default();
    while Instant::now() < until {
        let sent = Instant::now();
        let answer = app
            .as_user(Method::GET, "/api/v1/orders", ALICE)
            .header("x-fault", format!("delay={delay_ms}"))
            .send()
            .await
            .expect("orders answers");
        let took = sent.elapsed();
        tally.slowest = tally.slowest.max(took);
        if took > CALL_TIMEOUT + ANSWER_SLACK {
            tally.late.push(took);
        }
        match answer.status().as_u16() {
            200 => tally.ok += 1,
            504 => {
                expect_error(answer, 504, "TIMEOUT").await;
                tally.timed_out += 1;
            }
            503 => {
                expect_error(answer, 503, "SERVICE_UNAVAILABLE").await;
                tally.refused += 1;
                // Refused at once: back off a little instead of spinning.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            status => tally.other.push(status),
        }
    }
    tally
}

#[tokio::test(flavor = "multi_thread")]
async fn handlers_stuck_past_the_call_timeout_answer_504_in_time_and_the_queue_stays_bounded() {
    let _serial = SERIAL.lock().await;
    let app = Arc::new(
        spawn_app_with(|c| {
            let orders = c.services.get_mut("orders").unwrap();
            orders.workers = 2;
            orders.call_timeout = CALL_TIMEOUT;
            orders.queue_limit = QUEUE_LIMIT;
            // Let callers queue for up to the whole call timeout (the
            // default sheds any that would wait a tenth of it), so the queue
            // fills and its limit is what bounds it.
            orders.max_queue_wait = CALL_TIMEOUT;
            // Stuck workers are restarted, and that counts against the
            // circuit; here it must stay closed so that every call meets
            // the queue and the timeout (the circuit has tests of its own).
            orders.max_restarts = 10_000;
        })
        .await,
    );

    // Busy, not stuck: as many clients as workers, each handler 300 ms of
    // a 500 ms call timeout. All answered, nobody restarted.
    let busy_until = Instant::now() + Duration::from_secs(2);
    let busy: Vec<_> = (0..2)
        .map(|_| tokio::spawn(slow_reads(app.clone(), 300, busy_until)))
        .collect();
    let mut calm = SlowTally::default();
    for client in busy {
        calm.add(client.await.expect("busy client"));
    }
    let after_busy = app.admin_node("orders").await;
    eprintln!(
        "busy: {} answered 200, {} 504, {} 503, slowest {:?}",
        calm.ok, calm.timed_out, calm.refused, calm.slowest
    );
    assert!(calm.ok >= 4, "{calm:?}");
    assert_eq!(
        (calm.timed_out, calm.refused, calm.other.len()),
        (0, 0, 0),
        "a handler within the call timeout was not answered: {calm:?}"
    );
    assert_eq!(after_busy["restarts"], 0, "{after_busy}");
    for worker in after_busy["children"].as_array().expect("workers") {
        assert_eq!(worker["restarts"], 0, "a busy worker restarted: {worker}");
    }
    assert!(after_busy["last_failure"].is_null(), "{after_busy}");

    // Stuck: every handler sleeps four call timeouts.
    let stuck_until = Instant::now() + STUCK_FOR;
    let clients: Vec<_> = (0..STUCK_CLIENTS)
        .map(|_| tokio::spawn(slow_reads(app.clone(), 2_000, stuck_until)))
        .collect();
    let mut deepest = 0;
    let mut limit = 0;
    while Instant::now() < stuck_until {
        let node = app.admin_node("orders").await;
        deepest = deepest.max(node["mailbox_depth"].as_u64().expect("a depth"));
        limit = node["queue"]["limit"].as_u64().expect("a queue limit");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut stuck = SlowTally::default();
    for client in clients {
        stuck.add(client.await.expect("stuck client"));
    }

    // No pile-up: what was queued is answered or dropped by its deadline.
    let stopped = Instant::now();
    let drained_after = loop {
        let node = app.admin_node("orders").await;
        if node["mailbox_depth"] == 0 {
            break stopped.elapsed();
        }
        assert!(
            stopped.elapsed() < DRAIN_WITHIN,
            "orders' queue still holds messages {DRAIN_WITHIN:?} after the load: {node}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let node = app.admin_node("orders").await;
    eprintln!(
        "stuck: {} answered 504, {} 503, {} 200, slowest {:?}; deepest queue {deepest} of \
         {limit}; drained {drained_after:?} after the load; {} restarts, {} shed",
        stuck.timed_out,
        stuck.refused,
        stuck.ok,
        stuck.slowest,
        node["restarts"],
        node["queue"]["shed"],
    );
    assert_eq!(limit, QUEUE_LIMIT as u64, "{node}");
    assert!(
        deepest <= limit,
        "the queue held {deepest} messages, over its limit {limit}"
    );
    assert!(
        stuck.other.is_empty(),
        "unexpected statuses {:?}",
        stuck.other
    );
    assert_eq!(stuck.ok, 0, "a handler sleeping 2 s answered within 500 ms");
    // Each worker is stuck for a call timeout, then restarted: over
    // STUCK_FOR, at least one timeout per worker and stuck period.
    assert!(
        stuck.timed_out >= 4,
        "only {} calls timed out: {stuck:?}",
        stuck.timed_out
    );
    assert!(
        stuck.late.is_empty(),
        "{} answers came later than the call timeout + {ANSWER_SLACK:?}: {:?}",
        stuck.late.len(),
        stuck.late
    );
    // A stuck handler is the worker's failure: it was restarted, and the
    // service still serves.
    assert!(node["restarts"].as_u64().unwrap_or(0) >= 1, "{node}");
    app.wait_for_status("orders", "running").await;
    let (status, list) = common::json_of(app.as_user(Method::GET, "/api/v1/orders", ALICE)).await;
    assert_eq!(status, 200, "{list}");
}

// ---- 3. a full disk -----------------------------------------------------------------

/// A write refused for a full disk is answered within this: refused by the
/// database at once, not retried or waited out.
const REFUSED_WITHIN: Duration = Duration::from_millis(500);

/// A tmpfs mounted for one test, unmounted when dropped (lazily if the app
/// still holds a file on it).
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (`mount -t tmpfs -o size=…`). `None` if this
    /// machine does not let the test mount, after saying so (a failure
    /// under `CI`, where the case must run).
    fn mount(size: &str) -> Option<Tmpfs> {
        let dir = std::env::temp_dir().join(format!("stageworks-chaos-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&dir).expect("mount point");
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .output();
        match mounted {
            Ok(output) if output.status.success() => Some(Tmpfs { dir }),
            other => {
                let _ = std::fs::remove_dir(&dir);
                let why = match other {
                    Ok(output) => String::from_utf8_lossy(&output.stderr).trim().to_owned(),
                    Err(e) => e.to_string(),
                };
                assert!(
                    std::env::var_os("CI").is_none(),
                    "CI is set and this case needs to mount a tmpfs: {why}"
                );
                eprintln!("SKIPPED: this case needs `mount -t tmpfs` (root): {why}");
                None
            }
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let unmounted = std::process::Command::new("umount")
            .arg(&self.dir)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !unmounted {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.dir)
                .status();
        }
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// Writes a file in `dir` until the filesystem is full: its path.
fn fill(dir: &Path) -> PathBuf {
    use std::io::Write;
    let path = dir.join("filler");
    let mut file = std::fs::File::create(&path).expect("filler file");
    for chunk in [256 * 1024, 4096, 512] {
        let block = vec![0xa5u8; chunk];
        loop {
            match file.write_all(&block) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(28) => break,
                Err(e) => panic!("filling {}: {e}", path.display()),
            }
        }
    }
    let _ = file.sync_all();
    path
}

/// Every SQLite database file under `dir`.
fn database_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).expect("data dir").flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(database_files(&path));
        } else if path.extension().is_some_and(|e| e == "db") {
            files.push(path);
        }
    }
    files
}

async fn integrity_check(path: &Path) -> String {
    use sqlx::Connection;
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(false);
    let mut connection = sqlx::sqlite::SqliteConnection::connect_with(&options)
        .await
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let (verdict,): (String,) = sqlx::query_as("PRAGMA integrity_check")
        .fetch_one(&mut connection)
        .await
        .expect("integrity_check answers");
    verdict
}

/// The ids in an orders database file.
async fn order_ids_in(path: &Path) -> std::collections::HashSet<String> {
    use sqlx::Connection;
    let options = sqlx::sqlite::SqliteConnectOptions::new().filename(path);
    let mut connection = sqlx::sqlite::SqliteConnection::connect_with(&options)
        .await
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let ids: Vec<(String,)> = sqlx::query_as("SELECT id FROM orders")
        .fetch_all(&mut connection)
        .await
        .expect("orders read");
    ids.into_iter().map(|(id,)| id).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_disk_refuses_writes_with_503_keeps_reads_and_recovers() {
    let _serial = SERIAL.lock().await;
    let Some(tmpfs) = Tmpfs::mount("24m") else {
        return;
    };
    // SQLite whatever the environment says: the data dir is what fills up.
    let data = tempfile::tempdir_in(&tmpfs.dir).expect("data dir on the tmpfs");
    let data_path = data.path().to_owned();
    let mut app = spawn_app_in(test_config(&data), data, None).await;

    let mut accepted = Vec::new();
    let create = |app: &TestApp, n: usize| {
        app.as_user(Method::POST, "/api/v1/orders", ALICE)
            .json(&json!({"amount": 100 + n, "description": "x".repeat(200)}))
            .send()
    };
    for n in 0..20 {
        let created = create(&app, n).await.expect("orders answers");
        assert_eq!(created.status(), 201);
        let order: Value = created.json().await.expect("order JSON");
        accepted.push(order["id"].as_str().expect("an id").to_owned());
    }

    let filler = fill(&tmpfs.dir);
    // SQLite may still have room in pages it allocated before (the WAL is
    // rewritten from its start after a checkpoint): writes go on until it
    // needs a new one. Then each is refused, quickly and clearly.
    let mut refusals = Vec::new();
    let mut accepted_when_full = 0;
    for n in 0..5_000 {
        let sent = Instant::now();
        let answer = create(&app, n).await.expect("orders answers");
        let took = sent.elapsed();
        if answer.status() == 201 {
            let order: Value = answer.json().await.expect("order JSON");
            accepted.push(order["id"].as_str().expect("an id").to_owned());
            // Accepted, whether before the first refusal or after one
            // (SQLite and the other services free and reuse pages as they
            // go: a full filesystem has a few bytes again now and then).
            accepted_when_full += 1;
            continue;
        }
        let retry_after = answer.headers().get("retry-after").cloned();
        let body = expect_error(answer, 503, "SERVICE_UNAVAILABLE").await;
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains("full"),
            "the refusal says the storage is full: {body}"
        );
        assert!(retry_after.is_some(), "a refusal without retry-after");
        refusals.push(took);
        if refusals.len() == 10 {
            break;
        }
    }
    assert_eq!(refusals.len(), 10, "the full disk never refused a write");
    let slowest_refusal = refusals.iter().max().copied().unwrap_or_default();
    assert!(
        slowest_refusal < REFUSED_WITHIN,
        "refusals took up to {slowest_refusal:?}: {refusals:?}"
    );

    // Reads go on, and nothing is a failure.
    for id in &accepted {
        let (status, order) =
            common::json_of(app.as_user(Method::GET, &format!("/api/v1/orders/{id}"), ALICE)).await;
        assert_eq!(status, 200, "read of {id} on a full disk: {order}");
    }
    let (status, list) = common::json_of(app.as_user(Method::GET, "/api/v1/orders", ALICE)).await;
    assert_eq!(status, 200, "{list}");
    let live = app.client.get(app.url("/live")).send().await.expect("live");
    assert_eq!(live.status(), 200);
    let node = app.admin_node("orders").await;
    assert_eq!(node["restarts"], 0, "a full disk restarted orders: {node}");
    assert_eq!(node["circuit"]["state"], "closed", "{node}");

    // Room again: writes are accepted without a restart.
    std::fs::remove_file(&filler).expect("filler removed");
    let freed = Instant::now();
    let recovered_after = loop {
        let answer = create(&app, 9_999).await.expect("orders answers");
        if answer.status() == 201 {
            let order: Value = answer.json().await.expect("order JSON");
            accepted.push(order["id"].as_str().expect("an id").to_owned());
            break freed.elapsed();
        }
        assert!(
            freed.elapsed() < Duration::from_secs(10),
            "writes still refused 10 s after the disk had room: {}",
            answer.status()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    for n in 0..10 {
        let created = create(&app, 10_000 + n).await.expect("orders answers");
        assert_eq!(created.status(), 201, "a write after the disk had room");
        let order: Value = created.json().await.expect("order JSON");
        accepted.push(order["id"].as_str().expect("an id").to_owned());
    }

    // Every accepted order is there, and invoicing catches up on the
    // events it could not write while the disk was full.
    for id in &accepted {
        let (status, order) =
            common::json_of(app.as_user(Method::GET, &format!("/api/v1/orders/{id}"), ALICE)).await;
        assert_eq!(status, 200, "accepted order {id} is gone: {order}");
    }
    let total = accepted.len() as u64;
    app.eventually("/api/v1/invoices?limit=1", ALICE, |body| {
        body["pagination"]["total"].as_u64() == Some(total)
    })
    .await;
    app.stop().await;

    let files = database_files(&data_path);
    assert!(
        files.iter().any(|f| f.ends_with("orders.db")),
        "no orders.db in {files:?}"
    );
    for file in &files {
        assert_eq!(integrity_check(file).await, "ok", "{}", file.display());
    }
    // On disk, not only as the app shows it (reads may come from its row
    // cache): every accepted order is in the file.
    let on_disk = order_ids_in(&data_path.join("orders.db")).await;
    let missing: Vec<&String> = accepted
        .iter()
        .filter(|id| !on_disk.contains(*id))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} accepted orders are not in orders.db: {:?}",
        missing.len(),
        accepted.len(),
        &missing[..missing.len().min(5)]
    );
    eprintln!(
        "full disk: {accepted_when_full} writes still accepted once full, then 10 refused \
         (503) in at most {slowest_refusal:?}; writes accepted again {recovered_after:?} after \
         the filler went; {} orders all there and invoiced; integrity ok on {} files",
        accepted.len(),
        files.len()
    );
    drop(app);
    drop(tmpfs);
}

// ---- 4. SIGKILL, twenty times ------------------------------------------------------

const CHAOS_KILLS: usize = 20;
/// After each restart, every order in the database is invoiced within this
/// of `/ready`.
const CATCH_UP_WITHIN: Duration = Duration::from_secs(10);

async fn twenty_sigkills(database: Option<common::TestDatabase>) {
    let started = Instant::now();
    let data = tempfile::tempdir().expect("temp dir");
    let client = common::sigkill::client();
    let mut accepted: Vec<String> = Vec::new();
    let mut slowest_catch_up = Duration::ZERO;
    for round in 0..=CHAOS_KILLS {
        // Leases of a minute: the catch-up bound holds only if the restarted
        // process takes back what the killed one held, not once the leases
        // run out.
        let running = start_with(
            data.path(),
            database.as_ref(),
            &[
                ("STAGEWORKS__EVENTS__CLAIM_LEASE", "60s"),
                ("STAGEWORKS__EVENTS__STREAM_CLAIM_IDLE", "60s"),
            ],
        );
        wait_ready(&running.addr).await;
        let ready_at = Instant::now();
        let addr = running.addr.clone();
        let token = token(&addr, round == 0).await;
        // Orders committed by the killed process (201 or not) are all in
        // the database; each must be invoiced soon after the restart.
        loop {
            let orders = common::sigkill::total(&client, &addr, &token, "/api/v1/orders").await;
            let invoices = common::sigkill::total(&client, &addr, &token, "/api/v1/invoices").await;
            assert!(
                orders >= accepted.len() as u64,
                "round {round}: {orders} orders, {} accepted",
                accepted.len()
            );
            if invoices >= orders {
                slowest_catch_up = slowest_catch_up.max(ready_at.elapsed());
                break;
            }
            assert!(
                ready_at.elapsed() < CATCH_UP_WITHIN,
                "round {round}: {invoices} of {orders} orders invoiced {CATCH_UP_WITHIN:?} after \
                 /ready"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if round == CHAOS_KILLS {
            let (orders, invoices) = assert_nothing_lost(&addr, &token, &accepted).await;
            eprintln!(
                "{} accepted orders over {CHAOS_KILLS} kills, {orders} orders, {invoices} \
                 invoices; slowest catch-up {slowest_catch_up:?} after /ready; {:?} in all",
                accepted.len(),
                started.elapsed()
            );
            break;
        }
        // Short rounds: twenty of them must fit in a few minutes.
        let ids = create_until_killed(running, &token, random_between(100, 400)).await;
        assert!(
            !ids.is_empty(),
            "round {round}: no order was accepted before the kill"
        );
        accepted.extend(ids);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn twenty_sigkills_lose_nothing_and_the_pipeline_catches_up_on_sqlite() {
    let _serial = SERIAL.lock().await;
    twenty_sigkills(None).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn twenty_sigkills_lose_nothing_and_the_pipeline_catches_up_on_postgres() {
    let _serial = SERIAL.lock().await;
    let admin = common::test_database_url()
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    twenty_sigkills(Some(common::TestDatabase::create(&admin).await)).await;
}

// ---- 5. database files made read-only --------------------------------------------

/// `chattr +i` (or `-i`) on `files`: an immutable file refuses every write,
/// root's and through descriptors already open, which is what a database
/// made read-only under a running process needs (a read-only remount is
/// refused while SQLite holds its files open, see the module doc). `false`
/// where the filesystem or the user cannot (not ext4, not root), after
/// saying so (a failure under `CI`).
fn set_immutable(files: &[PathBuf], on: bool) -> bool {
    let flag = if on { "+i" } else { "-i" };
    let done = std::process::Command::new("chattr")
        .arg(flag)
        .args(files)
        .output();
    match done {
        Ok(output) if output.status.success() => true,
        other => {
            let why = match other {
                Ok(output) => String::from_utf8_lossy(&output.stderr).trim().to_owned(),
                Err(e) => e.to_string(),
            };
            assert!(
                !on || std::env::var_os("CI").is_none(),
                "CI is set and this case needs `chattr +i` (root, ext4): {why}"
            );
            eprintln!("chattr {flag}: {why}");
            false
        }
    }
}

/// Clears the immutable flag again whatever the test did (a file left
/// immutable cannot be deleted, not even by root).
struct Immutable(Vec<PathBuf>);

impl Drop for Immutable {
    fn drop(&mut self) {
        set_immutable(&self.0, false);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn database_files_made_read_only_refuse_writes_with_503_and_recover_by_themselves() {
    let _serial = SERIAL.lock().await;
    // SQLite whatever the environment says: its files are what turn read-only.
    let data = tempfile::tempdir().expect("data dir");
    let data_path = data.path().to_owned();
    let app = spawn_app_in(test_config(&data), data, None).await;
    let create = |app: &TestApp, n: usize| {
        app.as_user(Method::POST, "/api/v1/orders", ALICE)
            .json(&json!({"amount": 100 + n}))
            .send()
    };
    let mut accepted = Vec::new();
    for n in 0..20 {
        let created = create(&app, n).await.expect("orders answers");
        assert_eq!(created.status(), 201);
        let order: Value = created.json().await.expect("order JSON");
        accepted.push(order["id"].as_str().expect("an id").to_owned());
    }
    // Every file of orders' database but the shared-memory index (mapped,
    // not written through a descriptor).
    let files: Vec<PathBuf> = ["orders.db", "orders.db-wal"]
        .iter()
        .map(|name| data_path.join(name))
        .filter(|path| path.exists())
        .collect();
    assert!(
        !files.is_empty(),
        "no orders database in {}",
        data_path.display()
    );
    let guard = Immutable(files.clone());
    if !set_immutable(&files, true) {
        eprintln!("SKIPPED: this case needs `chattr +i` (root, ext4)");
        return;
    }

    let mut refusals = Vec::new();
    for n in 0..10 {
        let sent = Instant::now();
        let answer = create(&app, 1_000 + n).await.expect("orders answers");
        let took = sent.elapsed();
        let status = answer.status();
        let retry_after = answer.headers().get("retry-after").cloned();
        let body = expect_error(answer, 503, "SERVICE_UNAVAILABLE").await;
        assert!(
            retry_after.is_some(),
            "a refusal ({status}) without retry-after: {body}"
        );
        refusals.push(took);
    }
    let slowest = refusals.iter().max().copied().unwrap_or_default();
    assert!(
        slowest < REFUSED_WITHIN,
        "refusals took up to {slowest:?}: {refusals:?}"
    );
    for id in &accepted {
        let (status, order) =
            common::json_of(app.as_user(Method::GET, &format!("/api/v1/orders/{id}"), ALICE)).await;
        assert_eq!(
            status, 200,
            "read of {id} with the files read-only: {order}"
        );
    }
    let live = app.client.get(app.url("/live")).send().await.expect("live");
    assert_eq!(live.status(), 200);
    let node = app.admin_node("orders").await;
    assert_eq!(
        node["restarts"], 0,
        "read-only files restarted orders: {node}"
    );

    // Writable again: writes are accepted without a restart.
    assert!(set_immutable(&files, false), "chattr -i");
    drop(guard);
    let writable = Instant::now();
    let recovered_after = loop {
        let answer = create(&app, 9_999).await.expect("orders answers");
        if answer.status() == 201 {
            let order: Value = answer.json().await.expect("order JSON");
            accepted.push(order["id"].as_str().expect("an id").to_owned());
            break writable.elapsed();
        }
        let status = answer.status();
        assert!(
            writable.elapsed() < Duration::from_secs(10),
            "writes still refused 10 s after the files were writable: {status} {}",
            answer.text().await.unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    for n in 0..10 {
        let created = create(&app, 10_000 + n).await.expect("orders answers");
        assert_eq!(
            created.status(),
            201,
            "a write after the files were writable"
        );
        let order: Value = created.json().await.expect("order JSON");
        accepted.push(order["id"].as_str().expect("an id").to_owned());
    }
    let total = accepted.len() as u64;
    app.eventually("/api/v1/invoices?limit=1", ALICE, |body| {
        body["pagination"]["total"].as_u64() == Some(total)
    })
    .await;
    let mut app = app;
    app.stop().await;
    let on_disk = order_ids_in(&data_path.join("orders.db")).await;
    let missing: Vec<&String> = accepted
        .iter()
        .filter(|id| !on_disk.contains(*id))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} accepted orders are not in orders.db",
        missing.len(),
        accepted.len()
    );
    assert_eq!(integrity_check(&data_path.join("orders.db")).await, "ok");
    eprintln!(
        "read-only files: 10 writes refused (503) in at most {slowest:?}; accepted again \
         {recovered_after:?} after; {} orders all in orders.db and invoiced",
        accepted.len()
    );
}
