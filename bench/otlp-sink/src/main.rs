//! `otlp-sink`: the collector of the traces benchmark (`bench/traces.sh`).
//!
//! An HTTP/1.1 server on loopback that takes every `POST /v1/traces`
//! (OTLP/HTTP, protobuf), decodes it to count its spans, and answers 200 at
//! once, so that what the benchmark measures is the exporting side's cost
//! and not a collector's. `GET /stats` answers
//! `{"requests":N,"spans":N,"bytes":N,"malformed":N}`.
//!
//! Usage: `otlp-sink [ADDR]` (default `127.0.0.1:4318`). Prints
//! `listening on ADDR` once the socket is bound.

use std::convert::Infallible;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use tokio::net::TcpListener;

const DEFAULT_ADDR: &str = "127.0.0.1:4318";

#[derive(Default)]
struct Stats {
    requests: AtomicU64,
    spans: AtomicU64,
    bytes: AtomicU64,
    malformed: AtomicU64,
}

type Answer = Response<Full<Bytes>>;

fn answer(status: StatusCode, content_type: &'static str, body: Vec<u8>) -> Answer {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

async fn take(req: Request<Incoming>, stats: &Stats) -> Answer {
    match (req.method(), req.uri().path()) {
        (&Method::POST, "/v1/traces") => {
            let Ok(body) = req.into_body().collect().await.map(|b| b.to_bytes()) else {
                return answer(
                    StatusCode::BAD_REQUEST,
                    "text/plain",
                    b"unreadable".to_vec(),
                );
            };
            stats.requests.fetch_add(1, Ordering::Relaxed);
            stats.bytes.fetch_add(body.len() as u64, Ordering::Relaxed);
            match ExportTraceServiceRequest::decode(body.as_ref()) {
                Ok(export) => {
                    let spans: usize = export
                        .resource_spans
                        .iter()
                        .flat_map(|r| &r.scope_spans)
                        .map(|s| s.spans.len())
                        .sum();
                    stats.spans.fetch_add(spans as u64, Ordering::Relaxed);
                }
                Err(_) => {
                    stats.malformed.fetch_add(1, Ordering::Relaxed);
                }
            }
            // An empty ExportTraceServiceResponse.
            answer(StatusCode::OK, "application/x-protobuf", Vec::new())
        }
        (&Method::GET, "/stats") => {
            let json = format!(
                r#"{{"requests":{},"spans":{},"bytes":{},"malformed":{}}}"#,
                stats.requests.load(Ordering::Relaxed),
                stats.spans.load(Ordering::Relaxed),
                stats.bytes.load(Ordering::Relaxed),
                stats.malformed.load(Ordering::Relaxed),
            );
            answer(StatusCode::OK, "application/json", json.into_bytes())
        }
        _ => answer(StatusCode::NOT_FOUND, "text/plain", b"not found".to_vec()),
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 1)]
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
    let stats = Arc::new(Stats::default());
    loop {
        let (stream, _peer) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                eprintln!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let stats = stats.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let stats = stats.clone();
                async move { Ok::<_, Infallible>(take(req, &stats).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
