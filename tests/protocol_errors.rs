//! Answers at the protocol's edge, over raw sockets and real HTTP/1 and
//! HTTP/2: requests too long or malformed for hyper's parser or over the
//! front-end's own limits, and clients that stop sending their body. Every
//! answer must have the contract's error shape, a request id and the
//! security headers.

mod common;

use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{spawn_app_with, TestApp};
use http_body_util::{BodyExt, Empty};
use hyper::body::{Body, Frame};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Slack for the scheduler of a loaded two-core machine, on upper bounds.
const SLACK: Duration = Duration::from_secs(2);

const BODY_READ_TIMEOUT: Duration = Duration::from_millis(300);

async fn app() -> TestApp {
    spawn_app_with(|config| config.server.body_read_timeout = Some(BODY_READ_TIMEOUT)).await
}

fn public_addr(app: &TestApp) -> SocketAddr {
    app.app.as_ref().expect("the app runs").public_addr()
}

/// One HTTP/1 response as read off the socket.
struct Raw {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Raw {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Reads one HTTP/1 response (headers and a `content-length` body), or
/// `None` if the peer closes first.
async fn read_response(stream: &mut TcpStream) -> Option<Raw> {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&seen[..end]).into_owned();
            let mut lines = head.split("\r\n");
            let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
            let headers: Vec<(String, String)> = lines
                .filter_map(|line| {
                    let (name, value) = line.split_once(':')?;
                    Some((name.trim().to_ascii_lowercase(), value.trim().to_owned()))
                })
                .collect();
            let length: usize = headers
                .iter()
                .find(|(n, _)| n == "content-length")
                .and_then(|(_, v)| v.parse().ok())
                .unwrap_or(0);
            if seen.len() >= end + 4 + length {
                return Some(Raw {
                    status,
                    headers,
                    body: seen[end + 4..end + 4 + length].to_vec(),
                });
            }
        }
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
    }
}

/// Sends `request` on a new connection and reads the answer.
async fn exchange(app: &TestApp, request: &[u8]) -> (Raw, TcpStream) {
    let mut stream = TcpStream::connect(public_addr(app)).await.unwrap();
    stream.write_all(request).await.unwrap();
    let answer = tokio::time::timeout(SLACK * 5, read_response(&mut stream))
        .await
        .expect("answered in time")
        .expect("answered before the close");
    (answer, stream)
}

/// Whether the peer closes within `wait` (what it sends meanwhile is read
/// and ignored).
async fn closed_within(stream: &mut TcpStream, wait: Duration) -> bool {
    let drain = async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(wait, drain).await.is_ok()
}

/// The contract's error shape with `code`, a request id and the security
/// headers, whatever the protocol.
fn assert_conforms(
    status: u16,
    expected: u16,
    code: &str,
    header: impl Fn(&str) -> Option<String>,
    body: &[u8],
) {
    assert_eq!(status, expected, "{}", String::from_utf8_lossy(body));
    let json: Value = serde_json::from_slice(body)
        .unwrap_or_else(|err| panic!("not JSON ({err}): {}", String::from_utf8_lossy(body)));
    assert_eq!(json["error"]["code"], code, "{json}");
    assert!(json["error"]["message"].is_string(), "{json}");
    assert_eq!(header("content-type").as_deref(), Some("application/json"));
    let id = header("x-request-id").expect("x-request-id");
    assert!(!id.is_empty());
    assert_eq!(header("x-content-type-options").as_deref(), Some("nosniff"));
    assert_eq!(header("referrer-policy").as_deref(), Some("no-referrer"));
    assert_eq!(header("x-frame-options").as_deref(), Some("DENY"));
    assert_eq!(
        header("content-security-policy").as_deref(),
        Some("default-src 'none'; frame-ancestors 'none'")
    );
    assert_eq!(
        header("cross-origin-resource-policy").as_deref(),
        Some("same-origin")
    );
}

fn assert_raw(raw: &Raw, status: u16, code: &str) {
    assert_conforms(
        raw.status,
        status,
        code,
        |name| raw.header(name).map(str::to_owned),
        &raw.body,
    );
}

fn get(target: &str, extra_headers: &str) -> Vec<u8> {
    format!("GET {target} HTTP/1.1\r\nhost: localhost\r\n{extra_headers}\r\n").into_bytes()
}

#[tokio::test]
async fn over_long_targets_are_414_in_the_error_shape() {
    let app = app().await;
    // Over the front-end's limit: the handler answers, keeping the client's id.
    let long = format!("/live?{}", "a".repeat(9 * 1024));
    let (raw, _) = exchange(&app, &get(&long, "x-request-id: long-1\r\n")).await;
    assert_raw(&raw, 414, "URI_TOO_LONG");
    assert_eq!(raw.header("x-request-id"), Some("long-1"));

    // Over hyper's own limit (64 KiB): its parser refuses, and the answer
    // it would write is replaced; the connection is closed after it.
    let longer = format!("/live?{}", "a".repeat(70 * 1024));
    let (raw, mut stream) = exchange(&app, &get(&longer, "")).await;
    assert_raw(&raw, 414, "URI_TOO_LONG");
    assert_eq!(raw.header("connection"), Some("close"));
    assert!(closed_within(&mut stream, SLACK).await);
}

#[tokio::test]
async fn over_large_headers_are_431_in_the_error_shape() {
    let app = app().await;
    // Over the front-end's byte limit (32 KiB), under hyper's.
    let big = format!("x-big: {}\r\n", "b".repeat(40 * 1024));
    let (raw, _) = exchange(&app, &get("/live", &big)).await;
    assert_raw(&raw, 431, "HEADERS_TOO_LARGE");

    // More fields than hyper's parser takes (100): its refusal, replaced.
    let many: String = (0..120).map(|i| format!("x-h{i}: v\r\n")).collect();
    let (raw, mut stream) = exchange(&app, &get("/live", &many)).await;
    assert_raw(&raw, 431, "HEADERS_TOO_LARGE");
    assert_eq!(raw.header("connection"), Some("close"));
    assert!(closed_within(&mut stream, SLACK).await);

    // A head over hyper's read buffer (about 400 KiB) never parses at all.
    let huge = format!("x-huge: {}\r\n", "h".repeat(500 * 1024));
    let mut stream = TcpStream::connect(public_addr(&app)).await.unwrap();
    // The server may stop reading (and close) before all of it is sent.
    let _ = stream.write_all(&get("/live", &huge)).await;
    let raw = tokio::time::timeout(SLACK * 5, read_response(&mut stream))
        .await
        .expect("answered in time")
        .expect("answered before the close");
    assert_raw(&raw, 431, "HEADERS_TOO_LARGE");
}

#[tokio::test]
async fn malformed_requests_are_400_in_the_error_shape_even_after_a_good_one() {
    let app = app().await;
    for malformed in [
        &b"GET /live HTTP/1.1\r\nhost: localhost\r\nno colon here\r\n\r\n"[..],
        b"GET /live HTTP/9.9\r\n\r\n",
        b"G\x01T /live HTTP/1.1\r\n\r\n",
    ] {
        let (raw, mut stream) = exchange(&app, malformed).await;
        assert_raw(&raw, 400, "BAD_REQUEST");
        assert_eq!(raw.header("connection"), Some("close"));
        assert!(closed_within(&mut stream, SLACK).await);
    }

    // On a keep-alive connection, after a good request has been answered.
    let mut stream = TcpStream::connect(public_addr(&app)).await.unwrap();
    stream.write_all(&get("/live", "")).await.unwrap();
    let live = read_response(&mut stream).await.expect("/live answered");
    assert_eq!(live.status, 200);
    stream
        .write_all(b"GET /live HTTP/1.1\r\nbad header\r\n\r\n")
        .await
        .unwrap();
    let raw = read_response(&mut stream).await.expect("answered");
    assert_raw(&raw, 400, "BAD_REQUEST");

    // A 400 of the handler's own (a body that is not JSON) is never taken
    // for hyper's: it keeps the client's request id.
    let body = "not json";
    let request = format!(
        "POST /api/v1/auth/login HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: {}\r\nx-request-id: mine\r\n\r\n{body}",
        body.len()
    );
    let (raw, _) = exchange(&app, request.as_bytes()).await;
    assert_raw(&raw, 400, "BAD_REQUEST");
    assert_eq!(raw.header("x-request-id"), Some("mine"));
}

#[tokio::test]
async fn http2_limits_are_answered_in_the_error_shape() {
    let app = app().await;
    let addr = public_addr(&app);
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut h2, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let request = |uri: String, header: Option<String>| {
        let mut builder = http::Request::get(uri);
        if let Some(value) = header {
            builder = builder.header("x-big", value);
        }
        builder.body(Empty::<Bytes>::new()).unwrap()
    };
    for (req, status, code) in [
        (
            request(format!("http://{addr}/live?{}", "a".repeat(9 * 1024)), None),
            414,
            "URI_TOO_LONG",
        ),
        (
            request(format!("http://{addr}/live"), Some("b".repeat(40 * 1024))),
            431,
            "HEADERS_TOO_LARGE",
        ),
    ] {
        let answer = h2.send_request(req).await.expect("answered");
        let (parts, body) = answer.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        assert_conforms(
            parts.status.as_u16(),
            status,
            code,
            |name| {
                parts
                    .headers
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned)
            },
            &body,
        );
    }
}

#[tokio::test]
async fn a_body_that_stops_arriving_is_408_within_the_body_read_timeout_on_http1() {
    let app = app().await;
    let mut stream = TcpStream::connect(public_addr(&app)).await.unwrap();
    let started = Instant::now();
    stream
        .write_all(
            b"POST /api/v1/auth/login HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"email\":",
        )
        .await
        .unwrap();
    let raw = tokio::time::timeout(SLACK * 5, read_response(&mut stream))
        .await
        .expect("answered before the request timeout")
        .expect("answered before the close");
    let elapsed = started.elapsed();
    assert_raw(&raw, 408, "REQUEST_TIMEOUT");
    assert!(elapsed >= BODY_READ_TIMEOUT, "{elapsed:?}");
    assert!(elapsed < BODY_READ_TIMEOUT + SLACK, "{elapsed:?}");
    // The rest of the body is unread: the connection ends with the answer.
    assert_eq!(raw.header("connection"), Some("close"));
    assert!(closed_within(&mut stream, SLACK).await);
}

/// A request body that sends one chunk and then nothing, never ending.
struct Stalled {
    sent: bool,
}

impl Body for Stalled {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.sent {
            return Poll::Pending;
        }
        self.sent = true;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"{\"email\":")))))
    }
}

#[tokio::test]
async fn a_body_that_stops_arriving_is_408_within_the_body_read_timeout_on_http2() {
    let app = app().await;
    let addr = public_addr(&app);
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut h2, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    for sent in [false, true] {
        // Headers and one chunk, then nothing; or nothing after the headers.
        let req = http::Request::post(format!("http://{addr}/api/v1/auth/login"))
            .header("content-type", "application/json")
            .body(Stalled { sent })
            .unwrap();
        let started = Instant::now();
        let answer = tokio::time::timeout(SLACK * 5, h2.send_request(req))
            .await
            .expect("answered before the request timeout")
            .expect("answered");
        let elapsed = started.elapsed();
        let (parts, body) = answer.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        assert_conforms(
            parts.status.as_u16(),
            408,
            "REQUEST_TIMEOUT",
            |name| {
                parts
                    .headers
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned)
            },
            &body,
        );
        assert!(elapsed >= BODY_READ_TIMEOUT, "{elapsed:?}");
        assert!(elapsed < BODY_READ_TIMEOUT + SLACK, "{elapsed:?}");
        assert!(parts.headers.get("connection").is_none());
    }
}
