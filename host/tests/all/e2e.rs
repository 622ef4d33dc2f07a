//! End to end over HTTP: a real `busbar serve` process, the real plugins built
//! from plugins/, and the example rules.

use crate::harness::process::{NodeDir, Server};
use crate::harness::{built, eventually, http, poll_until, repo_root};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Read, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn post(base: &str, events: Value) -> Value {
    let r = http()
        .post(format!("{base}/events"))
        .json(&events)
        .send()
        .unwrap();
    assert!(r.status().is_success(), "POST /events: {}", r.status());
    let v: Value = r.json().unwrap();
    assert_eq!(v["failed"], 0, "{v}");
    v
}

fn get(base: &str, path: &str) -> Value {
    let r = http().get(format!("{base}{path}")).send().unwrap();
    assert!(r.status().is_success(), "GET {path}: {}", r.status());
    r.json().unwrap()
}

fn archive(base: &str, pattern: Value) -> Vec<Value> {
    let r = http()
        .get(format!("{base}/v1/archive"))
        .query(&[
            ("pattern", pattern.to_string().as_str()),
            ("limit", "10000"),
        ])
        .send()
        .unwrap();
    assert!(r.status().is_success(), "archive: {}", r.status());
    r.json::<Value>().unwrap()["events"]
        .as_array()
        .unwrap()
        .clone()
}

/// A webhook sink on loopback that records every request body.
fn sink() -> (u16, Arc<Mutex<Vec<Value>>>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let got: Arc<Mutex<Vec<Value>>> = Default::default();
    let seen = got.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut len = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                let l = line.trim_end().to_ascii_lowercase();
                if let Some(v) = l.strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
                if l.is_empty() {
                    break;
                }
            }
            let mut body = vec![0; len];
            let _ = reader.read_exact(&mut body);
            if let Ok(v) = serde_json::from_slice(&body) {
                seen.lock().unwrap().push(v);
            }
            let _ = stream.write_all(
                b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
            );
        }
    });
    (port, got)
}

/// The example config's rules, as shipped.
fn example_rules() -> String {
    let text = std::fs::read_to_string(repo_root().join("examples/busbar.toml")).unwrap();
    // Keep the rules; the server table comes from the test harness.
    let start = text.find("[[rules]]").unwrap();
    format!("[metrics]\ninterval_secs = 0\n{}", &text[start..])
}

fn order_flow_node(webhook_port: u16) -> (NodeDir, Server) {
    let node = NodeDir::new(&example_rules());
    for p in ["payment-check", "rewards", "autoscaler"] {
        node.add_plugin(
            &built(&format!("plugins/{p}.wasm")),
            p,
            Some(&std::fs::read_to_string(repo_root().join(format!("plugins/{p}.toml"))).unwrap()),
        );
    }
    let manifest = format!(
        "[http]\nallowed_hosts = [\"127.0.0.1:{webhook_port}\"]\n[config]\nwebhook_url = \"http://127.0.0.1:{webhook_port}/notify\"\n"
    );
    node.add_plugin(
        &built("plugins/notification.wasm"),
        "notification",
        Some(&manifest),
    );
    let server = node.start();
    // Plugins load in the background; wait for all four.
    eventually("the four plugins to load", Duration::from_secs(180), || {
        let v = get(&server.base, "/v1/plugins");
        let loaded = v
            .as_array()?
            .iter()
            .filter(|p| p["state"] == "loaded")
            .count();
        (loaded == 4).then_some(())
    });
    (node, server)
}

#[test]
fn order_flow_for_100_and_600() {
    let (port, webhook) = sink();
    let (_node, server) = order_flow_node(port);
    let base = &server.base;
    post(
        base,
        json!([
            {"source": "order-service", "detail-type": "OrderCreated", "detail": {"id": "o-100", "amount": 100, "customer": "ana@example.com"}},
            {"source": "order-service", "detail-type": "OrderCreated", "detail": {"id": "o-600", "amount": 600, "customer": "bo@example.com"}}
        ]),
    );
    let payments = eventually("two payment results", Duration::from_secs(60), || {
        let v = archive(base, json!({"source": ["payment-service"]}));
        (v.len() == 2).then_some(v)
    });
    let by_id = |id: &str| {
        payments
            .iter()
            .find(|e| e["detail"]["id"] == id)
            .unwrap_or_else(|| panic!("no payment result for {id}: {payments:?}"))
            .clone()
    };
    assert_eq!(by_id("o-100")["detail-type"], "PaymentSucceeded");
    assert_eq!(by_id("o-100")["detail"]["amount"], 100);
    assert_eq!(by_id("o-600")["detail-type"], "PaymentFailed");
    // notification heard of both orders and both payment results: four webhook calls.
    let calls = eventually("four notifications", Duration::from_secs(60), || {
        let got = webhook.lock().unwrap().clone();
        (got.len() >= 4).then_some(got)
    });
    let text: Vec<String> = calls
        .iter()
        .map(|c| c["message"].as_str().unwrap_or("").to_string())
        .collect();
    assert!(text.iter().any(|m| m.contains("o-600")), "{text:?}");
    // payment-check passes the customer on, so the payment notices reach them too.
    let failed_notice = calls
        .iter()
        .find(|c| {
            c["message"]
                .as_str()
                .is_some_and(|m| m.contains("payment failed"))
        })
        .unwrap_or_else(|| panic!("no payment-failed notice: {calls:?}"));
    assert_eq!(failed_notice["to"], "bo@example.com", "{failed_notice}");
    assert!(
        calls.iter().all(|c| c["delivery_id"].is_string()),
        "{calls:?}"
    );
}

#[test]
fn rewards_accumulate_in_kv() {
    let (port, _webhook) = sink();
    let (_node, server) = order_flow_node(port);
    let base = &server.base;
    let payment = |cost: f64| json!({"source": "demo.payments", "detail-type": "Payment Processed", "detail": {"customer_id": "c-1", "total_cost": cost}});
    post(base, payment(250.75));
    let first = eventually("the first reward", Duration::from_secs(60), || {
        archive(base, json!({"detail-type": ["RewardsGranted"]}))
            .into_iter()
            .next()
    });
    assert_eq!(first["detail"]["points"], 250);
    assert_eq!(first["detail"]["balance"], 250);
    // Under the rule's threshold: no reward.
    post(base, payment(150.0));
    post(base, payment(300.2));
    let second = eventually("the second reward", Duration::from_secs(60), || {
        archive(
            base,
            json!({"detail-type": ["RewardsGranted"], "detail": {"points": [300]}}),
        )
        .into_iter()
        .next()
    });
    assert_eq!(second["detail"]["balance"], 550);
    assert_eq!(
        archive(base, json!({"detail-type": ["RewardsGranted"]})).len(),
        2
    );
}

const FLAKY_RULES: &str = r#"
[metrics]
interval_secs = 0
[[rules]]
name = "flaky"
pattern = '{"source": ["e2e"]}'
[[rules.targets]]
id = "t"
plugin = "flaky"
retry = { max_retry_attempts = 2, max_event_age_secs = 3600, base_backoff_ms = 20, max_backoff_ms = 100 }
"#;

fn wait_loaded(base: &str, name: &str, version_not: Option<&str>) -> String {
    eventually(
        &format!("plugin {name} to load"),
        Duration::from_secs(60),
        || {
            let v = get(base, "/v1/plugins");
            let p = v.as_array()?.iter().find(|p| p["name"] == name)?.clone();
            let version = p["version"].as_str()?.to_string();
            (p["state"] == "loaded" && Some(version.as_str()) != version_not).then_some(version)
        },
    )
}

#[test]
fn retries_then_dead_letter_then_redrive() {
    let node = NodeDir::new(FLAKY_RULES);
    node.add_plugin(&built("plugins/fixtures/testkit.wasm"), "flaky", None);
    let server = node.start();
    let base = &server.base;
    let v1 = wait_loaded(base, "flaky", None);
    post(
        base,
        json!({"source": "e2e", "detail-type": "fail-retry", "detail": {"k": 1}}),
    );
    let dl = eventually("a dead letter", Duration::from_secs(30), || {
        get(base, "/v1/dlq")["dead_letters"]
            .as_array()?
            .first()
            .cloned()
    });
    assert_eq!(dl["attempts"], 3, "one try and two retries: {dl}");
    assert!(
        dl["last_error"]
            .as_str()
            .unwrap()
            .contains("asked to retry"),
        "{dl}"
    );
    assert_eq!(dl["rule"], "flaky");
    let shown = get(base, &format!("/v1/dlq/{}", dl["id"]));
    assert_eq!(shown["event"]["detail"]["k"], 1);

    // A reject is dead-lettered at once, without retries.
    post(
        base,
        json!({"source": "e2e", "detail-type": "fail-reject", "detail": {"k": 2}}),
    );
    eventually("the rejected delivery", Duration::from_secs(30), || {
        let all = get(base, "/v1/dlq")["dead_letters"].as_array()?.clone();
        all.iter()
            .find(|d| d["event"]["detail"]["k"] == 2)
            .filter(|d| d["attempts"] == 1)
            .cloned()
    });

    // Fix the plugin (echo answers anything), then redrive both.
    node.add_plugin(&built("plugins/fixtures/echo-v1.wasm"), "flaky", None);
    wait_loaded(base, "flaky", Some(&v1));
    let r: Value = http()
        .post(format!("{base}/v1/dlq/redrive"))
        .json(&json!({}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(r["redriven"], 2, "{r}");
    eventually(
        "the redriven deliveries to succeed",
        Duration::from_secs(30),
        || (archive(base, json!({"source": ["echo"]})).len() == 2).then_some(()),
    );
    assert_eq!(
        get(base, "/v1/dlq")["dead_letters"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
}

#[test]
fn replay_republishes_without_archiving_twice() {
    let node = NodeDir::new(
        r#"
[metrics]
interval_secs = 0
[[rules]]
name = "echo"
pattern = '{"source": ["replay-test"]}'
[[rules.targets]]
id = "t"
plugin = "echo"
[[rules]]
name = "other"
pattern = '{"source": ["replay-test"]}'
"#,
    );
    node.add_plugin(&built("plugins/fixtures/echo-v1.wasm"), "echo", None);
    let server = node.start();
    let base = &server.base;
    wait_loaded(base, "echo", None);
    let since = busbar::event::now_rfc3339();
    std::thread::sleep(Duration::from_millis(1100));
    post(
        base,
        json!([
            {"source": "replay-test", "detail-type": "x", "detail": {"n": 1}},
            {"source": "replay-test", "detail-type": "x", "detail": {"n": 2}}
        ]),
    );
    eventually("two echoes", Duration::from_secs(30), || {
        (archive(base, json!({"source": ["echo"]})).len() == 2).then_some(())
    });
    std::thread::sleep(Duration::from_millis(1100));
    let until = busbar::event::now_rfc3339();
    let r = http()
        .post(format!("{base}/v1/replays"))
        .json(&json!({"name": "again", "since": since, "until": until, "rules": ["echo"]}))
        .send()
        .unwrap();
    assert!(r.status().is_success(), "start replay: {}", r.status());
    eventually("the replay to complete", Duration::from_secs(30), || {
        let s = get(base, "/v1/replays/again");
        (s["state"] == "completed").then_some(s)
    });
    eventually("four echoes", Duration::from_secs(30), || {
        (archive(base, json!({"source": ["echo"]})).len() == 4).then_some(())
    });
    // The replayed originals were not archived a second time.
    assert_eq!(archive(base, json!({"source": ["replay-test"]})).len(), 2);
}

#[test]
fn a_rule_matching_its_own_output_stops_at_the_hop_limit() {
    let node = NodeDir::new(
        r#"
[metrics]
interval_secs = 0
[delivery]
hop_limit = 5
[[rules]]
name = "loop"
pattern = '{"source": ["start", "echo"]}'
[[rules.targets]]
id = "t"
plugin = "echo"
"#,
    );
    node.add_plugin(&built("plugins/fixtures/echo-v1.wasm"), "echo", None);
    let server = node.start();
    let base = &server.base;
    wait_loaded(base, "echo", None);
    post(
        base,
        json!({"source": "start", "detail-type": "go", "detail": {}}),
    );
    let dl = eventually(
        "the stopped event in the dead-letter queue",
        Duration::from_secs(30),
        || {
            get(base, "/v1/dlq")["dead_letters"]
                .as_array()?
                .first()
                .cloned()
        },
    );
    assert!(
        dl["last_error"]
            .as_str()
            .unwrap()
            .contains("hop limit of 5"),
        "{dl}"
    );
    std::thread::sleep(Duration::from_millis(500));
    // Exactly hop_limit echoes were published before the chain was cut.
    assert_eq!(archive(base, json!({"source": ["echo"]})).len(), 5);
}

#[test]
fn rules_in_the_config_file_reload_when_it_changes() {
    let node = NodeDir::new("[metrics]\ninterval_secs = 0\n");
    let server = node.start();
    let base = &server.base;
    assert_eq!(get(base, "/v1/rules")["rules"].as_array().unwrap().len(), 0);
    let path = node.dir.path().join("busbar.toml");
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str("[[rules]]\nname = \"added\"\npattern = '{\"source\": [\"x\"]}'\n");
    std::fs::write(&path, &text).unwrap();
    eventually("the new rule", Duration::from_secs(10), || {
        let v = get(base, "/v1/rules");
        let rules = v["rules"].as_array()?.clone();
        rules
            .iter()
            .find(|r| r["name"] == "added" && r["origin"] == "config")
            .cloned()
    });
    // A broken file keeps the rules already loaded.
    std::fs::write(
        &path,
        format!("{text}[[rules]]\nname = \"bad\"\npattern = '{{\"source\": []}}'\n"),
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(800));
    let v = get(base, "/v1/rules");
    let names: Vec<&str> = v["rules"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["name"].as_str())
        .collect();
    assert_eq!(names, vec!["added"], "{v}");
    let log = server.log_text();
    assert!(
        log.contains("config file rejected"),
        "the log says why: {log}"
    );
}

/// On a fresh compiled-plugin cache the plugins compile after the node starts
/// serving: it answers `/healthz` and accepts events at once, `/readyz` says why
/// it is not ready until the load ends, and the early event is delivered then.
#[test]
fn a_fresh_start_accepts_events_while_its_plugins_compile() {
    let node = NodeDir::new(
        r#"
[metrics]
interval_secs = 0
[[rules]]
name = "early"
pattern = '{"source": ["early"]}'
[[rules.targets]]
id = "t"
plugin = "testkit"
"#,
    );
    node.own_cache();
    node.add_plugin(&built("plugins/fixtures/testkit.wasm"), "testkit", None);
    let mut server = node.spawn(&[]);
    let base = &server.base.clone();
    eventually("/healthz", Duration::from_secs(60), || {
        http()
            .get(format!("{base}/healthz"))
            .send()
            .ok()
            .filter(|r| r.status().is_success())
    });
    let ready = http().get(format!("{base}/readyz")).send().unwrap();
    if !ready.status().is_success() {
        assert_eq!(ready.status(), 503);
        let text = ready.text().unwrap();
        assert!(text.contains("loading the plugins"), "{text}");
    }
    post(
        base,
        json!({"source": "early", "detail-type": "echo", "detail": {"n": 1}}),
    );
    server.wait_ready();
    let echoed = eventually("the early event's echo", Duration::from_secs(30), || {
        archive(base, json!({"source": ["testkit"]}))
            .into_iter()
            .next()
    });
    assert_eq!(echoed["detail"]["n"], 1, "{echoed}");
    let log = server.log_text();
    assert!(log.contains("loading plugins in the background"), "{log}");
    assert!(log.contains("plugins loaded"), "{log}");
}

/// Removing a target while its plugin is running a call lets the call finish
/// and settle: the worker stops after it, not in the middle of it.
#[test]
fn a_call_in_progress_finishes_when_its_target_is_removed() {
    let node = NodeDir::new("[metrics]\ninterval_secs = 0\n");
    node.add_plugin(
        &built("plugins/fixtures/testkit.wasm"),
        "testkit",
        Some("[limits]\ntimeout_ms = 10000\n"),
    );
    let server = node.start();
    let base = &server.base;
    wait_loaded(base, "testkit", None);
    let put_rule = |targets: Value| {
        let r = http()
            .put(format!("{base}/v1/rules/default/slow"))
            .json(&json!({"pattern": {"source": ["slow-start"]}, "targets": targets}))
            .send()
            .unwrap();
        assert!(r.status().is_success(), "{}", r.text().unwrap());
    };
    put_rule(json!([{"id": "t", "plugin": "testkit"}]));
    post(
        base,
        json!({"source": "slow-start", "detail-type": "slow", "detail": {"ms": 1500}}),
    );
    eventually("the slow call to start", Duration::from_secs(30), || {
        let targets = get(base, "/v1/targets");
        targets["targets"]
            .as_array()?
            .iter()
            .find(|t| t["queue"] == "default/slow/t" && t["in_flight"] == 1)
            .map(|_| ())
    });
    put_rule(json!([]));
    let echoed = poll_until(Duration::from_secs(30), || {
        archive(base, json!({"source": ["testkit"]}))
            .into_iter()
            .next()
    })
    .unwrap_or_else(|| {
        panic!(
            "no echo; dead letters: {}\nlog:\n{}",
            get(base, "/v1/dlq"),
            server.log_text()
        )
    });
    assert_eq!(echoed["detail"]["ms"], 1500, "{echoed}");
    assert_eq!(get(base, "/v1/dlq")["dead_letters"], json!([]));
}
