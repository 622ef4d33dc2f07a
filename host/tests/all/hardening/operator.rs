//! Operator surprises: start-up concurrency, config reloads, first-start metrics, tail.

use crate::harness::eventually;
use crate::harness::process::NodeDir;
use crate::harness::runtime::install;
use crate::harness::server::TestServer;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::time::{Duration, Instant};

const ORDER_RULE: &str = r#"{"source": ["order-service"], "detail-type": ["OrderCreated"]}"#;

/// A target made before its plugin loaded runs at the manifest's
/// `scaling.concurrency` once the plugin is there, not at the placeholder level.
#[test]
fn a_target_made_before_its_plugin_loads_takes_the_manifest_concurrency() {
    let s = TestServer::start();
    s.put_rule(
        "default",
        "orders",
        &json!({"pattern": ORDER_RULE, "targets": [{"id": "pay", "plugin": "payment-check"}]}),
    );
    let queue = "default/orders/pay";
    let before = s.target(queue).expect("the target is listed");
    assert_eq!(before["plugin_loaded"], false);
    assert_eq!(before["concurrency"], 1, "placeholder level: {before}");

    let manifest =
        std::fs::read_to_string(crate::harness::repo_root().join("plugins/payment-check.toml"))
            .unwrap();
    assert!(
        manifest.contains("concurrency = 2"),
        "the shipped manifest asks for 2"
    );
    install(
        &s.node.config.server.plugins_dir,
        "payment-check",
        "payment-check",
        Some(&manifest),
    );
    eventually("payment-check to load", Duration::from_secs(60), || {
        s.target(queue)
            .filter(|t| t["plugin_loaded"] == true)
            .map(|_| ())
    });
    // The reconcile that follows the load may land a moment after the load itself.
    let after = eventually(
        "the manifest's concurrency",
        Duration::from_secs(10),
        || s.target(queue).filter(|t| t["concurrency"] == 2),
    );
    assert_eq!(after["min_concurrency"], 1);
    assert_eq!(after["max_concurrency"], 16);
}

/// Reading the config file (as busbar's own reload does, or a second node
/// sharing it) reloads nothing; a change of content reloads exactly once.
#[test]
fn the_config_file_reloads_on_content_changes_only() {
    let node = NodeDir::new("[[rules]]\nname = \"first\"\npattern = '{\"source\": [\"a\"]}'\n");
    let server = node.start();
    let config = node.dir.path().join("busbar.toml");
    let reloads = || {
        server
            .log_text()
            .matches("reloaded rules from the config file")
            .count()
    };

    for _ in 0..20 {
        std::fs::read(&config).unwrap();
    }
    // Absence can only be shown over a span of time; a reload fires 150 ms after its event.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        reloads(),
        0,
        "reads alone reloaded the config:\n{}",
        server.log_text()
    );

    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str("\n[[rules]]\nname = \"second\"\npattern = '{\"source\": [\"b\"]}'\n");
    std::fs::write(&config, text).unwrap();
    let client = reqwest::blocking::Client::new();
    eventually("the new rule", Duration::from_secs(20), || {
        let rules: Value = client
            .get(format!("{}/v1/rules", server.base))
            .send()
            .ok()?
            .json()
            .ok()?;
        rules["rules"]
            .as_array()?
            .iter()
            .any(|r| r["name"] == "second")
            .then_some(())
    });
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        reloads(),
        1,
        "one change, one reload:\n{}",
        server.log_text()
    );
}

/// While the autoscaler is not loaded (its first compile takes a minute), the
/// metrics events routed to it are superseded by fresher ones, not dead-lettered;
/// an ordinary event waiting as long still is.
#[test]
fn waiting_metrics_events_are_superseded_not_dead_lettered() {
    let s = TestServer::start();
    s.put_rule(
        "default",
        "metrics",
        &json!({"pattern": {"source": ["busbar"], "detail-type": ["Target Metrics"]},
                "targets": [{"id": "scaler", "plugin": "autoscaler",
                             "retry": {"max_event_age_secs": 60}}]}),
    );
    s.put_rule(
        "default",
        "orders",
        &json!({"pattern": ORDER_RULE, "targets": [{"id": "pay", "plugin": "payment-check",
                                                     "retry": {"max_event_age_secs": 60}}]}),
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(s.node.metrics.publish_once());
    let order =
        json!({"source": "order-service", "detail-type": "OrderCreated", "detail": {"amount": 1}});
    assert_eq!(s.post_json("/events", &order).status, 200);
    let waiting = |queue: &str| {
        s.target(queue)
            .map_or(0, |t| t["backlog"].as_u64().unwrap())
    };
    assert_eq!(waiting("default/metrics/scaler"), 1);
    assert_eq!(waiting("default/orders/pay"), 1);

    // Past the 60 s maximum event age, on the node's clock.
    s.node.clock.advance(Duration::from_secs(61));
    let letters = eventually("the order's dead letter", Duration::from_secs(20), || {
        let l = s.dead_letters();
        (!l.is_empty()).then_some(l)
    });
    eventually(
        "the metrics queue to drain",
        Duration::from_secs(20),
        || (waiting("default/metrics/scaler") == 0).then_some(()),
    );
    std::thread::sleep(Duration::from_millis(300));
    let letters_now = s.dead_letters();
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(
        letters_now.len(),
        1,
        "only the order is a dead letter: {letters_now:#?}"
    );
    assert_eq!(letters_now[0]["rule"], "orders");
}

/// The tail shows the events plugins publish, and an event's line always comes
/// before the lines of its deliveries.
#[test]
fn tail_shows_plugin_events_and_events_before_their_deliveries() {
    let s = TestServer::start_with(|c| {
        let manifest =
            std::fs::read_to_string(crate::harness::repo_root().join("plugins/payment-check.toml"))
                .unwrap();
        install(
            &c.server.plugins_dir,
            "payment-check",
            "payment-check",
            Some(&manifest),
        );
    });
    s.put_rule(
        "default",
        "orders",
        &json!({"pattern": ORDER_RULE, "targets": [{"id": "pay", "plugin": "payment-check"}]}),
    );
    let resp = s.client().get(format!("{}/v1/tail", s.url)).send().unwrap();
    assert_eq!(resp.status(), 200);
    let (tx, rx) = std::sync::mpsc::channel::<Value>();
    std::thread::spawn(move || {
        for line in BufReader::new(resp).lines() {
            let Ok(line) = line else { break };
            if let Some(data) = line.strip_prefix("data: ")
                && tx.send(serde_json::from_str(data).unwrap()).is_err()
            {
                break;
            }
        }
    });
    let orders = 20;
    let batch: Vec<Value> = (0..orders)
        .map(|i| {
            json!({"source": "order-service", "detail-type": "OrderCreated",
                        "detail": {"id": format!("o-{i}"), "amount": 100 + i}})
        })
        .collect();
    let r = s.post_json("/events", &Value::Array(batch));
    assert_eq!(r.status, 200, "{}", r.text);

    let mut seen_events = std::collections::HashSet::new();
    let mut payments = 0;
    let mut deliveries = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while payments < orders || deliveries < orders {
        let left = deadline.saturating_duration_since(Instant::now());
        let item = rx
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("tail: {payments} payments and {deliveries} deliveries"));
        match item["kind"].as_str() {
            Some("event") => {
                seen_events.insert(item["event"]["id"].as_str().unwrap().to_string());
                if item["event"]["detail-type"] == "PaymentSucceeded" {
                    assert_eq!(item["event"]["source"], "payment-service");
                    payments += 1;
                }
            }
            Some("delivery") => {
                let event = item["event_id"].as_str().unwrap_or_default();
                assert!(
                    seen_events.contains(event),
                    "a delivery line came before its event's line: {item}"
                );
                deliveries += 1;
            }
            _ => panic!("unexpected tail item {item}"),
        }
    }
}
