//! The autoscaler in the loop: busbar's own metrics events, routed by ordinary
//! rules to the autoscaler plugin, whose ScaleTarget answers the built-in
//! control target applies.

use crate::harness::process::{NodeDir, Server};
use crate::harness::{built, eventually, http, poll_until, repo_root};
use serde_json::{Value, json};
use std::time::Duration;

const WORK_RULE: &str = r#"
[metrics]
interval_secs = 1
[[rules]]
name = "work"
pattern = '{"source": ["load"]}'
[[rules.targets]]
id = "t"
plugin = "slow"
"#;

const SCALING_RULES: &str = r#"
[[rules]]
name = "autoscaling-metrics"
pattern = '{"source": ["busbar"], "detail-type": ["Target Metrics"]}'
[[rules.targets]]
id = "autoscaler"
plugin = "autoscaler"
retry = { max_retry_attempts = 0, max_event_age_secs = 60 }

[[rules]]
name = "autoscaling-decisions"
pattern = '{"source": ["busbar.autoscaler"], "detail-type": ["ScaleTarget"]}'
[[rules.targets]]
id = "control"
plugin = "busbar:control"
retry = { max_retry_attempts = 0, max_event_age_secs = 60 }
"#;

const SLOW_MANIFEST: &str = "[limits]\ntimeout_ms = 5000\ncpu_ms = 1000\n[scaling]\nconcurrency = 1\nmin_concurrency = 1\nmax_concurrency = 8\n";

fn target(base: &str, queue: &str) -> Value {
    let v: Value = http()
        .get(format!("{base}/v1/targets"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    v["targets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["queue"] == queue)
        .unwrap_or_else(|| panic!("no target {queue} in {v}"))
        .clone()
}

fn start(with_autoscaler: bool) -> (NodeDir, Server) {
    let rules = if with_autoscaler {
        format!("{WORK_RULE}{SCALING_RULES}")
    } else {
        WORK_RULE.to_string()
    };
    let node = NodeDir::new(&rules);
    node.add_plugin(
        &built("plugins/fixtures/testkit.wasm"),
        "slow",
        Some(SLOW_MANIFEST),
    );
    if with_autoscaler {
        let manifest = std::fs::read_to_string(repo_root().join("plugins/autoscaler.toml"))
            .unwrap()
            .replace(
                "target_backlog_per_worker = \"10\"",
                "target_backlog_per_worker = \"5\"",
            )
            .replace(
                "scale_in_cooldown_secs = \"30\"",
                "scale_in_cooldown_secs = \"2\"",
            );
        node.add_plugin(
            &built("plugins/autoscaler.wasm"),
            "autoscaler",
            Some(&manifest),
        );
    }
    let server = node.start();
    eventually("plugin slow to load", Duration::from_secs(60), || {
        (target(&server.base, "default/work/t")["plugin_loaded"] == true).then_some(())
    });
    (node, server)
}

fn burst(base: &str, n: usize) {
    let events: Vec<Value> = (0..n)
        .map(|i| json!({"source": "load", "detail-type": "slow", "detail": {"ms": 40, "i": i}}))
        .collect();
    for chunk in events.chunks(100) {
        let r: Value = http()
            .post(format!("{base}/events"))
            .json(&chunk)
            .send()
            .unwrap()
            .json()
            .unwrap();
        assert_eq!(r["failed"], 0, "{r}");
    }
}

#[test]
fn concurrency_rises_under_a_burst_and_falls_back_after_the_cooldown() {
    let (_node, server) = start(true);
    let base = &server.base;
    burst(base, 300);
    let mut peak = 1;
    let mut last = Value::Null;
    // Out: the backlog drives concurrency up, and the backlog drains.
    poll_until(Duration::from_secs(90), || {
        let t = target(base, "default/work/t");
        peak = peak.max(t["concurrency"].as_u64().unwrap());
        let drained = t["backlog"] == 0 && t["in_flight"] == 0 && peak > 1;
        last = t;
        drained.then_some(())
    })
    .unwrap_or_else(|| panic!("burst not drained with scaling: {last}"));
    assert!(peak > 1, "concurrency never rose");
    assert!(peak <= 8, "concurrency {peak} went past the manifest's max");
    // In: once idle and past the cooldown, back to the manifest minimum.
    let mut last = Value::Null;
    let t = poll_until(Duration::from_secs(60), || {
        last = target(base, "default/work/t");
        (last["concurrency"] == 1).then(|| last.clone())
    })
    .unwrap_or_else(|| panic!("did not scale back in: {last}"));
    assert!(t["last_scaling"]["reason"].is_string(), "{t}");
}

#[test]
fn without_the_autoscaler_concurrency_stays_at_the_manifest_default() {
    let (_node, server) = start(false);
    let base = &server.base;
    burst(base, 60);
    let mut last = Value::Null;
    poll_until(Duration::from_secs(60), || {
        last = target(base, "default/work/t");
        assert_eq!(last["concurrency"], 1, "{last}");
        (last["backlog"] == 0 && last["in_flight"] == 0).then_some(())
    })
    .unwrap_or_else(|| panic!("burst not drained: {last}"));
}

/// Decisions come from a plugin granted the control capability: the testkit
/// answers `echo` with the detail it was given, so it publishes whatever
/// ScaleTarget the test asks for (clients may not publish `busbar.*` sources).
const DECIDER_RULES: &str = r#"
[[rules]]
name = "decide"
pattern = '{"source": ["decide"]}'
[[rules.targets]]
id = "decider"
plugin = "decider"

[[rules]]
name = "decisions"
pattern = '{"source": ["testkit"], "detail-type": ["Echoed"]}'
[[rules.targets]]
id = "control"
plugin = "busbar:control"
retry = { max_retry_attempts = 0, max_event_age_secs = 60 }
"#;

#[test]
fn scale_decisions_are_clamped_and_unknown_targets_dead_lettered() {
    let node = NodeDir::new(
        &format!("{WORK_RULE}{DECIDER_RULES}").replace("interval_secs = 1", "interval_secs = 0"),
    );
    node.add_plugin(
        &built("plugins/fixtures/testkit.wasm"),
        "slow",
        Some(SLOW_MANIFEST),
    );
    node.add_plugin(
        &built("plugins/fixtures/testkit.wasm"),
        "decider",
        Some("[capabilities]\ncontrol = true\n"),
    );
    let server = node.start();
    let base = &server.base;
    let scale = |target: &str, n: i64| {
        json!({"source": "decide", "detail-type": "echo",
               "detail": {"target": target, "desired_concurrency": n, "reason": "test"}})
    };
    let r: Value = http()
        .post(format!("{base}/events"))
        .json(&json!([scale("work/t", 100), scale("nope/t", 3)]))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(r["failed"], 0, "{r}");
    // The decider plugin compiles first (a bound, not a timing assertion).
    let mut last = Value::Null;
    let t = poll_until(Duration::from_secs(120), || {
        last = target(base, "default/work/t");
        (last["concurrency"] == 8).then(|| last.clone())
    })
    .unwrap_or_else(|| panic!("decision not applied: {last}"));
    assert_eq!(t["last_scaling"]["requested"], 100, "{t}");
    assert_eq!(t["last_scaling"]["clamped"], true, "{t}");
    let d = eventually(
        "a dead letter for the unknown target",
        Duration::from_secs(30),
        || {
            let v: Value = http()
                .get(format!("{base}/v1/dlq"))
                .send()
                .unwrap()
                .json()
                .unwrap();
            v["dead_letters"].as_array()?.first().cloned()
        },
    );
    let reason = d["last_error"].as_str().unwrap();
    assert!(reason.contains("unknown target nope/t"), "{d}");
}
