//! One pass per event: every event is matched once, whatever watches it, and
//! rule changes are persisted before they are applied.

use crate::harness::eventually;
use crate::harness::nats::NatsServer;
use crate::harness::process::NodeDir;
use crate::harness::server::TestServer;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::time::Duration;

/// The value of an unlabelled counter in Prometheus text (0 when absent).
fn counter(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .map_or(0, |v| v.trim().parse::<f64>().unwrap() as u64)
}

/// With the tail open, spans built (debug logging) and metrics served, each
/// accepted event is routed exactly once, and the tail shows the routed rules.
#[test]
fn each_event_is_matched_once_with_tail_spans_and_metrics_on() {
    let node = NodeDir::new(
        "[metrics]\ninterval_secs = 0\n\
         [[rules]]\nname = \"orders\"\npattern = '{\"source\": [\"shop\"]}'\n\
         [[rules]]\nname = \"everything\"\npattern = '{\"source\": [{\"exists\": true}]}'\n",
    );
    let server = node.start_with_env(&[("BUSBAR_LOG", "debug")]);
    let client = reqwest::blocking::Client::new();
    let tail = client
        .get(format!("{}/v1/tail", server.base))
        .send()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<Value>();
    std::thread::spawn(move || {
        for line in BufReader::new(tail).lines() {
            let Ok(line) = line else { break };
            if let Some(data) = line.strip_prefix("data: ")
                && tx.send(serde_json::from_str(data).unwrap()).is_err()
            {
                break;
            }
        }
    });
    let metrics = || {
        client
            .get(format!("{}/metrics", server.base))
            .send()
            .unwrap()
            .text()
            .unwrap()
    };
    let before = counter(&metrics(), "busbar_events_routed_total");
    let n = 25;
    for i in 0..n {
        let r = client
            .post(format!("{}/events", server.base))
            .json(&json!({"source": "shop", "detail-type": "Order", "detail": {"n": i}}))
            .send()
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    for _ in 0..n {
        let item = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("a tail line per event");
        assert_eq!(item["kind"], "event");
        assert_eq!(item["rules"], json!(["everything", "orders"]));
    }
    let after = eventually("the routed counter", Duration::from_secs(10), || {
        let v = counter(&metrics(), "busbar_events_routed_total");
        (v >= before + n).then_some(v)
    });
    assert_eq!(after - before, n, "one match per accepted event");
}

/// A rule or bus delete whose store write fails leaves the live set as the
/// store has it: the rule still routes, and a retry after the store is back works.
#[test]
fn a_failed_delete_changes_nothing() {
    let mut nats = NatsServer::start();
    let url = nats.url();
    let s = TestServer::start_with(|c| c.server.bus = Some(url));
    s.put_rule("default", "keep", &json!({"pattern": {"source": ["a"]}}));
    let created = s
        .client()
        .put(format!("{}/v1/buses/side", s.url))
        .json(&json!({}))
        .send()
        .unwrap();
    assert_eq!(created.status(), 201, "{}", created.text().unwrap());

    nats.stop();
    let del = s
        .client()
        .delete(format!("{}/v1/rules/default/keep", s.url))
        .send()
        .unwrap();
    assert!(del.status().is_server_error(), "{}", del.status());
    let del = s
        .client()
        .delete(format!("{}/v1/buses/side", s.url))
        .send()
        .unwrap();
    assert!(del.status().is_server_error(), "{}", del.status());
    let rules = s.node.rules.snapshot();
    assert!(
        rules
            .rules
            .contains_key(&("default".to_string(), "keep".to_string())),
        "the rule is still live"
    );
    assert!(s.node.rules.has_bus("side"), "the bus is still live");

    nats.restart();
    eventually("the delete to succeed", Duration::from_secs(30), || {
        let r = s
            .client()
            .delete(format!("{}/v1/rules/default/keep", s.url))
            .send()
            .ok()?;
        r.status().is_success().then_some(())
    });
    assert!(s.node.rules.get("default", "keep").is_none());
}
