//! Connections as a hostile (or merely careless) client holds them: one that
//! never sends a byte, keep-alive connections left idle over HTTP/1 and
//! HTTP/2, a slow request the idle timer must not cut, and more idle
//! connections than `server.max_connections`, while the admin listener keeps
//! answering on a budget of its own.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{spawn_app_with, TestApp};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Slack for the scheduler of a loaded two-core machine, on upper bounds.
const SLACK: Duration = Duration::from_secs(2);

fn public_addr(app: &TestApp) -> SocketAddr {
    app.app.as_ref().expect("the app runs").public_addr()
}

fn admin_addr(app: &TestApp) -> SocketAddr {
    app.app.as_ref().expect("the app runs").admin_addr()
}

/// Reads until the peer closes (a reset counts as closed); what was read.
async fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return seen,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
    }
}

/// Whether the peer has closed the connection within `wait` (data it sent
/// meanwhile is read and ignored).
async fn closed_within(stream: &mut TcpStream, wait: Duration) -> bool {
    tokio::time::timeout(wait, read_until_closed(stream))
        .await
        .is_ok()
}

/// Reads one HTTP/1 response (headers and a `content-length` body).
async fn read_response(stream: &mut TcpStream) -> String {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&seen).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let length: usize = text[..end]
                .lines()
                .find_map(|line| {
                    let (name, value) = line.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse().ok())?
                })
                .unwrap_or(0);
            if seen.len() >= end + 4 + length {
                return text;
            }
        }
        let n = stream.read(&mut buf).await.expect("the response is read");
        assert!(n > 0, "closed before a whole response: {text}");
        seen.extend_from_slice(&buf[..n]);
    }
}

async fn get_live(stream: &mut TcpStream) -> String {
    stream
        .write_all(b"GET /live HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .await
        .expect("the request is sent");
    read_response(stream).await
}

/// The value of a sample of `name` carrying every label of `labels`.
fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|line| line.starts_with(&format!("{name}{{")))
        .filter(|line| {
            labels
                .iter()
                .all(|(key, value)| line.contains(&format!("{key}=\"{value}\"")))
        })
        .find_map(|line| line.rsplit(' ').next()?.parse().ok())
}

#[tokio::test]
async fn a_connection_that_sends_nothing_is_closed_after_the_first_byte_timeout() {
    let app = spawn_app_with(|c| c.server.first_byte_timeout = Duration::from_millis(300)).await;
    let mut silent = TcpStream::connect(public_addr(&app)).await.unwrap();
    let opened = Instant::now();
    let seen = tokio::time::timeout(
        Duration::from_millis(300) + SLACK,
        read_until_closed(&mut silent),
    )
    .await
    .expect("the server closes a connection that sends nothing");
    let after = opened.elapsed();
    assert!(seen.is_empty(), "nothing is answered to nothing: {seen:?}");
    assert!(
        after >= Duration::from_millis(250),
        "not closed before the first-byte timeout: {after:?}"
    );

    // A client that sends its request in time is served as ever.
    let mut prompt = TcpStream::connect(public_addr(&app)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(get_live(&mut prompt).await.starts_with("HTTP/1.1 200"));

    let metrics = app.metrics().await;
    let timed_out = metric(
        &metrics,
        "http_connections_timed_out_total",
        &[("listener", "public"), ("timeout", "first_byte")],
    );
    assert!(timed_out >= Some(1.0), "{metrics}");
}

#[tokio::test]
async fn an_idle_http1_keep_alive_connection_is_closed_after_the_idle_timeout() {
    let idle = Duration::from_millis(400);
    let app = spawn_app_with(|c| c.server.idle_timeout = idle).await;
    let mut stream = TcpStream::connect(public_addr(&app)).await.unwrap();
    assert!(get_live(&mut stream).await.starts_with("HTTP/1.1 200"));
    // Requests closer together than the idle timeout keep it open: each
    // one's end restarts the timer.
    for _ in 0..3 {
        tokio::time::sleep(idle / 2).await;
        let answer = get_live(&mut stream).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(!answer.to_ascii_lowercase().contains("connection: close"));
    }
    let answered = Instant::now();
    let seen = tokio::time::timeout(idle + SLACK, read_until_closed(&mut stream))
        .await
        .expect("the idle connection is closed");
    let after = answered.elapsed();
    assert!(seen.is_empty(), "{seen:?}");
    assert!(after >= idle - Duration::from_millis(50), "{after:?}");

    let metrics = app.metrics().await;
    let timed_out = metric(
        &metrics,
        "http_connections_timed_out_total",
        &[("listener", "public"), ("timeout", "idle")],
    );
    assert!(timed_out >= Some(1.0), "{metrics}");
}

#[tokio::test]
async fn an_idle_http2_connection_is_closed_after_the_idle_timeout() {
    let idle = Duration::from_millis(400);
    let app = spawn_app_with(|c| c.server.idle_timeout = idle).await;
    let addr = public_addr(&app);
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("h2 with prior knowledge");
    let closed = tokio::spawn(async move {
        let ended = conn.await;
        (Instant::now(), ended)
    });
    let request = http::Request::get(format!("http://{addr}/live"))
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), http::Version::HTTP_2);
    response.into_body().collect().await.unwrap();
    let answered = Instant::now();

    let (closed_at, ended) = tokio::time::timeout(idle + SLACK, closed)
        .await
        .expect("the server closes the idle h2 connection")
        .unwrap();
    assert!(ended.is_ok(), "closed gracefully (GOAWAY): {ended:?}");
    let after = closed_at - answered;
    assert!(after >= idle - Duration::from_millis(50), "{after:?}");
}

/// HTTP/2 frame types in what the server sent, in order.
fn frame_types(mut bytes: &[u8]) -> Vec<u8> {
    let mut types = Vec::new();
    while bytes.len() >= 9 {
        let length =
            usize::from(bytes[0]) << 16 | usize::from(bytes[1]) << 8 | usize::from(bytes[2]);
        types.push(bytes[3]);
        bytes = &bytes[(9 + length).min(bytes.len())..];
    }
    types
}

#[tokio::test]
async fn an_http2_client_that_sends_only_its_preface_is_closed() {
    const GOAWAY: u8 = 0x7;
    let idle = Duration::from_millis(300);
    let app = spawn_app_with(|c| c.server.idle_timeout = idle).await;
    let mut stream = TcpStream::connect(public_addr(&app)).await.unwrap();
    stream
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    // An empty SETTINGS frame, then nothing: not even the acknowledgement of
    // the server's settings or an answer to its ping.
    stream
        .write_all(&[0, 0, 0, 0x4, 0, 0, 0, 0, 0])
        .await
        .unwrap();
    let sent = Instant::now();
    // Graceful first (GOAWAY and a ping), then dropped after another idle
    // timeout, as the ping is never answered.
    let seen = tokio::time::timeout(2 * idle + SLACK, read_until_closed(&mut stream))
        .await
        .expect("the silent h2 connection is closed");
    let after = sent.elapsed();
    assert!(after >= idle - Duration::from_millis(50), "{after:?}");
    assert!(frame_types(&seen).contains(&GOAWAY), "{seen:?}");
}

#[cfg(feature = "fault-injection")]
#[tokio::test]
async fn a_request_slower_than_the_idle_timeout_is_not_cut_by_it() {
    let idle = Duration::from_millis(300);
    let app = spawn_app_with(|c| c.server.idle_timeout = idle).await;
    let addr = public_addr(&app);
    let token = app.users[common::ALICE].access_token.clone();
    let request = |uri: String, fault: Option<&str>| {
        let mut builder = http::Request::get(uri)
            .header("host", addr.to_string())
            .header("authorization", format!("Bearer {token}"));
        if let Some(fault) = fault {
            builder = builder.header("x-fault", fault);
        }
        builder.body(Empty::<Bytes>::new()).unwrap()
    };

    // HTTP/1: the slow answer keeps the connection alive for the next one.
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut h1, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let started = Instant::now();
    let slow = h1
        .send_request(request("/api/v1/orders".into(), Some("delay=1000")))
        .await
        .expect("the slow request is answered");
    assert!(started.elapsed() >= Duration::from_millis(1000));
    assert_eq!(slow.status(), 200);
    assert!(
        slow.headers().get("connection").is_none(),
        "keep-alive was not withdrawn: {:?}",
        slow.headers()
    );
    slow.into_body().collect().await.unwrap();
    h1.ready().await.expect("the connection is still open");
    let next = h1
        .send_request(request("/api/v1/orders".into(), None))
        .await
        .expect("the same connection serves the next request");
    assert_eq!(next.status(), 200);

    // HTTP/2: no GOAWAY while the stream is open.
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut h2, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let slow = h2
        .send_request(request(
            format!("http://{addr}/api/v1/orders"),
            Some("delay=1000"),
        ))
        .await
        .expect("the slow request is answered");
    assert_eq!(slow.status(), 200);
    slow.into_body().collect().await.unwrap();
    let next = h2
        .send_request(request(format!("http://{addr}/api/v1/orders"), None))
        .await
        .expect("the same h2 connection takes a new stream");
    assert_eq!(next.status(), 200);
}

#[tokio::test]
async fn at_the_connection_limit_new_connections_are_closed_and_admin_still_answers() {
    let idle = Duration::from_millis(300);
    let first_byte = Duration::from_secs(3);
    let app = spawn_app_with(|c| {
        c.server.max_connections = 8;
        c.server.idle_timeout = idle;
        c.server.first_byte_timeout = first_byte;
    })
    .await;
    // The sign-ins' pooled connection is closed by its idle timeout first, so
    // only this test's connections count.
    tokio::time::sleep(idle + Duration::from_millis(300)).await;
    let addr = public_addr(&app);
    let mut sockets = Vec::new();
    for _ in 0..12 {
        sockets.push(TcpStream::connect(addr).await.expect("the kernel accepts"));
    }
    let saturated = Instant::now();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut closed = Vec::new();
    for socket in &mut sockets {
        closed.push(closed_within(socket, Duration::from_millis(20)).await);
    }
    assert_eq!(
        closed,
        [&[false; 8][..], &[true; 4]].concat(),
        "the first 8 are held, the rest closed at once"
    );

    // Saturated: the admin listener answers on its own budget.
    let metrics = app.admin_get("/metrics").send().await.unwrap();
    assert_eq!(metrics.status(), 200);
    let metrics = metrics.text().await.unwrap();
    let rejected = metric(
        &metrics,
        "http_connections_rejected_total",
        &[("listener", "public")],
    );
    assert!(rejected >= Some(4.0), "{metrics}");
    let open = metric(&metrics, "http_connections_open", &[("listener", "public")]);
    assert!(open >= Some(8.0), "{metrics}");
    // (Every app of this test binary shares one recorder: only lower bounds
    // hold for gauges and counters here.)
    assert_eq!(
        app.admin_get("/admin/actors")
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    // The public listener refuses a newcomer while the others hold on.
    let mut newcomer = TcpStream::connect(addr).await.unwrap();
    let _ = newcomer
        .write_all(b"GET /live HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .await;
    assert!(
        read_until_closed(&mut newcomer).await.is_empty(),
        "no answer past the limit"
    );
    assert!(
        saturated.elapsed() < first_byte,
        "still saturated meanwhile"
    );

    // Once the silent ones time out, the slots are free again.
    for socket in &mut sockets[..8] {
        assert!(closed_within(socket, first_byte + SLACK).await);
    }
    let mut later = TcpStream::connect(addr).await.unwrap();
    assert!(get_live(&mut later).await.starts_with("HTTP/1.1 200"));
}

#[tokio::test]
async fn the_admin_listener_has_a_connection_cap_of_its_own() {
    let idle = Duration::from_millis(300);
    let first_byte = Duration::from_millis(1500);
    let app = spawn_app_with(|c| {
        c.admin.max_connections = 2;
        c.server.idle_timeout = idle;
        c.server.first_byte_timeout = first_byte;
    })
    .await;
    // The start-up's admin polls hold a pooled connection until it idles out.
    tokio::time::sleep(idle + Duration::from_millis(300)).await;
    let admin = admin_addr(&app);
    let mut held = [
        TcpStream::connect(admin).await.unwrap(),
        TcpStream::connect(admin).await.unwrap(),
    ];
    let mut third = TcpStream::connect(admin).await.unwrap();
    assert!(
        closed_within(&mut third, Duration::from_millis(500)).await,
        "past admin.max_connections"
    );
    for socket in &mut held {
        assert!(!closed_within(socket, Duration::from_millis(20)).await);
    }
    // The public listener is not affected.
    let mut public = TcpStream::connect(public_addr(&app)).await.unwrap();
    assert!(get_live(&mut public).await.starts_with("HTTP/1.1 200"));
    // Freed by the first-byte timeout, the admin listener answers again.
    for socket in &mut held {
        assert!(closed_within(socket, first_byte + SLACK).await);
    }
    let metrics = app.metrics().await;
    let rejected = metric(
        &metrics,
        "http_connections_rejected_total",
        &[("listener", "admin")],
    );
    assert!(rejected >= Some(1.0), "{metrics}");
}

#[tokio::test]
async fn shutdown_closes_silent_and_idle_connections_without_waiting_for_their_timeouts() {
    // The timeouts at their defaults (10 s, 75 s), longer than the test's
    // shutdown timeout (5 s): only the shutdown can close these.
    let mut app = spawn_app_with(|_| {}).await;
    let addr = public_addr(&app);
    let mut silent = TcpStream::connect(addr).await.unwrap();
    let mut idle = TcpStream::connect(addr).await.unwrap();
    assert!(get_live(&mut idle).await.starts_with("HTTP/1.1 200"));
    let stopping = Instant::now();
    app.stop().await;
    let took = stopping.elapsed();
    assert!(took < Duration::from_secs(3), "drained at once: {took:?}");
    assert!(closed_within(&mut silent, Duration::from_millis(100)).await);
    assert!(closed_within(&mut idle, Duration::from_millis(100)).await);
}

/// The log lines of a running binary so far, as JSON.
fn logged(running: &common::binary::Running) -> Vec<serde_json::Value> {
    running
        .lines
        .try_iter()
        .filter_map(|line| serde_json::from_str(&line).ok())
        .collect()
}

fn messages_starting(lines: &[serde_json::Value], prefix: &str) -> Vec<serde_json::Value> {
    lines
        .iter()
        .filter(|entry| {
            entry["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.starts_with(prefix))
        })
        .cloned()
        .collect()
}

async fn scrape(client: &reqwest::Client, admin: &str) -> String {
    let metrics = client
        .get(format!("http://{admin}/metrics"))
        .send()
        .await
        .expect("the admin listener answers");
    assert_eq!(metrics.status(), 200);
    metrics.text().await.unwrap()
}

/// Issue 12's report, replayed on the real binary: 1,100 idle sockets
/// against a process limited to 1,024 descriptors.
#[tokio::test]
async fn at_1024_descriptors_1100_idle_sockets_leave_the_admin_listener_answering() {
    let data = tempfile::tempdir().unwrap();
    let running = common::binary::spawn(
        common::binary::command_with_descriptor_limit(data.path(), 1024),
        None,
    );
    common::binary::wait_ready(&running.addr).await;
    let mut sockets = Vec::new();
    for _ in 0..1100 {
        sockets.push(
            TcpStream::connect(&running.addr)
                .await
                .expect("the kernel accepts"),
        );
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let metrics = scrape(&client, &running.admin_addr).await;
    // The derived cap: 1024 less a reserve of 256.
    assert_eq!(
        metric(
            &metrics,
            "http_connections_limit",
            &[("listener", "public")]
        ),
        Some(768.0),
        "{metrics}"
    );
    let open = metric(&metrics, "http_connections_open", &[("listener", "public")]);
    assert!(
        open.is_some_and(|open| (760.0..=768.0).contains(&open)),
        "{metrics}"
    );
    let rejected = metric(
        &metrics,
        "http_connections_rejected_total",
        &[("listener", "public")],
    );
    assert!(rejected >= Some(330.0), "{metrics}");
    assert_eq!(
        metric(
            &metrics,
            "http_accept_errors_total",
            &[("listener", "public")]
        ),
        Some(0.0),
        "the cap keeps accept clear of the descriptor limit: {metrics}"
    );

    let lines = logged(&running);
    assert!(messages_starting(&lines, "accept failed").is_empty());
    let reported = messages_starting(&lines, "connection limit reached");
    assert!(
        (1..=3).contains(&reported.len()),
        "reported about once a second: {reported:?}"
    );

    drop(sockets);
    common::binary::wait_ready(&running.addr).await;
}

/// A cap configured above what the descriptor limit allows: accept fails
/// with "too many open files", and the listener backs off instead of
/// spinning, logs about once a second, and recovers.
#[tokio::test]
async fn accept_errors_back_off_and_are_logged_about_once_a_second() {
    let data = tempfile::tempdir().unwrap();
    let mut command = common::binary::command_with_descriptor_limit(data.path(), 256);
    command.env("STAGEWORKS__SERVER__MAX_CONNECTIONS", "1000");
    let running = common::binary::spawn(command, None);
    common::binary::wait_ready(&running.addr).await;
    // About 220 are accepted before the descriptors run out, the rest wait
    // in the listen backlog (128 deep: more would stall in SYN retries).
    let mut sockets = Vec::new();
    for _ in 0..300 {
        sockets.push(
            TcpStream::connect(&running.addr)
                .await
                .expect("the kernel accepts"),
        );
    }
    tokio::time::sleep(Duration::from_millis(2500)).await;
    drop(sockets);
    common::binary::wait_ready(&running.addr).await;

    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let metrics = scrape(&client, &running.admin_addr).await;
    let errors = metric(
        &metrics,
        "http_accept_errors_total",
        &[("listener", "public")],
    )
    .expect("counted");
    // 10 ms doubling to 1 s: about 8 in 2.5 s (a spinning loop: thousands).
    assert!((1.0..=20.0).contains(&errors), "{errors} accept errors");

    let lines = logged(&running);
    let failures = messages_starting(&lines, "accept failed");
    assert!(
        (1..=4).contains(&failures.len()),
        "about once a second: {failures:?}"
    );
    assert!(
        failures
            .iter()
            .any(|entry| entry["fields"]["suppressed"].as_u64() > Some(0)),
        "the failures not logged are counted: {failures:?}"
    );
}
