//! No accepted order is lost and none is invoiced twice when the process is
//! killed with SIGKILL at a random moment under concurrent order creation:
//! the real binary is killed and restarted on the same data several times,
//! then every order that got a 201 must exist and have exactly one invoice,
//! and the invoice numbers must run 1..N without a gap.
//!
//! Runs on SQLite and on PostgreSQL (`STAGEWORKS_TEST_DATABASE_URL`, or the
//! machine's server at 127.0.0.1:5432, database `test`).
//!
//! And the restarted process delivers what the killed one had in flight at
//! once, not after the leases it held ran out: with leases of a minute, the
//! invoices of every accepted order exist within seconds of `/ready`, in
//! process and through Redis Streams, where the restarted process is the
//! same consumer again (one per group, however often it restarts).

mod common;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::binary::{command, spawn, wait_ready, Running};
use common::{test_database_url, TestDatabase};
use serde_json::{json, Value};

const EMAIL: &str = "dana@example.com";
const PASSWORD: &str = "a long and secret passphrase";
const KILLS: usize = 4;
const WRITERS: usize = 8;

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

/// The binary with short leases, so rows claimed by a killed process are
/// taken again soon after the restart.
fn start(data: &std::path::Path, database: Option<&TestDatabase>) -> Running {
    start_with(data, database, &[("STAGEWORKS__EVENTS__CLAIM_LEASE", "1s")])
}

fn start_with(
    data: &std::path::Path,
    database: Option<&TestDatabase>,
    env: &[(&str, &str)],
) -> Running {
    let mut cmd = command(data);
    cmd.env("STAGEWORKS__EVENTS__RELAY_INTERVAL", "100ms")
        .env("STAGEWORKS__RATE_LIMIT__ENABLED", "false")
        .env("STAGEWORKS__LOG__LEVEL", "warn,stageworks=info");
    for (key, value) in env {
        cmd.env(key, value);
    }
    spawn(cmd, database)
}

async fn token(addr: &str, register: bool) -> String {
    let client = client();
    if register {
        let registered = client
            .post(format!("http://{addr}/api/v1/auth/register"))
            .json(&json!({"email": EMAIL, "password": PASSWORD, "name": "Dana"}))
            .send()
            .await
            .expect("register answers");
        assert_eq!(registered.status(), 201);
    }
    let login: Value = client
        .post(format!("http://{addr}/api/v1/auth/login"))
        .json(&json!({"email": EMAIL, "password": PASSWORD}))
        .send()
        .await
        .expect("login answers")
        .json()
        .await
        .expect("login JSON");
    login["access_token"]
        .as_str()
        .unwrap_or_else(|| panic!("{login}"))
        .to_owned()
}

/// A pseudo-random kill moment between 150 and 900 ms (no RNG crate needed:
/// the clock's nanoseconds differ run to run).
fn kill_after() -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    Duration::from_millis(150 + u64::from(nanos % 750))
}

/// Creates orders from several writers until the process dies; answers the
/// ids that got a 201.
async fn create_until_killed(mut running: Running, token: &str) -> Vec<String> {
    let accepted = Arc::new(Mutex::new(Vec::new()));
    let addr = running.addr.clone();
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (accepted, addr, token) = (accepted.clone(), addr.clone(), token.to_owned());
            tokio::spawn(async move {
                let client = client();
                for i in 0.. {
                    let response = client
                        .post(format!("http://{addr}/api/v1/orders"))
                        .bearer_auth(&token)
                        .json(&json!({"amount": 100 + w * 1000 + i}))
                        .send()
                        .await;
                    let Ok(response) = response else { return };
                    if response.status() != 201 {
                        continue;
                    }
                    let Ok(order) = response.json::<Value>().await else {
                        return;
                    };
                    let id = order["id"].as_str().expect("order id").to_owned();
                    accepted.lock().expect("lock").push(id);
                }
            })
        })
        .collect();
    tokio::time::sleep(kill_after()).await;
    running.child.kill().expect("SIGKILL");
    running.child.wait().expect("killed process is reaped");
    drop(running);
    for writer in writers {
        writer.await.expect("writer ends once the process is gone");
    }
    let ids = accepted.lock().expect("lock").clone();
    ids
}

async fn get(client: &reqwest::Client, addr: &str, token: &str, path: &str) -> (u16, Value) {
    let response = client
        .get(format!("http://{addr}{path}"))
        .bearer_auth(token)
        .send()
        .await
        .expect("request answers");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// The `pagination.total` of a list.
async fn total(client: &reqwest::Client, addr: &str, token: &str, path: &str) -> u64 {
    let (status, body) = get(client, addr, token, &format!("{path}?limit=1")).await;
    assert_eq!(status, 200, "{body}");
    body["pagination"]["total"].as_u64().expect("a total")
}

/// Every item of a paginated list.
async fn all(client: &reqwest::Client, addr: &str, token: &str, path: &str) -> Vec<Value> {
    let mut items = Vec::new();
    for page in 1.. {
        let (status, body) = get(
            client,
            addr,
            token,
            &format!("{path}?limit=100&page={page}"),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let batch = body["data"].as_array().expect("items").clone();
        if batch.is_empty() {
            break;
        }
        items.extend(batch);
    }
    items
}

async fn no_loss_under_sigkill(database: Option<TestDatabase>) {
    let data = tempfile::tempdir().expect("temp dir");
    let mut accepted = Vec::new();
    for round in 0..KILLS {
        let running = start(data.path(), database.as_ref());
        wait_ready(&running.addr).await;
        let token = token(&running.addr, round == 0).await;
        let ids = create_until_killed(running, &token).await;
        assert!(
            !ids.is_empty(),
            "round {round}: no order was accepted before the kill"
        );
        accepted.extend(ids);
    }

    let running = start(data.path(), database.as_ref());
    wait_ready(&running.addr).await;
    let (addr, client) = (running.addr.clone(), client());
    let token = token(&addr, false).await;
    for id in &accepted {
        let (status, order) = get(&client, &addr, &token, &format!("/api/v1/orders/{id}")).await;
        assert_eq!(status, 200, "accepted order {id} was lost: {order}");
    }
    // Invoicing catches up on what the killed processes left in their outboxes.
    // Invoicing catches up on what the killed processes left in their
    // outboxes; lists are paged only once it has (paging a list that grows
    // shifts items between pages).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let orders = total(&client, &addr, &token, "/api/v1/orders").await;
        let invoices = total(&client, &addr, &token, "/api/v1/invoices").await;
        if invoices >= orders || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let orders = all(&client, &addr, &token, "/api/v1/orders").await;
    let invoices = all(&client, &addr, &token, "/api/v1/invoices").await;
    let order_ids: HashSet<&str> = orders.iter().map(|o| o["id"].as_str().unwrap()).collect();
    assert!(accepted.iter().all(|id| order_ids.contains(id.as_str())));
    let invoiced: Vec<&str> = invoices
        .iter()
        .map(|i| i["order_id"].as_str().unwrap())
        .collect();
    let distinct: HashSet<&str> = invoiced.iter().copied().collect();
    assert_eq!(
        invoiced.len(),
        distinct.len(),
        "an order was invoiced twice"
    );
    assert_eq!(distinct, order_ids, "every order has exactly one invoice");
    let mut numbers: Vec<String> = invoices
        .iter()
        .map(|i| i["number"].as_str().unwrap().to_owned())
        .collect();
    numbers.sort();
    let expected: Vec<String> = (1..=invoices.len())
        .map(|n| format!("INV-{n:06}"))
        .collect();
    assert_eq!(numbers, expected, "invoice numbers are gap-free");
    eprintln!(
        "{} accepted orders over {KILLS} kills, {} orders, {} invoices",
        accepted.len(),
        orders.len(),
        invoices.len()
    );
    drop(running);
}

/// Kills the process under load `KILLS` times with leases of a minute, and
/// after each restart expects every accepted order invoiced within 10 s of
/// `/ready`: the restarted process takes back what it held. With `poisoned`,
/// billing fails every delivery (an injected fault, retried without end)
/// until the kill, so the killed process surely had events in flight; the
/// fault dies with it.
async fn in_flight_events_go_out_at_once_after_a_restart(
    database: Option<TestDatabase>,
    env: &[(&str, &str)],
    poisoned: bool,
) {
    let data = tempfile::tempdir().expect("temp dir");
    let mut env = env.to_vec();
    env.extend([
        ("STAGEWORKS__EVENTS__CLAIM_LEASE", "60s"),
        ("STAGEWORKS__EVENTS__STREAM_CLAIM_IDLE", "60s"),
        ("STAGEWORKS__EVENTS__MAX_ATTEMPTS", "1000000"),
        ("STAGEWORKS__EVENTS__RETRY_MAX", "200ms"),
        ("STAGEWORKS__ADMIN__TOKEN", ADMIN_TOKEN),
    ]);
    let mut accepted = 0;
    for round in 0..=KILLS {
        let running = start_with(data.path(), database.as_ref(), &env);
        wait_ready(&running.addr).await;
        let ready_at = Instant::now();
        let (addr, client) = (running.addr.clone(), client());
        let token = token(&addr, round == 0).await;
        loop {
            let invoices = total(&client, &addr, &token, "/api/v1/invoices").await;
            if invoices >= accepted {
                eprintln!(
                    "round {round}: all {accepted} accepted orders invoiced {:?} after /ready",
                    ready_at.elapsed()
                );
                break;
            }
            assert!(
                ready_at.elapsed() < Duration::from_secs(10),
                "round {round}: {invoices} of {accepted} orders invoiced 10 s after the restart \
                 (leases are 60 s: the restarted process did not take its events back)"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if round == KILLS {
            break;
        }
        if poisoned {
            poison_billing(&client, &running.admin_addr, &addr, &token).await;
        }
        accepted += create_until_killed(running, &token).await.len() as u64;
    }
}

const ADMIN_TOKEN: &str = "sigkill-test-admin-token";

/// Makes billing fail every event of the signed-in user (fault-injection builds).
async fn poison_billing(client: &reqwest::Client, admin: &str, addr: &str, token: &str) {
    let (status, me) = get(client, addr, token, "/api/v1/auth/me").await;
    assert_eq!(status, 200, "{me}");
    let user = me["id"]
        .as_str()
        .unwrap_or_else(|| panic!("a user id in {me}"));
    let poisoned = client
        .put(format!("http://{admin}/admin/faults/poison/billing/{user}"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("admin answers");
    assert!(poisoned.status().is_success(), "{poisoned:?}");
}

/// `XINFO CONSUMERS` of one group, through `redis-cli`: the consumers' names.
fn consumers(redis_url: &str, stream: &str, group: &str) -> Vec<String> {
    let output = std::process::Command::new("redis-cli")
        .args([
            "-u",
            redis_url,
            "--raw",
            "XINFO",
            "CONSUMERS",
            stream,
            group,
        ])
        .output()
        .expect("redis-cli runs (Debian's redis-tools)");
    assert!(output.status.success(), "{output:?}");
    // --raw: one field name or value a line (`name`, then the name, …).
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    lines
        .windows(2)
        .filter(|pair| pair[0] == "name")
        .map(|pair| pair[1].to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restart_after_sigkill_delivers_in_flight_events_at_once_on_sqlite() {
    in_flight_events_go_out_at_once_after_a_restart(None, &[], false).await;
}

/// On PostgreSQL the relay's claims are leases in the database: the
/// restarted instance (same data dir, so the same instance id) ends its own
/// at start. Billing is poisoned until each kill, so the killed process
/// surely held claimed, unpublished rows.
#[tokio::test(flavor = "multi_thread")]
async fn a_restart_after_sigkill_takes_back_its_own_outbox_claims_on_postgres() {
    let admin = test_database_url().unwrap_or_else(|| LOCAL_POSTGRES.to_owned());
    let database = TestDatabase::create(&admin).await;
    in_flight_events_go_out_at_once_after_a_restart(Some(database), &[], true).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restart_after_sigkill_takes_back_its_own_stream_entries_at_once() {
    let redis = common::test_redis_url().unwrap_or_else(|| "redis://127.0.0.1:6379".to_owned());
    let prefix = format!("sigkill-{}:", uuid::Uuid::now_v7().simple());
    in_flight_events_go_out_at_once_after_a_restart(
        None,
        &[
            ("STAGEWORKS__REDIS__URL", redis.as_str()),
            ("STAGEWORKS__REDIS__KEY_PREFIX", prefix.as_str()),
        ],
        true,
    )
    .await;
    let stream = format!("{prefix}events");
    let names = consumers(&redis, &stream, "billing");
    assert_eq!(
        names.len(),
        1,
        "a restarted process is the same consumer, not one more: {names:?}"
    );
    let _ = std::process::Command::new("redis-cli")
        .args(["-u", redis.as_str(), "DEL", stream.as_str()])
        .output();
}

const LOCAL_POSTGRES: &str = "postgres://postgres@127.0.0.1:5432/test";

#[tokio::test(flavor = "multi_thread")]
async fn no_accepted_order_is_lost_or_invoiced_twice_under_sigkill_on_sqlite() {
    no_loss_under_sigkill(None).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn no_accepted_order_is_lost_or_invoiced_twice_under_sigkill_on_postgres() {
    let admin = test_database_url().unwrap_or_else(|| LOCAL_POSTGRES.to_owned());
    no_loss_under_sigkill(Some(TestDatabase::create(&admin).await)).await;
}
