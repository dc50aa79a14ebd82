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

use std::time::{Duration, Instant};

use common::binary::wait_ready;
use common::sigkill::{
    assert_nothing_lost, client, create_until_killed, get, random_between, start, start_with,
    token, total,
};
use common::{test_database_url, TestDatabase};

const KILLS: usize = 4;

/// A pseudo-random kill moment between 150 and 900 ms.
fn kill_after() -> Duration {
    random_between(150, 900)
}

async fn no_loss_under_sigkill(database: Option<TestDatabase>) {
    let data = tempfile::tempdir().expect("temp dir");
    let mut accepted = Vec::new();
    for round in 0..KILLS {
        let running = start(data.path(), database.as_ref());
        wait_ready(&running.addr).await;
        let token = token(&running.addr, round == 0).await;
        let ids = create_until_killed(running, &token, kill_after()).await;
        assert!(
            !ids.is_empty(),
            "round {round}: no order was accepted before the kill"
        );
        accepted.extend(ids);
    }

    let running = start(data.path(), database.as_ref());
    wait_ready(&running.addr).await;
    let token = token(&running.addr, false).await;
    let (orders, invoices) = assert_nothing_lost(&running.addr, &token, &accepted).await;
    eprintln!(
        "{} accepted orders over {KILLS} kills, {orders} orders, {invoices} invoices",
        accepted.len(),
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
        accepted += create_until_killed(running, &token, kill_after())
            .await
            .len() as u64;
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
