//! An HTTP/1.1 server that keeps every request it takes and answers each
//! with the next status of its script (200 `{}` once the script is empty):
//! the webhook receiver, the SMS API and the push service of the tests.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::JoinSet;

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
    received: Mutex<Vec<Received>>,
    script: Mutex<VecDeque<u16>>,
    arrived: Notify,
}

/// The receiver: [`Receiver::start`] binds a free loopback port; dropping
/// it or [`Receiver::stop`] closes the listener and every connection.
pub struct Receiver {
    addr: SocketAddr,
    shared: Arc<Shared>,
    server: Option<tokio::task::JoinHandle<()>>,
}

impl Receiver {
    pub async fn start() -> std::io::Result<Self> {
        let mut receiver = Receiver {
            addr: "127.0.0.1:0".parse().expect("a socket address"),
            shared: Arc::default(),
            server: None,
        };
        receiver.listen().await?;
        Ok(receiver)
    }

    async fn listen(&mut self) -> std::io::Result<()> {
        let listener = TcpListener::bind(self.addr).await?;
        self.addr = listener.local_addr()?;
        self.server = Some(tokio::spawn(serve(listener, self.shared.clone())));
        Ok(())
    }

    /// Stops listening and drops every open connection: the server is down.
    pub fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }

    /// Listens again on the same port (what it took is kept).
    pub async fn resume(&mut self) -> std::io::Result<()> {
        if self.server.is_none() {
            self.listen().await?;
        }
        Ok(())
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The statuses of the next requests, in order.
    pub fn answer(&self, statuses: &[u16]) {
        self.shared
            .script
            .lock()
            .expect("not poisoned")
            .extend(statuses);
    }

    pub fn received(&self) -> Vec<Received> {
        self.shared.received.lock().expect("not poisoned").clone()
    }

    pub fn count(&self) -> usize {
        self.shared.received.lock().expect("not poisoned").len()
    }

    /// Waits until at least `n` requests arrived, or `within` passed;
    /// answers what arrived either way.
    pub async fn wait_for(&self, n: usize, within: Duration) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let arrived = self.shared.arrived.notified();
            if self.count() >= n {
                break;
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                break;
            }
        }
        self.received()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let shared = shared.clone();
                connections.spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let shared = shared.clone();
                        async move { Ok::<_, std::convert::Infallible>(take(req, &shared).await) }
                    });
                    let io = hyper_util::rt::TokioIo::new(stream);
                    // A client that goes away mid-request is not the receiver's problem.
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, service)
                        .await;
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
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
    shared
        .received
        .lock()
        .expect("not poisoned")
        .push(Received {
            method: parts.method,
            uri: parts.uri,
            headers: parts.headers,
            body,
            at: Instant::now(),
        });
    shared.arrived.notify_waiters();
    let status = shared
        .script
        .lock()
        .expect("not poisoned")
        .pop_front()
        .unwrap_or(200);
    let mut response = http::Response::new(Full::new(Bytes::from_static(b"{}")));
    *response.status_mut() =
        http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    response
}
