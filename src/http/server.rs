//! Serving a listener with hyper (HTTP/1.1 and HTTP/2, auto-detected), the
//! bounds every connection lives within, and draining on shutdown.
//!
//! A connection is bounded at every stage, so that a client that sends
//! nothing, or stops sending, cannot hold a socket (and a descriptor) for
//! ever:
//!
//! - **accept**: at most [`ServeSettings::max_connections`] are open on a
//!   listener. One past the cap is accepted and closed at once (counted in
//!   `http_connections_rejected_total`), as Envoy's listener connection limit
//!   and nginx's `worker_connections` do: the client learns at once and can
//!   retry elsewhere, instead of waiting in the kernel's backlog until its
//!   connect timeout while nothing says why. The cap stays below the
//!   descriptor limit (see [`derived_max_connections`]), so the descriptor
//!   such a close needs is there.
//! - **accept errors** (out of descriptors, of buffers): the listener backs
//!   off, 10 ms doubling to 1 s, reset by the next success, and reports at
//!   most once a second with the count of failures it did not report.
//! - **first byte**: nothing is handed to hyper until the client has sent a
//!   byte, within [`ServeSettings::first_byte_timeout`]; hyper's own header
//!   timer starts only at the first byte, and its protocol detection waits
//!   for bytes without any timer.
//! - **HTTP/1 headers**: [`ServeSettings::header_read_timeout`], from the
//!   first byte of a request head: the connection is closed if the head is
//!   not whole by then. Timed here, not by hyper's `header_read_timeout`:
//!   hyper starts that timer when it begins waiting for the next head, so on
//!   a keep-alive connection it runs while the connection is idle between
//!   requests, and closed every idle connection after the header timeout
//!   (10 s) instead of the idle timeout (75 s), the load balancers' pooled
//!   connections included (tests/chaos_network.rs found it).
//! - **idle**: a connection with no request in flight for
//!   [`ServeSettings::idle_timeout`] (HTTP/1 keep-alive between requests, or
//!   an HTTP/2 connection without open streams, its preface sent or not) is
//!   shut down gracefully (HTTP/1: closed; HTTP/2: GOAWAY), and dropped if
//!   it has not finished within another idle timeout (a peer that does not
//!   read what is left, or does not answer the GOAWAY's ping). A request is
//!   in flight from its headers until hyper has taken its response body;
//!   however long its handler takes (`server.request_timeout` bounds that),
//!   the idle timer does not run meanwhile.
//! - **shutdown**: the listener stops accepting; idle connections close,
//!   those with requests in flight close once they are answered, within the
//!   shutdown timeout, after which they are dropped.
//!
//! A request hyper's HTTP/1 parser refuses (malformed: 400; target over
//! 64 KiB: 414; over 100 header fields or a head over its read buffer: 431)
//! never reaches the handler: hyper writes a bare status line of its own
//! and closes. [`Guarded`], the connection's IO, recognises that answer (the
//! only bytes hyper writes on HTTP/1 while no request of ours is being
//! answered) and writes [`Handler::refused`] in its place, so that answer too
//! has the contract's shape. HTTP/2 refusals are frames (a reset stream, or
//! h2's bare 431 for a header block over `max_header_list_size`), which are
//! left as they are.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{HeaderValue, CONNECTION, CONTENT_LENGTH};
use http::StatusCode;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};

use actors::ServiceError;

use super::{request_id, response, Response};

/// Something that answers requests.
pub trait Handler: Send + Sync + 'static {
    fn handle(
        self: Arc<Self>,
        req: http::Request<Incoming>,
        peer: SocketAddr,
    ) -> impl Future<Output = Response> + Send;

    /// The answer to a request hyper refused before there was one to hand
    /// to [`Handler::handle`]: the error's shape with a new request id.
    fn refused(&self, err: &ServiceError) -> Response {
        let mut answer = response::error(err);
        if let Ok(id) = HeaderValue::from_str(&request_id::from_headers(&http::HeaderMap::new())) {
            answer.headers_mut().insert(request_id::HEADER, id);
        }
        answer
    }
}

#[derive(Clone, Copy, Debug)]
pub struct ServeSettings {
    /// The listener's name in logs and in the `listener` label of metrics.
    pub listener: &'static str,
    /// Connections open at once; one more is accepted and closed.
    pub max_connections: usize,
    /// How long a new connection may take to send its first byte.
    pub first_byte_timeout: Duration,
    /// How long an HTTP/1 client may take to send its headers (from their
    /// first byte).
    pub header_read_timeout: Duration,
    /// How long a connection may stay open with no request in flight.
    pub idle_timeout: Duration,
    pub shutdown_timeout: Duration,
}

/// The most connections a listener may be allowed, configured or derived:
/// 2^20, Linux's default `fs.nr_open` (the most descriptors one process may
/// have unless the system is tuned).
pub const MAX_CONNECTIONS_CEILING: usize = 1 << 20;

/// The descriptor limit assumed where it cannot be read (not Unix): the
/// usual soft limit.
const ASSUMED_DESCRIPTOR_LIMIT: u64 = 1024;

/// Descriptors the public listener's derived cap leaves to the rest of the
/// process: the databases (every SQLite connection holds its file and WAL,
/// PostgreSQL and Redis pools a socket each), the admin listener's
/// connections (`admin.max_connections`, 64 by default), the log, the
/// runtime's own (epoll, eventfds) and the rejected connections' brief
/// descriptors. An eighth of the limit, at least 256: the built-in databases
/// at their defaults hold about 80 on SQLite (4 × 9 connections × file and
/// WAL).
pub fn descriptor_reserve(limit: u64) -> u64 {
    (limit / 8).max(256)
}

/// The public listener's cap when `server.max_connections` is 0: the
/// descriptor soft limit less [`descriptor_reserve`], but at least a quarter
/// of the limit (a very low limit still serves, at the reserve's expense),
/// and at most [`MAX_CONNECTIONS_CEILING`]. `None`: the limit is unknown
/// (1024 assumed); `Some(u64::MAX)`: unlimited.
pub fn derived_max_connections(descriptor_limit: Option<u64>) -> usize {
    let limit = descriptor_limit.unwrap_or(ASSUMED_DESCRIPTOR_LIMIT);
    let derived = limit
        .saturating_sub(descriptor_reserve(limit))
        .max(limit / 4);
    usize::try_from(derived)
        .unwrap_or(MAX_CONNECTIONS_CEILING)
        .clamp(1, MAX_CONNECTIONS_CEILING)
}

/// The public listener's cap: `configured`, or derived from the descriptor
/// limit when it is 0.
pub fn max_connections(configured: usize, descriptor_limit: Option<u64>) -> usize {
    if configured == 0 {
        derived_max_connections(descriptor_limit)
    } else {
        configured.min(MAX_CONNECTIONS_CEILING)
    }
}

/// How long between two reports of the same trouble (accept errors,
/// rejected connections).
const REPORT_EVERY: Duration = Duration::from_secs(1);

/// hyper's HTTP/2 `max_header_list_size`: twice the front-end's limit.
const HTTP2_MAX_HEADER_LIST_SIZE: u32 = 2 * super::frontend::MAX_HEADER_BYTES as u32;

/// Streams an HTTP/2 client may have open at once on one connection (hyper's
/// default, stated).
const HTTP2_MAX_CONCURRENT_STREAMS: u32 = 200;

/// Streams an HTTP/2 client may reset before the server has accepted them,
/// at once, before the connection is closed with GOAWAY (h2's default of 20).
const HTTP2_MAX_PENDING_ACCEPT_RESET_STREAMS: usize = 20;

/// Streams the server may reset for a client's protocol errors on one
/// connection before it is closed with GOAWAY (hyper's default of 1024).
const HTTP2_MAX_LOCAL_ERROR_RESET_STREAMS: usize = 1024;

const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Serves until `shutdown` turns true, then drains. Returns whether every
/// connection finished within the shutdown timeout.
pub async fn serve<H: Handler>(
    listener: TcpListener,
    handler: Arc<H>,
    settings: ServeSettings,
    mut shutdown: watch::Receiver<bool>,
) -> bool {
    let mut builder = Builder::new(TokioExecutor::new());
    // The header timer is the connection's own (see the module's docs).
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(None);
    // Above the front-end's own limit, so that a header block between the
    // two reaches it and is answered 431 in the contract's shape; h2 answers
    // a larger one with a bare 431 of its own.
    // Rapid reset (CVE-2023-44487) and its local-error variant: a client
    // that opens streams and resets them at once, or makes the server reset
    // them, gets a GOAWAY (ENHANCE_YOUR_CALM) instead of making it start and
    // cancel handlers without end. Set here rather than left to the crates'
    // defaults, which have changed between versions; tests/chaos_network.rs
    // checks the bound.
    builder
        .http2()
        .max_header_list_size(HTTP2_MAX_HEADER_LIST_SIZE)
        .max_concurrent_streams(HTTP2_MAX_CONCURRENT_STREAMS)
        .max_pending_accept_reset_streams(HTTP2_MAX_PENDING_ACCEPT_RESET_STREAMS)
        .max_local_error_reset_streams(HTTP2_MAX_LOCAL_ERROR_RESET_STREAMS);
    let builder = Arc::new(builder);
    let max_connections = settings.max_connections.clamp(1, MAX_CONNECTIONS_CEILING);
    // One permit per open connection; the drain takes them all back.
    let slots = Arc::new(Semaphore::new(max_connections));
    let metrics = ListenerMetrics::new(settings.listener);
    metrics.limit.set(max_connections as f64);
    let mut backoff = AcceptBackoff::default();
    let mut accept_failures = Throttle::new(REPORT_EVERY);
    let mut rejections = Throttle::new(REPORT_EVERY);
    let listener_name = settings.listener;
    let connection_stop = shutdown.clone();
    let stop = async move { stopped(&mut shutdown).await };
    tokio::pin!(stop);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = &mut stop => break,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => {
                backoff.succeeded();
                pair
            }
            // The peer gave up while in the backlog: nothing of ours is short.
            Err(err) if is_connection_error(&err) => {
                tracing::debug!(listener = listener_name, error = %err, "accepted connection already gone");
                continue;
            }
            Err(err) => {
                // Out of descriptors or buffers: retrying at once would spin
                // (the backlog stays readable) and flood the log.
                metrics.accept_errors.increment(1);
                let delay = backoff.failed();
                if let Some(suppressed) = accept_failures.report(Instant::now()) {
                    tracing::warn!(
                        listener = listener_name,
                        error = %err,
                        retry_in = ?delay,
                        suppressed,
                        "accept failed ({suppressed} more since the last report)"
                    );
                }
                tokio::select! {
                    _ = tokio::time::sleep(delay) => continue,
                    _ = &mut stop => break,
                }
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            metrics.rejected.increment(1);
            if let Some(suppressed) = rejections.report(Instant::now()) {
                tracing::warn!(
                    listener = listener_name,
                    max_connections,
                    suppressed,
                    "connection limit reached, closing new connections ({suppressed} more since the last report)"
                );
            }
            drop(stream);
            continue;
        };
        let slot = Slot::new(permit, metrics.open.clone());
        let _ = stream.set_nodelay(true);
        tokio::spawn(connection(
            Accepted {
                stream,
                peer,
                _slot: slot,
            },
            handler.clone(),
            builder.clone(),
            settings,
            metrics.clone(),
            connection_stop.clone(),
        ));
    }
    drop(listener);
    // Every connection gives its permit back when it ends.
    let all = u32::try_from(max_connections).unwrap_or(u32::MAX);
    tokio::select! {
        _ = slots.acquire_many(all) => true,
        _ = tokio::time::sleep(settings.shutdown_timeout) => {
            tracing::warn!(listener = listener_name, timeout = ?settings.shutdown_timeout, "connections still open after the shutdown timeout");
            false
        }
    }
}

/// Resolves once a request head has been arriving for `timeout` without
/// being whole (see [`Guarded`]'s `head_started`).
async fn head_timed_out(head: &mut watch::Receiver<Option<Instant>>, timeout: Duration) {
    loop {
        let started = *head.borrow_and_update();
        let changed = match started {
            Some(at) => tokio::select! {
                () = tokio::time::sleep_until((at + timeout).into()) => return,
                changed = head.changed() => changed,
            },
            None => head.changed().await,
        };
        if changed.is_err() {
            // The connection is ending by itself.
            return std::future::pending().await;
        }
    }
}

/// An accepted connection and the slot it holds under the listener's cap.
struct Accepted {
    stream: TcpStream,
    peer: SocketAddr,
    _slot: Slot,
}

/// One connection, from its first byte to its close.
async fn connection<H: Handler>(
    accepted: Accepted,
    handler: Arc<H>,
    builder: Arc<Builder<TokioExecutor>>,
    settings: ServeSettings,
    metrics: ListenerMetrics,
    mut stop: watch::Receiver<bool>,
) {
    let Accepted {
        stream,
        peer,
        _slot,
    } = accepted;
    let mut first = [0u8; 1];
    let first_byte = tokio::select! {
        read = tokio::time::timeout(settings.first_byte_timeout, stream.peek(&mut first)) => read,
        _ = stopped(&mut stop) => return,
    };
    match first_byte {
        Ok(Ok(read)) if read > 0 => {}
        // Closed before sending anything.
        Ok(Ok(_)) => return,
        Ok(Err(err)) => {
            tracing::debug!(error = %err, %peer, "connection failed before its first byte");
            return;
        }
        Err(_) => {
            metrics.first_byte_timeouts.increment(1);
            tracing::debug!(%peer, timeout = ?settings.first_byte_timeout, "closed: nothing sent within the first-byte timeout");
            return;
        }
    }

    let (requests, mut idle) = in_flight();
    let served = Arc::new(Served::default());
    let (head_started, mut head) = watch::channel(None);
    let head_started = Arc::new(head_started);
    let io = Guarded::new(
        stream,
        served.clone(),
        idle.0.clone(),
        head_started.clone(),
        {
            let handler = handler.clone();
            Box::new(move |err: &ServiceError| encode_h1(handler.refused(err)))
        },
    );
    let service = service_fn(move |req| {
        let handler = handler.clone();
        // The head is whole: its timer stops.
        head_started.send_replace(None);
        // Counted from here (the headers are in) until hyper drops the body.
        let request = requests.start();
        served.started.fetch_add(1, Ordering::AcqRel);
        let served = served.clone();
        async move {
            let response = handler.handle(req, peer).await;
            if response.status() == StatusCode::SWITCHING_PROTOCOLS {
                // What follows is another protocol's bytes: hands off.
                served.upgraded.store(true, Ordering::Release);
            }
            Ok::<_, Infallible>(response.map(|body| TrackedBody {
                inner: body,
                _request: request,
            }))
        }
    });
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(conn);
    let idle_close = tokio::select! {
        ended = conn.as_mut() => return ended_with(ended, peer),
        () = idle.expired(settings.idle_timeout) => true,
        () = head_timed_out(&mut head, settings.header_read_timeout) => {
            // Dropping the connection closes it, as hyper's own timer did.
            metrics.header_timeouts.increment(1);
            tracing::debug!(%peer, timeout = ?settings.header_read_timeout, "closed: request head not whole within the header read timeout");
            return;
        }
        _ = stopped(&mut stop) => false,
    };
    // HTTP/1: closes now if idle, else after the response in progress;
    // HTTP/2: GOAWAY, open streams finish; before the protocol is known:
    // closes.
    conn.as_mut().graceful_shutdown();
    let (grace, why) = if idle_close {
        metrics.idle_timeouts.increment(1);
        (settings.idle_timeout, "idle timeout")
    } else {
        (settings.shutdown_timeout, "shutdown")
    };
    match tokio::time::timeout(grace, conn).await {
        Ok(ended) => ended_with(ended, peer),
        Err(_) => {
            tracing::debug!(%peer, why, "connection dropped: not closed within its grace period")
        }
    }
}

fn ended_with<E: std::fmt::Display>(ended: Result<(), E>, peer: SocketAddr) {
    if let Err(err) = ended {
        tracing::debug!(error = %err, %peer, "connection ended with an error");
    }
}

/// Resolves once `stop` is true (or nobody is left to set it).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

/// Errors of one connection that died in the backlog, not of the listener.
fn is_connection_error(err: &std::io::Error) -> bool {
    matches!(
        err.kind(),
        std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::ConnectionRefused
    )
}

/// The connection metrics of one listener.
#[derive(Clone)]
struct ListenerMetrics {
    open: metrics::Gauge,
    limit: metrics::Gauge,
    rejected: metrics::Counter,
    accept_errors: metrics::Counter,
    first_byte_timeouts: metrics::Counter,
    header_timeouts: metrics::Counter,
    idle_timeouts: metrics::Counter,
}

impl ListenerMetrics {
    fn new(listener: &'static str) -> Self {
        Self {
            open: metrics::gauge!("http_connections_open", "listener" => listener),
            limit: metrics::gauge!("http_connections_limit", "listener" => listener),
            rejected: metrics::counter!("http_connections_rejected_total", "listener" => listener),
            accept_errors: metrics::counter!("http_accept_errors_total", "listener" => listener),
            first_byte_timeouts: metrics::counter!(
                "http_connections_timed_out_total",
                "listener" => listener,
                "timeout" => "first_byte"
            ),
            header_timeouts: metrics::counter!(
                "http_connections_timed_out_total",
                "listener" => listener,
                "timeout" => "header"
            ),
            idle_timeouts: metrics::counter!(
                "http_connections_timed_out_total",
                "listener" => listener,
                "timeout" => "idle"
            ),
        }
    }
}

/// A connection's place under its listener's cap, counted in the open gauge
/// while it is held.
struct Slot {
    _permit: OwnedSemaphorePermit,
    open: metrics::Gauge,
}

impl Slot {
    fn new(permit: OwnedSemaphorePermit, open: metrics::Gauge) -> Self {
        open.increment(1.0);
        Self {
            _permit: permit,
            open,
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.open.decrement(1.0);
    }
}

/// The requests in flight on one connection: started by its service,
/// watched by its idle timer.
fn in_flight() -> (Requests, Idle) {
    let (count, watched) = watch::channel(0usize);
    (Requests(Arc::new(count)), Idle(watched))
}

struct Requests(Arc<watch::Sender<usize>>);

impl Requests {
    fn start(&self) -> InFlight {
        self.0.send_modify(|n| *n += 1);
        InFlight(self.0.clone())
    }
}

/// One request in flight; it ends when this is dropped.
struct InFlight(Arc<watch::Sender<usize>>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n = n.saturating_sub(1));
    }
}

struct Idle(watch::Receiver<usize>);

impl Idle {
    /// Resolves once no request has been in flight for `timeout`: the timer
    /// starts when the last request in flight ends, and any request starting
    /// meanwhile restarts the wait.
    async fn expired(&mut self, timeout: Duration) {
        loop {
            // The sender lives as long as the connection's service: gone,
            // the connection is ending by itself.
            if self.0.wait_for(|n| *n == 0).await.is_err() {
                return std::future::pending().await;
            }
            tokio::select! {
                () = tokio::time::sleep(timeout) => return,
                changed = self.0.changed() => {
                    if changed.is_err() {
                        return std::future::pending().await;
                    }
                }
            }
        }
    }
}

/// A response body that keeps its request in flight until hyper has taken
/// all of it (or dropped it).
struct TrackedBody<B> {
    inner: B,
    _request: InFlight,
}

impl<B: Body + Unpin> Body for TrackedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// What the connection's service has done, for its [`Guarded`] IO.
#[derive(Default)]
struct Served {
    /// Requests handed to the handler so far.
    started: AtomicU64,
    /// A response switched protocols: the IO is no longer HTTP/1's.
    upgraded: AtomicBool,
}

/// The HTTP/2 connection preface, which hyper-util's auto builder reads
/// whole before it chooses HTTP/2.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Makes the bytes of the answer that replaces hyper's for a refusal.
type Refusal = Box<dyn FnOnce(&ServiceError) -> Bytes + Send>;

enum Mode {
    /// HTTP/1 (or not yet known): a write while `armed`, with no request
    /// handed to the handler since `seen`, is hyper's own refusal.
    Watching { armed: bool, seen: u64 },
    /// HTTP/2, or upgraded: every byte is passed through.
    Passing,
    /// hyper's refusal is being replaced by `answer`; `written` of it are
    /// out, and whatever hyper writes is discarded (it closes next).
    Replacing { answer: Bytes, written: usize },
}

/// A connection's IO as hyper sees it: passes everything through, except
/// that it replaces the bare answer hyper's HTTP/1 parser writes by itself
/// (see the module's docs).
///
/// When a write is hyper's: on HTTP/1 hyper writes only responses the
/// handler gave it, `100 Continue` after the handler asked for the body, and
/// its parse-error answer. So a write is the parse-error answer if no
/// request has reached the handler since the IO was last *armed*; it is
/// armed at the start, and again at a flush once no request is in flight
/// (the last response's body taken, so every byte of it has been written by
/// the time hyper flushes the IO).
struct Guarded {
    inner: TcpStream,
    served: Arc<Served>,
    in_flight: watch::Receiver<usize>,
    /// When the HTTP/1 request head being read began to arrive: set at a
    /// read while no request is in flight, cleared when the head is whole
    /// (the service is called); the connection closes once it is older than
    /// the header read timeout. Never set on HTTP/2 or an upgraded
    /// connection (their bytes between requests are frames or another
    /// protocol's).
    head_started: Arc<watch::Sender<Option<Instant>>>,
    /// The connection's first bytes, up to the length of the HTTP/2 preface.
    first: Vec<u8>,
    mode: Mode,
    refusal: Option<Refusal>,
}

impl Guarded {
    fn new(
        inner: TcpStream,
        served: Arc<Served>,
        in_flight: watch::Receiver<usize>,
        head_started: Arc<watch::Sender<Option<Instant>>>,
        refusal: Refusal,
    ) -> Self {
        Self {
            inner,
            served,
            in_flight,
            head_started,
            first: Vec::with_capacity(H2_PREFACE.len()),
            mode: Mode::Watching {
                armed: true,
                seen: 0,
            },
            refusal: Some(refusal),
        }
    }

    /// Decides what a write of `head` (its first bytes) is, before it goes
    /// out.
    fn classify(&mut self, head: &[u8]) {
        let Mode::Watching { armed, seen } = self.mode else {
            return;
        };
        if self.first.starts_with(H2_PREFACE) || self.served.upgraded.load(Ordering::Acquire) {
            self.mode = Mode::Passing;
            return;
        }
        let started = self.served.started.load(Ordering::Acquire);
        if !armed || started != seen {
            // One of the handler's responses (or a 100 Continue for one).
            self.mode = Mode::Watching {
                armed: false,
                seen: started,
            };
            return;
        }
        let Some(err) = refusal_of(head) else {
            return;
        };
        if let Some(refusal) = self.refusal.take() {
            self.mode = Mode::Replacing {
                answer: refusal(&err),
                written: 0,
            };
        }
    }

    /// Re-arms at a flush with nothing in flight (see the type's docs).
    fn flushed(&mut self) {
        if let Mode::Watching { armed, .. } = &mut self.mode {
            if !*armed && *self.in_flight.borrow() == 0 {
                self.mode = Mode::Watching {
                    armed: true,
                    seen: self.served.started.load(Ordering::Acquire),
                };
            }
        }
    }

    /// Starts the head's timer at the first bytes read between requests
    /// (HTTP/1 only); stops it for good once the connection is HTTP/2 or
    /// upgraded.
    fn time_head(&self, read: usize) {
        let h2 = self.first.len() >= H2_PREFACE.len() && self.first.starts_with(H2_PREFACE);
        if h2 || self.served.upgraded.load(Ordering::Acquire) {
            self.head_started.send_if_modified(|at| at.take().is_some());
            return;
        }
        if read > 0 && *self.in_flight.borrow() == 0 {
            self.head_started.send_if_modified(|at| {
                if at.is_some() {
                    return false;
                }
                *at = Some(Instant::now());
                true
            });
        }
    }

    /// Writes what is left of the replacing answer.
    fn poll_answer(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if let Mode::Replacing { answer, written } = &mut self.mode {
            while *written < answer.len() {
                let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &answer[*written..]))?;
                if n == 0 {
                    return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
                }
                *written += n;
            }
        }
        Poll::Ready(Ok(()))
    }
}

/// The error of hyper's own answer, from its status line (hyper's
/// `on_error`: 400 for a malformed request, 414, 431); `None` for anything
/// else, which is passed through.
fn refusal_of(head: &[u8]) -> Option<ServiceError> {
    let status = head.strip_prefix(b"HTTP/1.")?.get(2..5)?;
    match status {
        b"400" => Some(ServiceError::BadRequest(
            "the request could not be parsed as HTTP".into(),
        )),
        b"414" => Some(ServiceError::UriTooLong(
            "the request target is longer than the server reads".into(),
        )),
        b"431" => Some(ServiceError::HeadersTooLarge(
            "the request's header fields are more than the server reads".into(),
        )),
        _ => None,
    }
}

/// An HTTP/1.1 response, whole, closing the connection (hyper closes it
/// after its refusal; the client should not wait for another answer).
fn encode_h1(response: Response) -> Bytes {
    let (mut parts, body) = response.into_parts();
    let body = body.into_whole().unwrap_or_default();
    parts
        .headers
        .insert(CONNECTION, HeaderValue::from_static("close"));
    parts
        .headers
        .insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
    let mut out = Vec::with_capacity(256 + body.len());
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(parts.status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(parts.status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in &parts.headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&body);
    out.into()
}

impl AsyncRead for Guarded {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        ready!(Pin::new(&mut self.inner).poll_read(cx, buf))?;
        let read = buf.filled().len() - before;
        let missing = H2_PREFACE.len().saturating_sub(self.first.len());
        if missing > 0 {
            let new = &buf.filled()[before..];
            let take = new.len().min(missing);
            let new = new[..take].to_vec();
            self.first.extend_from_slice(&new);
        }
        self.time_head(read);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.classify(buf);
        if let Mode::Replacing { .. } = self.mode {
            ready!(self.poll_answer(cx))?;
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        if let Some(head) = bufs.iter().find(|b| !b.is_empty()) {
            self.classify(head);
        }
        if let Mode::Replacing { .. } = self.mode {
            ready!(self.poll_answer(cx))?;
            return Poll::Ready(Ok(bufs.iter().map(|b| b.len()).sum()));
        }
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        ready!(self.poll_answer(cx))?;
        ready!(Pin::new(&mut self.inner).poll_flush(cx))?;
        self.flushed();
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        ready!(self.poll_answer(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The wait after a failed accept: doubling from 10 ms to 1 s, back to
/// 10 ms after a success.
struct AcceptBackoff {
    next: Duration,
}

impl Default for AcceptBackoff {
    fn default() -> Self {
        Self {
            next: ACCEPT_BACKOFF_MIN,
        }
    }
}

impl AcceptBackoff {
    fn failed(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(ACCEPT_BACKOFF_MAX);
        delay
    }

    fn succeeded(&mut self) {
        self.next = ACCEPT_BACKOFF_MIN;
    }
}

/// At most one report per period; the occurrences in between are counted
/// and handed to the next report.
struct Throttle {
    period: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl Throttle {
    fn new(period: Duration) -> Self {
        Self {
            period,
            last: None,
            suppressed: 0,
        }
    }

    /// `Some(suppressed since the last report)` if this one is to be
    /// reported.
    fn report(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(last) if now.saturating_duration_since(last) < self.period => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_derived_cap_leaves_a_reserve_of_descriptors() {
        // The common soft limit: 1024 less 256.
        assert_eq!(derived_max_connections(Some(1024)), 768);
        assert_eq!(derived_max_connections(None), 768);
        // An eighth once that is more than 256.
        assert_eq!(derived_max_connections(Some(65_536)), 57_344);
        // A tiny limit still serves a quarter of it.
        assert_eq!(derived_max_connections(Some(256)), 64);
        assert_eq!(derived_max_connections(Some(2)), 1);
        // Unlimited or huge: the ceiling.
        assert_eq!(
            derived_max_connections(Some(u64::MAX)),
            MAX_CONNECTIONS_CEILING
        );
        assert_eq!(max_connections(0, Some(1024)), 768);
        assert_eq!(max_connections(8, Some(1024)), 8);
        assert_eq!(max_connections(usize::MAX, None), MAX_CONNECTIONS_CEILING);
    }

    #[test]
    fn accept_backoff_doubles_to_a_second_and_resets() {
        let mut backoff = AcceptBackoff::default();
        let delays: Vec<_> = (0..9).map(|_| backoff.failed()).collect();
        assert_eq!(delays[0], Duration::from_millis(10));
        assert_eq!(delays[1], Duration::from_millis(20));
        assert_eq!(delays[6], Duration::from_millis(640));
        assert_eq!(delays[7], Duration::from_secs(1));
        assert_eq!(delays[8], Duration::from_secs(1));
        backoff.succeeded();
        assert_eq!(backoff.failed(), Duration::from_millis(10));
    }

    #[test]
    fn reports_are_throttled_and_count_what_they_left_out() {
        let start = Instant::now();
        let mut throttle = Throttle::new(Duration::from_secs(1));
        assert_eq!(throttle.report(start), Some(0));
        for ms in [1, 200, 999] {
            assert_eq!(throttle.report(start + Duration::from_millis(ms)), None);
        }
        assert_eq!(
            throttle.report(start + Duration::from_millis(1000)),
            Some(3)
        );
        assert_eq!(throttle.report(start + Duration::from_millis(1001)), None);
        assert_eq!(throttle.report(start + Duration::from_secs(5)), Some(1));
    }

    #[test]
    fn only_hyper_s_refusals_are_replaced_and_the_replacement_is_whole() {
        let refused = |head: &[u8]| refusal_of(head).map(|err| err.code());
        assert_eq!(
            refused(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n"),
            Some("BAD_REQUEST")
        );
        assert_eq!(
            refused(b"HTTP/1.1 414 URI Too Long\r\n"),
            Some("URI_TOO_LONG")
        );
        assert_eq!(
            refused(b"HTTP/1.0 431 Request Header Fields Too Large\r\n"),
            Some("HEADERS_TOO_LARGE")
        );
        assert_eq!(refused(b"HTTP/1.1 200 OK\r\n"), None);
        assert_eq!(refused(b"HTTP/1.1 40"), None);
        assert_eq!(refused(b"\x00\x00\x12\x04"), None);

        let answer = encode_h1(response::error(&ServiceError::UriTooLong("long".into())));
        let text = String::from_utf8(answer.to_vec()).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 414 URI Too Long\r\n"), "{head}");
        assert!(head.contains("\r\nconnection: close"), "{head}");
        assert!(
            head.contains(&format!("\r\ncontent-length: {}", body.len())),
            "{head}"
        );
        assert!(body.contains("\"URI_TOO_LONG\""), "{body}");
    }

    #[tokio::test]
    async fn idle_waits_for_requests_in_flight() {
        let (requests, mut idle) = in_flight();
        let started = Instant::now();
        let request = requests.start();
        let expiry = tokio::spawn(async move {
            idle.expired(Duration::from_millis(100)).await;
            started.elapsed()
        });
        // The request runs for 300 ms; the timer starts when it ends.
        tokio::time::sleep(Duration::from_millis(300)).await;
        drop(request);
        let elapsed = expiry.await.unwrap();
        assert!(elapsed >= Duration::from_millis(400), "{elapsed:?}");
    }
}
