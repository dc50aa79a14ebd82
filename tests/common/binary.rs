//! The real `stageworks` binary, for tests that need a process of its own
//! (signals, SIGKILL, the CLI): started on port 0 with JSON logs, its address
//! read from the start-up log line.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

use super::TestDatabase;

pub const BIN: &str = env!("CARGO_BIN_EXE_stageworks");

pub struct Running {
    pub child: Child,
    pub addr: String,
    pub admin_addr: String,
    pub lines: mpsc::Receiver<String>,
}

/// A test that fails half-way must not leave its server running (it would
/// also hold the test harness's output pipe open).
impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Polls `/ready` until it answers 200: the services start after the
/// listener, so the "serving" line comes before they take requests.
pub async fn wait_ready(addr: &str) {
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let ready = client.get(format!("http://{addr}/ready")).send().await;
        if ready.is_ok_and(|r| r.status() == 200) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{addr} never became ready"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The binary with a data dir, ports 0, JSON logs and `config.toml` from the
/// repository (run from its root).
pub fn command(data: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    with_test_environment(&mut cmd, data);
    cmd
}

/// [`command`] under a soft limit of `limit` open descriptors (set by
/// `sh`'s `ulimit` before it execs the binary).
pub fn command_with_descriptor_limit(data: &Path, limit: u64) -> Command {
    let mut cmd = Command::new("sh");
    cmd.args([
        "-c",
        &format!("ulimit -S -n {limit} && exec \"$0\" \"$@\""),
        BIN,
    ]);
    with_test_environment(&mut cmd, data);
    cmd
}

fn with_test_environment(cmd: &mut Command, data: &Path) {
    cmd.env("STAGEWORKS__DATA_DIR", data)
        .env("STAGEWORKS__SERVER__LISTEN", "127.0.0.1:0")
        .env("STAGEWORKS__ADMIN__LISTEN", "127.0.0.1:0")
        .env("STAGEWORKS__LOG__FORMAT", "json")
        .env("STAGEWORKS__LOG__LEVEL", "info")
        .env_remove("RUST_LOG")
        .env_remove("STAGEWORKS__DATABASE__URL")
        .current_dir(env!("CARGO_MANIFEST_DIR"));
}

/// Starts `stageworks serve` and waits for its "serving" log line.
pub fn start(data: &Path, database: Option<&TestDatabase>) -> Running {
    spawn(command(data), database)
}

/// Starts `stageworks serve` from a prepared command (extra environment).
/// Reads the start-up log until "stageworks is serving" and returns the
/// public and admin addresses it names.
fn serving_addresses(lines: &mpsc::Receiver<String>) -> Result<(String, String), String> {
    loop {
        let line = lines
            .recv_timeout(Duration::from_secs(30))
            .map_err(|e| format!("no start-up log line: {e}"))?;
        let entry: Value = serde_json::from_str(&line)
            .map_err(|e| format!("log line `{line}` is not JSON: {e}"))?;
        if entry["fields"]["message"] == "stageworks is serving" {
            let field = |name: &str| {
                entry["fields"][name]
                    .as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| format!("`{name}` is not logged: {line}"))
            };
            return Ok((field("public_addr")?, field("admin_addr")?));
        }
    }
}

pub fn spawn(mut command: Command, database: Option<&TestDatabase>) -> Running {
    if let Some(db) = database {
        command.env("STAGEWORKS__DATABASE__URL", &db.url);
    }
    let mut child = command
        .args(["serve", "--config", "config.toml"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("binary starts");
    let stdout = child.stdout.take().expect("stdout is piped");
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let (addr, admin_addr) = match serving_addresses(&lines) {
        Ok(addresses) => addresses,
        Err(why) => {
            // A panic here would leave the process running past the test.
            let _ = child.kill();
            let _ = child.wait();
            panic!("the binary did not start serving: {why}");
        }
    };
    Running {
        child,
        addr,
        admin_addr,
        lines,
    }
}
