//! No accepted order is lost and none is invoiced twice when the process is
//! killed with SIGKILL at a random moment under concurrent order creation:
//! the real binary is killed and restarted on the same data several times,
//! then every order that got a 201 must exist and have exactly one invoice,
//! and the invoice numbers must run 1..N without a gap.
//!
//! Runs on SQLite and on PostgreSQL (`STAGEWORKS_TEST_DATABASE_URL`, or the
//! machine's server at 127.0.0.1:5432, database `test`).

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
    let mut cmd = command(data);
    cmd.env("STAGEWORKS__EVENTS__CLAIM_LEASE", "1s")
        .env("STAGEWORKS__EVENTS__RELAY_INTERVAL", "100ms")
        .env("STAGEWORKS__RATE_LIMIT__ENABLED", "false")
        .env("STAGEWORKS__LOG__LEVEL", "warn,stageworks=info");
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
