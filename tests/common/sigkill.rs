//! Shared by the SIGKILL tests (tests/sigkill.rs, tests/chaos_process.rs):
//! the real binary started on a data dir, writers creating orders until it
//! is killed, and the reads that check what survived.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

use super::binary::{command, spawn, Running};
use super::TestDatabase;

pub const EMAIL: &str = "dana@example.com";
pub const PASSWORD: &str = "a long and secret passphrase";
/// Concurrent order writers while the process is killed.
pub const WRITERS: usize = 8;

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

/// The binary with short leases, so rows claimed by a killed process are
/// taken again soon after the restart.
pub fn start(data: &std::path::Path, database: Option<&TestDatabase>) -> Running {
    start_with(data, database, &[("STAGEWORKS__EVENTS__CLAIM_LEASE", "1s")])
}

pub fn start_with(
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

/// Signs Dana in (registering her first with `register`): her access token.
pub async fn token(addr: &str, register: bool) -> String {
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

/// A pseudo-random moment between `min_ms` and `max_ms` (no RNG crate
/// needed: the clock's nanoseconds differ run to run).
pub fn random_between(min_ms: u64, max_ms: u64) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    Duration::from_millis(min_ms + u64::from(nanos) % (max_ms - min_ms).max(1))
}

/// Creates orders from [`WRITERS`] writers until the process is killed with
/// SIGKILL `kill_after` from now; answers the ids that got a 201.
pub async fn create_until_killed(
    mut running: Running,
    token: &str,
    kill_after: Duration,
) -> Vec<String> {
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
    tokio::time::sleep(kill_after).await;
    running.child.kill().expect("SIGKILL");
    running.child.wait().expect("killed process is reaped");
    drop(running);
    for writer in writers {
        writer.await.expect("writer ends once the process is gone");
    }
    let ids = accepted.lock().expect("lock").clone();
    ids
}

pub async fn get(client: &reqwest::Client, addr: &str, token: &str, path: &str) -> (u16, Value) {
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
pub async fn total(client: &reqwest::Client, addr: &str, token: &str, path: &str) -> u64 {
    let (status, body) = get(client, addr, token, &format!("{path}?limit=1")).await;
    assert_eq!(status, 200, "{body}");
    body["pagination"]["total"].as_u64().expect("a total")
}

/// Every item of a paginated list.
pub async fn all(client: &reqwest::Client, addr: &str, token: &str, path: &str) -> Vec<Value> {
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

/// After the last restart: every order in `accepted` exists, invoicing
/// catches up (within 60 s) on what the killed processes left in their
/// outboxes, every order has exactly one invoice and the invoice numbers
/// run 1..N without a gap. Answers (orders, invoices) counted.
pub async fn assert_nothing_lost(addr: &str, token: &str, accepted: &[String]) -> (usize, usize) {
    let client = client();
    for id in accepted {
        let (status, order) = get(&client, addr, token, &format!("/api/v1/orders/{id}")).await;
        assert_eq!(status, 200, "accepted order {id} was lost: {order}");
    }
    // Lists are paged only once invoicing has caught up (paging a list that
    // grows shifts items between pages).
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let orders = total(&client, addr, token, "/api/v1/orders").await;
        let invoices = total(&client, addr, token, "/api/v1/invoices").await;
        if invoices >= orders || std::time::Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let orders = all(&client, addr, token, "/api/v1/orders").await;
    let invoices = all(&client, addr, token, "/api/v1/invoices").await;
    let order_ids: HashSet<&str> = orders
        .iter()
        .map(|o| o["id"].as_str().expect("an order id"))
        .collect();
    assert!(accepted.iter().all(|id| order_ids.contains(id.as_str())));
    let invoiced: Vec<&str> = invoices
        .iter()
        .map(|i| i["order_id"].as_str().expect("an invoice's order id"))
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
        .map(|i| i["number"].as_str().expect("an invoice number").to_owned())
        .collect();
    numbers.sort();
    let expected: Vec<String> = (1..=invoices.len())
        .map(|n| format!("INV-{n:06}"))
        .collect();
    assert_eq!(numbers, expected, "invoice numbers are gap-free");
    (orders.len(), invoices.len())
}
