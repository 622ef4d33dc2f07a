//! Crash safety: busbar is killed with SIGKILL at random moments while events
//! pour in, restarted on the same data directory each time, and at the end
//! every event it acknowledged must have reached every matching target at
//! least once. Duplicates (at-least-once) are counted and reported.

use crate::harness::process::NodeDir;
use crate::harness::{built, http, poll_until};
use rand::Rng;
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Two rules on the same events; each target tags what it echoes, so the
/// archive shows which target handled which event.
const RULES: &str = r#"
[[rules]]
name = "a"
pattern = '{"source": ["crash-test"]}'
[[rules.targets]]
id = "t"
plugin = "testkit"
input_transformer = { input_paths_map = { n = "$.detail.n" }, input_template = '{"n": <n>, "target": "a"}' }
retry = { max_retry_attempts = 100, max_event_age_secs = 3600, base_backoff_ms = 10, max_backoff_ms = 200 }

[[rules]]
name = "b"
pattern = '{"source": ["crash-test"]}'
[[rules.targets]]
id = "t"
plugin = "testkit"
input_transformer = { input_paths_map = { n = "$.detail.n" }, input_template = '{"n": <n>, "target": "b"}' }
retry = { max_retry_attempts = 100, max_event_age_secs = 3600, base_backoff_ms = 10, max_backoff_ms = 200 }
"#;

const KILLS: usize = 5;

#[test]
fn acknowledged_events_survive_kill_9() {
    let node = NodeDir::new(RULES);
    node.add_plugin(
        &built("plugins/fixtures/testkit.wasm"),
        "testkit",
        Some("[scaling]\nconcurrency = 4\nmax_concurrency = 4\n"),
    );
    let acked: Arc<Mutex<HashSet<u64>>> = Default::default();
    let mut server = node.start();
    let mut rng = rand::rng();
    let base = node.base();

    for round in 0..KILLS {
        // Publish from a background thread while the main thread picks the moment to kill.
        let stop = Arc::new(AtomicBool::new(false));
        let publisher = {
            let stop = stop.clone();
            let acked = acked.clone();
            let base = base.clone();
            std::thread::spawn(move || publish_until(&base, &stop, &acked, round as u64))
        };
        std::thread::sleep(Duration::from_millis(rng.random_range(300..1200)));
        server.kill9();
        stop.store(true, Ordering::SeqCst);
        publisher.join().unwrap();
        server = node.start();
    }

    let expected: HashSet<u64> = acked.lock().unwrap().clone();
    assert!(
        expected.len() > 100,
        "too few events were acknowledged ({}) for the test to mean anything",
        expected.len()
    );
    wait_drained(&base);
    let echoes = archived_echoes(&base);
    let mut seen: HashMap<(&str, u64), usize> = HashMap::new();
    for (target, n) in &echoes {
        *seen.entry((target.as_str(), *n)).or_default() += 1;
    }
    let mut missing = Vec::new();
    for n in &expected {
        for t in ["a", "b"] {
            if !seen.contains_key(&(t, *n)) {
                missing.push((t, *n));
            }
        }
    }
    let duplicates: usize = seen.values().map(|c| c - 1).sum();
    println!(
        "{} acknowledged events, {} deliveries expected, {} echoed, {} duplicates after {KILLS} kill -9s",
        expected.len(),
        expected.len() * 2,
        echoes.len(),
        duplicates
    );
    assert!(
        missing.is_empty(),
        "acknowledged events never delivered: {:?}",
        &missing[..missing.len().min(20)]
    );
    drop(server);
}

/// Posts batches of events until told to stop or the server dies; records acknowledged ids.
fn publish_until(base: &str, stop: &AtomicBool, acked: &Mutex<HashSet<u64>>, round: u64) {
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let mut n = round * 1_000_000;
    while !stop.load(Ordering::SeqCst) {
        // Paced so the archive query at the end stays within one page.
        std::thread::sleep(Duration::from_millis(20));
        let batch: Vec<u64> = (n..n + 10).collect();
        n += 10;
        let body: Vec<Value> = batch
            .iter()
            .map(|i| json!({"source": "crash-test", "detail-type": "echo", "detail": {"n": i}}))
            .collect();
        let Ok(resp) = client.post(format!("{base}/events")).json(&body).send() else {
            // The server is gone: nothing in this batch was acknowledged.
            std::thread::sleep(Duration::from_millis(20));
            continue;
        };
        if !resp.status().is_success() {
            continue;
        }
        let Ok(v) = resp.json::<Value>() else {
            continue;
        };
        let entries = v["entries"].as_array().cloned().unwrap_or_default();
        let mut acked = acked.lock().unwrap();
        for (i, e) in batch.iter().zip(entries) {
            if e.get("id").is_some() {
                acked.insert(*i);
            }
        }
    }
}

fn wait_drained(base: &str) {
    let client = http();
    let mut last = Value::Null;
    poll_until(Duration::from_secs(120), || {
        let v: Value = client
            .get(format!("{base}/v1/targets"))
            .send()
            .and_then(|r| r.json())
            .unwrap_or(Value::Null);
        let targets = v["targets"].as_array().cloned().unwrap_or_default();
        let busy = targets
            .iter()
            .any(|t| t["backlog"].as_u64() != Some(0) || t["in_flight"].as_u64() != Some(0));
        let drained = !targets.is_empty() && !busy;
        last = v;
        drained.then_some(())
    })
    .unwrap_or_else(|| panic!("queues did not drain: {last}"));
}

/// (target, n) of every Echoed event in the archive.
fn archived_echoes(base: &str) -> Vec<(String, u64)> {
    let v: Value = http()
        .get(format!("{base}/v1/archive"))
        .query(&[
            ("pattern", r#"{"source": ["testkit"]}"#),
            ("limit", "10000"),
        ])
        .send()
        .unwrap()
        .json()
        .unwrap();
    v["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| {
            Some((
                e["detail"]["target"].as_str()?.to_string(),
                e["detail"]["n"].as_u64()?,
            ))
        })
        .collect()
}
