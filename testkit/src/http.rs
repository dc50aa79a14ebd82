//! An HTTP/1.1 server that keeps every request it takes and answers each
//! with the next status of its script (200 `{}` once the script is empty):
//! the webhook receiver, the SMS API and the push service of the tests.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};

use crate::server::{accept_loop, Listening, Recorded, Serve};

/// A request the receiver took.
#[derive(Clone, Debug)]
pub struct Received {
    pub method: http::Method,
    pub uri: http::Uri,
    pub headers: http::HeaderMap,
    pub body: Bytes,
    pub at: Instant,
}

#[derive(Default)]
struct Shared {
    received: Recorded<Received>,
    script: Mutex<VecDeque<Answer>>,
}

/// One scripted answer: a status, and a `retry-after` in seconds.
#[derive(Clone, Copy)]
struct Answer {
    status: u16,
    retry_after: Option<u64>,
}

/// The receiver: [`Receiver::start`] binds a free loopback port; dropping
/// it or [`Receiver::stop`] closes the listener and every connection.
pub struct Receiver {
    listening: Listening,
    shared: Arc<Shared>,
}

impl Receiver {
    pub async fn start() -> std::io::Result<Self> {
        let shared: Arc<Shared> = Arc::default();
        let state = shared.clone();
        let serve: Serve = Box::new(move |listener| {
            let state = state.clone();
            Box::pin(accept_loop(listener, move |stream| {
                let state = state.clone();
                async move {
                    let service = hyper::service::service_fn(move |req| {
                        let state = state.clone();
                        async move { Ok::<_, std::convert::Infallible>(take(req, &state).await) }
                    });
                    let io = hyper_util::rt::TokioIo::new(stream);
                    // A client that goes away mid-request is not the receiver's problem.
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, service)
                        .await;
                }
            }))
        });
        let addr = "127.0.0.1:0".parse().expect("a socket address");
        Ok(Receiver {
            listening: Listening::bind(addr, serve).await?,
            shared,
        })
    }

    /// Stops listening and drops every open connection: the server is down.
    pub fn stop(&mut self) {
        self.listening.stop();
    }

    /// Listens again on the same port (what it took is kept).
    pub async fn resume(&mut self) -> std::io::Result<()> {
        self.listening.resume().await
    }

    pub fn addr(&self) -> SocketAddr {
        self.listening.addr()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr())
    }

    /// The statuses of the next requests, in order.
    pub fn answer(&self, statuses: &[u16]) {
        self.shared
            .script
            .lock()
            .expect("not poisoned")
            .extend(statuses.iter().map(|&status| Answer {
                status,
                retry_after: None,
            }));
    }

    /// The next request is answered `status` with `retry-after: <seconds>`.
    pub fn answer_retry_after(&self, status: u16, seconds: u64) {
        self.shared
            .script
            .lock()
            .expect("not poisoned")
            .push_back(Answer {
                status,
                retry_after: Some(seconds),
            });
    }

    pub fn received(&self) -> Vec<Received> {
        self.shared.received.all()
    }

    pub fn count(&self) -> usize {
        self.shared.received.count()
    }

    /// Waits until at least `n` requests arrived, or `within` passed;
    /// answers what arrived either way.
    pub async fn wait_for(&self, n: usize, within: Duration) -> Vec<Received> {
        self.shared.received.wait_for(n, within).await
    }
}

async fn take(
    req: http::Request<hyper::body::Incoming>,
    shared: &Shared,
) -> http::Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    shared.received.push(Received {
        method: parts.method,
        uri: parts.uri,
        headers: parts.headers,
        body,
        at: Instant::now(),
    });
    let answer = shared
        .script
        .lock()
        .expect("not poisoned")
        .pop_front()
        .unwrap_or(Answer {
            status: 200,
            retry_after: None,
        });
    let mut response = http::Response::new(Full::new(Bytes::from_static(b"{}")));
    *response.status_mut() = http::StatusCode::from_u16(answer.status)
        .unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    if let Some(seconds) = answer.retry_after {
        response
            .headers_mut()
            .insert(http::header::RETRY_AFTER, http::HeaderValue::from(seconds));
    }
    response
}
