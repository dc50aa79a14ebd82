//! The real binary: serving on its config, JSON logs carrying the request id
//! into the actors, SIGTERM → graceful exit 0, data kept across a restart, and
//! the `check-config`, `healthcheck` and `--version` commands.

use std::process::{Command, Stdio};

use serde_json::{json, Value};

mod common;
use common::binary::{command, start, wait_ready, Running, BIN};
use common::{test_database_url, TestDatabase};

const EMAIL: &str = "carol@example.com";
const PASSWORD: &str = "a long and secret passphrase";

/// A database of the test's own when tests run on PostgreSQL.
async fn database() -> Option<TestDatabase> {
    match test_database_url() {
        Some(admin) => Some(TestDatabase::create(&admin).await),
        None => None,
    }
}

fn terminate(mut running: Running) -> (std::process::ExitStatus, Vec<String>) {
    let status = Command::new("kill")
        .args(["-TERM", &running.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = running.child.wait().unwrap();
    // Until the reader thread has seen the end of stdout.
    let rest: Vec<String> = running.lines.iter().collect();
    (exit, rest)
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

/// Registers and signs in over HTTP: (access token, refresh token).
async fn sign_in(addr: &str) -> (String, String) {
    let registered = client()
        .post(format!("http://{addr}/api/v1/auth/register"))
        .json(&json!({"email": EMAIL, "password": PASSWORD, "name": "Carol"}))
        .send()
        .await
        .unwrap();
    assert_eq!(registered.status(), 201);
    let login: Value = client()
        .post(format!("http://{addr}/api/v1/auth/login"))
        .json(&json!({"email": EMAIL, "password": PASSWORD}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = |name: &str| {
        login[name]
            .as_str()
            .unwrap_or_else(|| panic!("{login}"))
            .to_owned()
    };
    (token("access_token"), token("refresh_token"))
}

/// Serving starts before the workers are up: wait for `/ready`.
#[tokio::test]
async fn orders_survive_a_restart_and_sigterm_exits_cleanly() {
    let data = tempfile::tempdir().unwrap();
    let db = database().await;
    let first = start(data.path(), db.as_ref());
    wait_ready(&first.addr).await;
    let (access, refresh) = sign_in(&first.addr).await;
    let refreshed = client()
        .post(format!("http://{}/api/v1/auth/refresh", first.addr))
        .json(&json!({"refresh_token": refresh}))
        .send()
        .await
        .unwrap();
    assert_eq!(refreshed.status(), 200);
    let refreshed: Value = refreshed.json().await.unwrap();
    let created: Value = client()
        .post(format!("http://{}/api/v1/orders", first.addr))
        .bearer_auth(&access)
        .header("x-request-id", "persist-req-1")
        .json(&json!({"amount": 1234, "description": "kept"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["id"].as_str().unwrap().to_owned();

    let (exit, logs) = terminate(first);
    assert!(exit.success(), "SIGTERM ends with exit 0, got {exit}");
    // Every line of that request carries its id, including the actor's own line.
    let tagged: Vec<Value> = logs
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["span"]["request_id"] == "persist-req-1")
        .collect();
    assert!(
        tagged
            .iter()
            .any(|e| e["fields"]["message"] == "order created"
                && e["target"].as_str().unwrap().starts_with("actors::orders")),
        "the actor's log line carries the request id: {logs:?}"
    );
    assert!(tagged
        .iter()
        .any(|e| e["fields"]["message"] == "request answered"));
    assert!(logs
        .iter()
        .any(|l| l.contains("stopping services in reverse start order")));
    // The audit trail names the sign-in, and never a secret.
    assert!(
        logs.iter()
            .any(|l| l.contains("\"audit\":\"login\"") || l.contains("audit=login")),
        "{logs:?}"
    );
    let secrets = [
        PASSWORD,
        access.as_str(),
        refresh.as_str(),
        refreshed["access_token"].as_str().unwrap(),
        refreshed["refresh_token"].as_str().unwrap(),
    ];
    for line in &logs {
        for secret in secrets {
            assert!(!line.contains(secret), "a secret reached the logs: {line}");
        }
    }

    let second = start(data.path(), db.as_ref());
    wait_ready(&second.addr).await;
    let read: Value = client()
        .get(format!("http://{}/api/v1/orders/{id}", second.addr))
        .bearer_auth(&access)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(read, created);
    let (exit, _) = terminate(second);
    assert!(exit.success());
}

#[test]
fn an_invalid_configuration_stops_start_up_with_exit_2_naming_the_key() {
    let data = tempfile::tempdir().unwrap();
    let cases = [
        (
            "STAGEWORKS__SERVER__LISTEN",
            "not-an-address",
            "SERVER.LISTEN",
        ),
        (
            "STAGEWORKS__SERVER__REQUEST_TIMEOUT",
            "0s",
            "server.request_timeout",
        ),
        (
            "STAGEWORKS__SERVER__MAX_BODY_BYTES",
            "-1",
            "SERVER.MAX_BODY_BYTES",
        ),
        ("STAGEWORKS__SERVER__COLOUR", "blue", "colour"),
        (
            "STAGEWORKS__SERVICES__ORDERS__WORKERS",
            "0",
            "services.orders.workers",
        ),
        ("STAGEWORKS__ADMIN__LISTEN", "0.0.0.0:9999", "admin.token"),
    ];
    for (key, value, named) in cases {
        let output = command(data.path())
            .args(["serve", "--config", "config.toml"])
            .env(key, value)
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{key}={value}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(named), "{key}={value}: {stderr}");
    }
    let missing = command(data.path())
        .args(["check-config", "--config", "no-such-file.toml"])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(2));
}

#[test]
fn check_config_prints_the_effective_configuration_with_secrets_masked() {
    let data = tempfile::tempdir().unwrap();
    let output = command(data.path())
        .args(["check-config"])
        .env("STAGEWORKS__ADMIN__TOKEN", "do-not-print-this-token")
        .env("STAGEWORKS__SERVICES__ORDERS__WORKERS", "7")
        .output()
        .unwrap();
    assert!(output.status.success());
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(!stdout.contains("do-not-print-this-token"), "{stdout}");
    assert!(stdout.contains("token = \"********\""), "{stdout}");
    assert!(stdout.contains("workers = 7"), "{stdout}");
}

/// `stageworks check-config | head -1`: the reader goes away, and the
/// command ends quietly (exit 0, nothing on stderr) instead of panicking
/// on the broken pipe.
#[test]
fn check_config_exits_quietly_when_its_reader_closes_the_pipe() {
    use std::io::{BufRead, BufReader};
    let data = tempfile::tempdir().unwrap();
    // Deterministic: the read end is closed before the binary has even
    // loaded its configuration, so its first write meets a closed pipe.
    let mut child = command(data.path())
        .arg("check-config")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(stderr.is_empty(), "{stderr}");
    assert_eq!(output.status.code(), Some(0));

    // A reader that closes after one line, as `head -1` does; whether the
    // rest was written before it closed is up to the scheduler, so a few
    // rounds.
    for _ in 0..5 {
        let mut child = command(data.path())
            .arg("check-config")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut first = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        assert_eq!(first, "# configuration is valid\n");
        let output = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.is_empty(), "{stderr}");
        assert_eq!(output.status.code(), Some(0));
    }

    // And through a real shell pipeline into `head -1`.
    let piped = Command::new("sh")
        .args(["-c", "\"$0\" check-config | head -1", BIN])
        .env("STAGEWORKS__DATA_DIR", data.path())
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&piped.stderr);
    assert!(stderr.is_empty(), "{stderr}");
    assert_eq!(
        String::from_utf8_lossy(&piped.stdout),
        "# configuration is valid\n"
    );
}

#[test]
fn an_unknown_default_currency_is_an_invalid_configuration() {
    let data = tempfile::tempdir().unwrap();
    let output = command(data.path())
        .args(["check-config"])
        .env("STAGEWORKS__SERVICES__ORDERS__DEFAULT_CURRENCY", "XYZ")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("default_currency"), "{stderr}");
    assert!(stderr.contains("ISO 4217"), "{stderr}");
}

#[test]
fn version_is_printed() {
    let output = Command::new(BIN).arg("--version").output().unwrap();
    assert!(output.status.success());
    assert!(String::from_utf8_lossy(&output.stdout).contains(env!("CARGO_PKG_VERSION")));
}

#[tokio::test]
async fn healthcheck_exits_0_only_when_live_answers() {
    let data = tempfile::tempdir().unwrap();
    let db = database().await;
    let running = start(data.path(), db.as_ref());
    let healthy = command(data.path())
        .arg("healthcheck")
        .env("STAGEWORKS__SERVER__LISTEN", &running.addr)
        .output()
        .unwrap();
    assert!(
        healthy.status.success(),
        "{}",
        String::from_utf8_lossy(&healthy.stderr)
    );
    let (exit, _) = terminate(running);
    assert!(exit.success());

    let nobody = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let free = nobody.local_addr().unwrap();
    drop(nobody);
    let unhealthy = command(data.path())
        .arg("healthcheck")
        .env("STAGEWORKS__SERVER__LISTEN", free.to_string())
        .output()
        .unwrap();
    assert_eq!(unhealthy.status.code(), Some(1));
}

#[tokio::test]
async fn a_fresh_install_gets_its_first_admin_from_the_command_line() {
    use std::io::Write;
    let data = tempfile::tempdir().unwrap();
    let db = database().await;
    let admin_password = "the first admin's passphrase";
    let mut create = command(data.path());
    if let Some(db) = &db {
        create.env("STAGEWORKS__DATABASE__URL", &db.url);
    }
    let mut child = create
        .args(["user", "create", "--email", "root@example.com", "--admin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{admin_password}").unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("created admin root@example.com"));

    let running = start(data.path(), db.as_ref());
    wait_ready(&running.addr).await;
    let (user_token, _) = sign_in(&running.addr).await;
    let order: Value = client()
        .post(format!("http://{}/api/v1/orders", running.addr))
        .bearer_auth(&user_token)
        .json(&json!({"amount": 42}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let login: Value = client()
        .post(format!("http://{}/api/v1/auth/login", running.addr))
        .json(&json!({"email": "root@example.com", "password": admin_password}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(login["user"]["role"], "admin");
    let admin_token = login["access_token"].as_str().unwrap();
    // Owner-or-admin: the admin reads the user's order and sees every order.
    let read = client()
        .get(format!(
            "http://{}/api/v1/orders/{}",
            running.addr,
            order["id"].as_str().unwrap()
        ))
        .bearer_auth(admin_token)
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), 200);
    let all: Value = client()
        .get(format!("http://{}/api/v1/orders", running.addr))
        .bearer_auth(admin_token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(all["pagination"]["total"], 1);
    let (exit, _) = terminate(running);
    assert!(exit.success());

    // A short password is refused before anything is written.
    let mut again = command(data.path())
        .args(["user", "create", "--email", "other@example.com", "--admin"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(again.stdin.take().unwrap(), "short").unwrap();
    let refused = again.wait_with_output().unwrap();
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("password"));
}

#[cfg(unix)]
fn mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[cfg(unix)]
#[tokio::test]
async fn the_data_dir_is_0700_and_its_databases_0600() {
    let parent = tempfile::tempdir().unwrap();
    let data = parent.path().join("data");
    let running = start(&data, None);
    wait_ready(&running.addr).await;
    sign_in(&running.addr).await;
    assert_eq!(mode(&data), 0o700, "the data dir");
    let mut databases = 0;
    for entry in std::fs::read_dir(&data).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.ends_with(".db") || name.ends_with(".db-wal") || name.ends_with(".db-shm") {
            databases += usize::from(name.ends_with(".db"));
            assert_eq!(mode(&path), 0o600, "{name}");
        }
        if name == "jwt-secret" {
            assert_eq!(mode(&path), 0o600, "{name}");
        }
    }
    assert!(databases >= 3, "auth, orders and billing have databases");
    let (exit, _) = terminate(running);
    assert!(exit.success());
}

#[cfg(unix)]
#[test]
fn production_refuses_a_data_dir_open_to_others_naming_it() {
    use std::os::unix::fs::PermissionsExt;
    let data = tempfile::tempdir().unwrap();
    std::fs::set_permissions(data.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let output = command(data.path())
        .args(["serve", "--config", "config.toml"])
        .env("STAGEWORKS__ENV", "production")
        .env(
            "STAGEWORKS__TOKENS__JWT_SECRET",
            "a-production-secret-of-enough-bytes-0123456789",
        )
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&data.path().display().to_string())
            && stderr.contains("open to other users"),
        "{stderr}"
    );
    let databases = std::fs::read_dir(data.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "db")
        })
        .count();
    assert_eq!(databases, 0, "nothing was created before the refusal");
}
