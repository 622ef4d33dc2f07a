//! OTLP export (`--features otlp`): a real `busbar serve` exports to an OTLP/HTTP
//! sink in this test, which decodes the protobuf the way a collector would. One
//! order travels ingest -> payment-check -> (PaymentSucceeded) -> testkit, and the
//! spans it leaves must form one trace: the publish span is the root, the first
//! delivery its child, the delivery of the event payment-check published a child
//! of that delivery. A CloudEvent arriving with a `traceparent` joins its
//! producer's trace instead.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::harness::process::{NodeDir, Server};
use crate::harness::{built, http, poll_until};
use axum::body::Bytes;
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use serde_json::{Value, json};

const RULES: &str = r#"
[metrics]
interval_secs = 0

[[rules]]
name = "orders"
pattern = '{"source": ["order-service"], "detail-type": ["OrderCreated"]}'
[[rules.targets]]
id = "check"
plugin = "payment-check"

[[rules]]
name = "payments"
pattern = '{"source": ["payment-service"]}'
[[rules.targets]]
id = "sink"
plugin = "testkit"
"#;

/// Every span the sink received, with the service name of its resource.
type Received = Arc<Mutex<Vec<(String, Span)>>>;

/// An OTLP/HTTP receiver on a free loopback port: `POST /v1/traces`, protobuf.
fn start_sink() -> (String, Received) {
    let received: Received = Arc::default();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let store = received.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let app = axum::Router::new().route(
                "/v1/traces",
                post(move |body: Bytes| {
                    let store = store.clone();
                    async move {
                        let request =
                            ExportTraceServiceRequest::decode(body).expect("OTLP protobuf");
                        let mut store = store.lock().unwrap();
                        for resource in request.resource_spans {
                            let service = resource
                                .resource
                                .iter()
                                .flat_map(|r| &r.attributes)
                                .find(|a| a.key == "service.name")
                                .and_then(|a| a.value.as_ref())
                                .and_then(|v| match &v.value {
                                    Some(AnyValue::StringValue(s)) => Some(s.clone()),
                                    _ => None,
                                })
                                .unwrap_or_default();
                            for scope in resource.scope_spans {
                                for span in scope.spans {
                                    store.push((service.clone(), span));
                                }
                            }
                        }
                        // An empty ExportTraceServiceResponse: everything accepted.
                        (
                            [("content-type", "application/x-protobuf")],
                            Vec::<u8>::new(),
                        )
                    }
                }),
            );
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
    });
    (endpoint, received)
}

fn attr(span: &Span, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|a| a.key == key)
        .and_then(|a| a.value.as_ref())
        .and_then(|v| match &v.value {
            Some(AnyValue::StringValue(s)) => Some(s.clone()),
            Some(AnyValue::IntValue(i)) => Some(i.to_string()),
            _ => None,
        })
}

/// Waits until a span satisfying `pred` has been exported, and returns it.
fn wait_span(received: &Received, what: &str, pred: impl Fn(&Span) -> bool) -> Span {
    poll_until(Duration::from_secs(60), || {
        let received = received.lock().unwrap();
        received
            .iter()
            .find(|(_, s)| pred(s))
            .map(|(_, s)| s.clone())
    })
    .unwrap_or_else(|| {
        panic!(
            "no exported span for {what}; received: {:#?}",
            received
                .lock()
                .unwrap()
                .iter()
                .map(|(_, s)| (s.name.clone(), attr(s, "event"), attr(s, "rule")))
                .collect::<Vec<_>>()
        )
    })
}

fn start_node() -> (Server, Received) {
    let node = NodeDir::new(RULES);
    node.add_plugin(&built("plugins/payment-check.wasm"), "payment-check", None);
    node.add_plugin(&built("plugins/fixtures/testkit.wasm"), "testkit", None);
    let (endpoint, received) = start_sink();
    let server = node.start_with_env(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
        // Export every 100 ms rather than every 5 s, so the test is quick.
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ]);
    // The node dir must outlive the server: leak it for the test's lifetime.
    std::mem::forget(node);
    (server, received)
}

fn publish(base: &str, body: Value, content_type: &str, path: &str) -> Value {
    let r = http()
        .post(format!("{base}{path}"))
        .header("content-type", content_type)
        .body(body.to_string())
        .send()
        .unwrap();
    assert!(r.status().is_success(), "publish answered {}", r.status());
    r.json().unwrap()
}

#[test]
fn one_order_is_one_trace_from_ingest_through_the_choreography() {
    let (server, received) = start_node();
    let reply = publish(
        &server.base,
        json!({"source": "order-service", "detail-type": "OrderCreated",
               "detail": {"id": "order-1", "amount": 100}}),
        "application/json",
        "/events",
    );
    let id = reply["entries"][0]["id"].as_str().unwrap().to_string();

    let root = wait_span(&received, "the publish span", |s| {
        s.name == "publish" && attr(s, "event").as_deref() == Some(&id)
    });
    assert!(
        root.parent_span_id.is_empty(),
        "publish is the trace's root"
    );
    assert_eq!(attr(&root, "rules").as_deref(), Some("orders"));
    assert_eq!(attr(&root, "surface").as_deref(), Some("native"));

    let check = wait_span(&received, "the payment-check delivery", |s| {
        s.name == "delivery" && attr(s, "event").as_deref() == Some(&id)
    });
    assert_eq!(
        check.trace_id, root.trace_id,
        "the delivery is in the event's trace"
    );
    assert_eq!(
        check.parent_span_id, root.span_id,
        "the delivery is the publish span's child"
    );
    assert_eq!(attr(&check, "rule").as_deref(), Some("orders"));
    assert_eq!(attr(&check, "plugin").as_deref(), Some("payment-check"));
    assert_eq!(attr(&check, "outcome").as_deref(), Some("ok"));

    // PaymentSucceeded, published by payment-check, carries the delivery's context.
    let sink = wait_span(&received, "the delivery of PaymentSucceeded", |s| {
        s.name == "delivery" && attr(s, "rule").as_deref() == Some("payments")
    });
    assert_eq!(
        sink.trace_id, root.trace_id,
        "the choreography stays in one trace"
    );
    assert_eq!(sink.parent_span_id, check.span_id);
    assert_ne!(attr(&sink, "event").as_deref(), Some(id.as_str()));
    assert_eq!(attr(&sink, "outcome").as_deref(), Some("ok"));

    let services: Vec<String> = received
        .lock()
        .unwrap()
        .iter()
        .map(|(s, _)| s.clone())
        .collect();
    assert!(
        services.iter().all(|s| s == "busbar"),
        "service.name: {services:?}"
    );
}

#[test]
fn a_cloudevent_with_traceparent_joins_its_producers_trace() {
    let (server, received) = start_node();
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent = "00f067aa0ba902b7";
    publish(
        &server.base,
        json!({"specversion": "1.0", "id": "ce-traced-1", "source": "order-service",
               "type": "OrderCreated", "traceparent": format!("00-{trace}-{parent}-01"),
               "data": {"id": "order-2", "amount": 50}}),
        "application/cloudevents+json",
        "/cloudevents",
    );
    let root = wait_span(&received, "the publish span", |s| {
        s.name == "publish" && attr(s, "event").as_deref() == Some("ce-traced-1")
    });
    assert_eq!(hex::encode(&root.trace_id), trace);
    assert_eq!(hex::encode(&root.parent_span_id), parent);
    let check = wait_span(&received, "the delivery", |s| {
        s.name == "delivery" && attr(s, "event").as_deref() == Some("ce-traced-1")
    });
    assert_eq!(hex::encode(&check.trace_id), trace);
    // The producer's traceparent is the event's context and is left as it came.
    assert_eq!(hex::encode(&check.parent_span_id), parent);
    let archived: Value = reqwest::blocking::get(format!(
        "{}/v1/archive?pattern={}",
        server.base,
        urlencode(r#"{"id": ["ce-traced-1"]}"#)
    ))
    .unwrap()
    .json()
    .unwrap();
    let text = archived.to_string();
    assert!(
        text.contains(&format!("00-{trace}-{parent}-01")),
        "archived event keeps its traceparent: {text}"
    );
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
