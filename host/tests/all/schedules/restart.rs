//! kill -9 between ticks and across a tick: `busbar serve` as a child process,
//! one-time schedules a few seconds apart (the Scheduler API's `at()` is the one
//! expression with second granularity, so this test runs in real time), and in
//! the end each tick fired exactly once: none skipped while the node was down,
//! none repeated after a restart.

use crate::harness::process::NodeDir;
use crate::harness::{eventually, http};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

fn archived_ticks(base: &str) -> Vec<Value> {
    let v: Value = http()
        .get(format!("{base}/v1/archive?limit=1000"))
        .send()
        .and_then(|r| r.json())
        .unwrap_or(Value::Null);
    v["events"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|e| e["source"] == "restart-test")
        .collect()
}

#[test]
fn kill_9_neither_skips_nor_repeats_a_tick() {
    let node = NodeDir::new("");
    let mut server = node.start();
    server.wait_ready();
    let base = node.base();
    let start = Instant::now();
    let first = busbar::bus::now_ms() / 1000 + 4;
    // Four ticks, three seconds apart.
    for i in 0..4i64 {
        let at = chrono::DateTime::from_timestamp(first + 3 * i, 0).unwrap();
        let body = json!({
            "ScheduleExpression": at.format("at(%Y-%m-%dT%H:%M:%S)").to_string(),
            "FlexibleTimeWindow": {"Mode": "OFF"},
            "Target": {"Arn": "arn:aws:events:local:000000000000:event-bus/default",
                       "RoleArn": "arn:aws:iam::000000000000:role/x",
                       "Input": format!("{{\"tick\": {i}}}"),
                       "EventBridgeParameters": {"Source": "restart-test", "DetailType": "Tick"}}
        });
        let r = http()
            .post(format!("{base}/schedules/tick-{i}"))
            .json(&body)
            .send()
            .unwrap();
        assert_eq!(r.status(), 200, "{}", r.text().unwrap());
    }
    let at = |secs: f64| {
        let wait = Duration::from_secs_f64(secs).saturating_sub(start.elapsed());
        std::thread::sleep(wait);
    };
    // Between ticks: after tick 0 (≈4 s), before tick 1 (≈7 s).
    eventually("tick 0", Duration::from_secs(20), || {
        (!archived_ticks(&base).is_empty()).then_some(())
    });
    at(5.5);
    server.kill9();
    let mut server = node.start();
    server.wait_ready();
    // Across a tick: down from before tick 2 (≈10 s) until after it.
    eventually("tick 1", Duration::from_secs(20), || {
        (archived_ticks(&base).len() >= 2).then_some(())
    });
    at(9.0);
    server.kill9();
    at(11.5);
    let mut server = node.start();
    server.wait_ready();
    eventually("every tick", Duration::from_secs(30), || {
        (archived_ticks(&base).len() >= 4).then_some(())
    });
    std::thread::sleep(Duration::from_secs(2));
    let mut seen: Vec<i64> = archived_ticks(&base)
        .iter()
        .map(|e| e["detail"]["tick"].as_i64().unwrap())
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        [0, 1, 2, 3],
        "each tick once; log:\n{}",
        server.log_text()
    );
}
