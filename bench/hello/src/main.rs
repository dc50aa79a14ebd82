//! `hyper-hello`: the physical ceiling for the benchmarks.
//!
//! A bare hyper 1.x server (HTTP/1.1 and HTTP/2 through hyper-util's auto
//! builder, on tokio's multi-thread runtime) that answers every request with
//! `200 {"status":"ok"}`. No routing, no middleware, no actors: whatever
//! Stageworks measures below this is the cost of what it adds.
//!
//! Usage: `hyper-hello [ADDR]` (default `127.0.0.1:8099`). Prints
//! `listening on ADDR` once the socket is bound.

use std::convert::Infallible;
use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

const DEFAULT_ADDR: &str = "127.0.0.1:8099";
const BODY: &[u8] = br#"{"status":"ok"}"#;

async fn hello(_req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let mut res = Response::new(Full::new(Bytes::from_static(BODY)));
    res.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(res)
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let arg = std::env::args()
        .nth(1)
        .unwrap_or_else(|| DEFAULT_ADDR.to_owned());
    let addr: SocketAddr = arg
        .parse()
        .map_err(|e| format!("invalid listen address {arg:?}: {e}"))?;

    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on {local}")?;
        out.flush()?;
    }

    let builder = auto::Builder::new(TokioExecutor::new());
    loop {
        let (stream, _peer) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                // Out of file descriptors and the like: back off, keep serving.
                eprintln!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let builder = builder.clone();
        tokio::spawn(async move {
            // Connection errors (peer reset, bad request) end that connection only.
            let _ = builder
                .serve_connection(TokioIo::new(stream), service_fn(hello))
                .await;
        });
    }
}
