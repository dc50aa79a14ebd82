//! Traces end to end: the app exports to an OTLP/HTTP receiver on loopback
//! (testkit's recording HTTP server, decoding each export request with
//! `opentelemetry-proto`), and one order request — continuing a client's
//! `traceparent` — makes one trace: its server span, the orders actor call
//! and database write, the delivery of `order.created` to billing, billing's
//! actor call and invoice write, and the deliveries of the `invoice.created`
//! billing published, every parent link inside the set.
//!
//! A test binary of its own: the tracing subscriber (and so the traces
//! layer) is process-global, and this test installs it first.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use common::{spawn_app_with, ALICE};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use reqwest::Method;
use serde_json::{json, Value};
use stageworks::config::{LogConfig, TelemetryConfig};

/// The client's span, which the order request continues.
const CLIENT_TRACE: &str = "5b8aa5a2d2c872e8321cf37308d69df2";
const CLIENT_SPAN: &str = "051581bf3cb55c13";

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn attribute(span: &Span, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.as_ref())
        .map(|v| match v {
            AnyValue::StringValue(s) => s.clone(),
            AnyValue::IntValue(i) => i.to_string(),
            AnyValue::DoubleValue(d) => d.to_string(),
            AnyValue::BoolValue(b) => b.to_string(),
            other => format!("{other:?}"),
        })
}

/// Every span the receiver got so far, and the `service.name`s it saw.
fn exported(receiver: &testkit::http::Receiver) -> (Vec<Span>, HashSet<String>) {
    let mut spans = Vec::new();
    let mut services = HashSet::new();
    for request in receiver.received() {
        assert_eq!(request.uri.path(), "/v1/traces");
        assert_eq!(
            request
                .headers
                .get("content-type")
                .and_then(|v| v.to_str().ok()),
            Some("application/x-protobuf")
        );
        let export = ExportTraceServiceRequest::decode(request.body.as_ref())
            .expect("an OTLP protobuf export request");
        for resource in export.resource_spans {
            if let Some(resource) = &resource.resource {
                for kv in &resource.attributes {
                    if kv.key == "service.name" {
                        if let Some(AnyValue::StringValue(name)) =
                            kv.value.as_ref().and_then(|v| v.value.as_ref())
                        {
                            services.insert(name.clone());
                        }
                    }
                }
            }
            for scope in resource.scope_spans {
                spans.extend(scope.spans);
            }
        }
    }
    (spans, services)
}

fn describe(spans: &[&Span]) -> String {
    spans
        .iter()
        .map(|s| {
            format!(
                "{} span={} parent={}",
                s.name,
                hex(&s.span_id),
                hex(&s.parent_span_id)
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test]
async fn an_order_and_its_invoice_are_one_trace() {
    let receiver = testkit::http::Receiver::start().await.expect("receiver");
    let telemetry = TelemetryConfig {
        otlp_endpoint: receiver.url(""),
        ..TelemetryConfig::default()
    };
    let logs = LogConfig {
        level: "warn".into(),
        ..LogConfig::default()
    };
    assert!(
        stageworks::telemetry::logs::init(&logs, &telemetry),
        "this test installs the process's subscriber"
    );
    assert!(stageworks::telemetry::traces::enabled());
    let app = spawn_app_with(|config| config.telemetry = telemetry.clone()).await;

    let client_parent = format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01");
    let created = app
        .as_user(Method::POST, "/api/v1/orders", ALICE)
        .header("traceparent", &client_parent)
        .json(&json!({"amount": 1200, "currency": "EUR"}))
        .send()
        .await
        .expect("request sent");
    assert_eq!(created.status(), 201);
    let answered = created
        .headers()
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .expect("a traceparent on the answer")
        .to_owned();
    let parts: Vec<&str> = answered.split('-').collect();
    assert_eq!(parts.len(), 4, "{answered}");
    assert_eq!(parts[0], "00");
    assert_eq!(
        parts[1], CLIENT_TRACE,
        "the answer continues the client's trace"
    );
    assert_ne!(
        parts[2], CLIENT_SPAN,
        "the answer names the server's own span"
    );
    assert_eq!(parts[3], "01");
    let server_span_id = parts[2].to_owned();
    let order: Value = created.json().await.expect("JSON");
    let order_id = order["id"].as_str().expect("id").to_owned();
    app.eventually(
        &format!("/api/v1/invoices/by-order/{order_id}"),
        ALICE,
        |_| true,
    )
    .await;

    // A malformed traceparent is ignored: the request gets a trace of its own.
    let read = app
        .as_user(Method::GET, &format!("/api/v1/orders/{order_id}"), ALICE)
        .header("traceparent", "00-not-a-trace-01")
        .send()
        .await
        .expect("request sent");
    assert_eq!(read.status(), 200);
    let own = read
        .headers()
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .expect("a traceparent on the answer")
        .to_owned();
    let own_trace = own.split('-').nth(1).expect("a trace id").to_owned();
    assert_eq!(own_trace.len(), 32);
    assert_ne!(own_trace, CLIENT_TRACE);

    // What must be in the order's trace, by span name.
    let wanted = [
        "POST /api/v1/orders",
        "orders/Create",
        "INSERT orders",
        "process order.created",
        "INSERT invoices",
        "process invoice.created",
    ];
    let deadline = Instant::now() + Duration::from_secs(30);
    let (trace, services) = loop {
        let (spans, services) = exported(&receiver);
        let trace: Vec<Span> = spans
            .into_iter()
            .filter(|s| hex(&s.trace_id) == CLIENT_TRACE)
            .collect();
        let names: HashSet<&str> = trace.iter().map(|s| s.name.as_str()).collect();
        let ids: HashSet<String> = trace.iter().map(|s| hex(&s.span_id)).collect();
        let billing_call = trace
            .iter()
            .any(|s| s.name == "billing/Apply" || s.name == "billing/ApplyAll");
        let linked = trace.iter().all(|s| {
            let parent = hex(&s.parent_span_id);
            ids.contains(&parent) || parent == CLIENT_SPAN
        });
        if wanted.iter().all(|n| names.contains(n)) && billing_call && linked {
            break (trace, services);
        }
        assert!(
            Instant::now() < deadline,
            "the order's trace is incomplete:\n{}",
            describe(&trace.iter().collect::<Vec<_>>())
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(services.contains("stageworks"), "{services:?}");

    let by_id: HashMap<String, &Span> = trace.iter().map(|s| (hex(&s.span_id), s)).collect();
    let named = |name: &str| -> Vec<&Span> { trace.iter().filter(|s| s.name == name).collect() };
    let parent_of = |span: &Span| by_id.get(&hex(&span.parent_span_id)).copied();

    // The server span: the client's child, the route template as its name.
    let server = named("POST /api/v1/orders");
    assert_eq!(server.len(), 1, "{}", describe(&server));
    let server = server[0];
    assert_eq!(hex(&server.span_id), server_span_id);
    assert_eq!(hex(&server.parent_span_id), CLIENT_SPAN);
    assert_eq!(server.kind, 2, "a server span");
    assert_eq!(
        attribute(server, "http.request.method").as_deref(),
        Some("POST")
    );
    assert_eq!(
        attribute(server, "http.route").as_deref(),
        Some("/api/v1/orders")
    );
    assert_eq!(
        attribute(server, "http.response.status_code").as_deref(),
        Some("201")
    );
    assert!(attribute(server, "request_id").is_some_and(|id| !id.is_empty()));

    // The orders actor call is the server span's child, its write the call's.
    let call = named("orders/Create");
    assert_eq!(call.len(), 1);
    assert_eq!(
        parent_of(call[0]).map(|p| p.name.as_str()),
        Some("POST /api/v1/orders")
    );
    assert_eq!(attribute(call[0], "rpc.service").as_deref(), Some("orders"));
    let write = named("INSERT orders");
    assert_eq!(
        parent_of(write[0]).map(|p| p.name.as_str()),
        Some("orders/Create")
    );
    let system = attribute(write[0], "db.system").expect("db.system");
    let expected = if common::test_database_url().is_some() {
        "postgresql"
    } else {
        "sqlite"
    };
    assert_eq!(system, expected);
    assert_eq!(write[0].kind, 3, "a client span");

    // The delivery to billing is a consumer span below the order's request;
    // billing's call and write hang below the delivery.
    let to_billing: Vec<&Span> = named("process order.created")
        .into_iter()
        .filter(|s| attribute(s, "messaging.consumer.group.name").as_deref() == Some("billing"))
        .collect();
    assert_eq!(to_billing.len(), 1, "{}", describe(&to_billing));
    assert_eq!(to_billing[0].kind, 5, "a consumer span");
    let billing_call = trace
        .iter()
        .find(|s| s.name == "billing/Apply" || s.name == "billing/ApplyAll")
        .expect("billing's call");
    assert_eq!(
        hex(&billing_call.parent_span_id),
        hex(&to_billing[0].span_id),
        "billing's call is the delivery's child"
    );
    let invoice_write = named("INSERT invoices");
    assert_eq!(
        parent_of(invoice_write[0]).map(|p| p.name.as_str()),
        Some(billing_call.name.as_str())
    );
    // The invoice.created billing published carries the trace on: its
    // deliveries continue from billing's call.
    for delivery in named("process invoice.created") {
        assert_eq!(
            hex(&delivery.parent_span_id),
            hex(&billing_call.span_id),
            "invoice.created continues from where billing applied order.created"
        );
    }

    // The read with the malformed header: its own trace, named by its route.
    let (spans, _) = exported(&receiver);
    let read_span = spans
        .iter()
        .find(|s| hex(&s.trace_id) == own_trace && s.name == "GET /api/v1/orders/{id}");
    let read_span = match read_span {
        Some(span) => span.clone(),
        None => {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let (spans, _) = exported(&receiver);
                if let Some(span) = spans
                    .into_iter()
                    .find(|s| hex(&s.trace_id) == own_trace && s.name == "GET /api/v1/orders/{id}")
                {
                    break span;
                }
                assert!(Instant::now() < deadline, "no span for the read");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    assert!(read_span.parent_span_id.is_empty(), "a root span");
    assert_eq!(
        attribute(&read_span, "http.route").as_deref(),
        Some("/api/v1/orders/{id}")
    );
}
