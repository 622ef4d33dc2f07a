//! The metrics loop: one `Target Metrics` event per bus every interval, the
//! autoscaler's input, published on the bus like any event (so it is archived,
//! visible in `busbar tail`, and can feed any rule).

use super::{METRICS_DETAIL_TYPE, METRICS_SOURCE};
use crate::event::EventInput;
use crate::node::Node;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

pub fn spawn(node: Arc<Node>) {
    let secs = node.config.metrics.interval_secs;
    if secs == 0 {
        return;
    }
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(secs));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            publish_once(&node).await;
        }
    });
}

/// Builds the metrics detail of every bus that has targets.
pub fn snapshot(node: &Node) -> BTreeMap<String, Value> {
    let queues: BTreeMap<String, crate::bus::QueueStats> = node
        .bus
        .queue_stats()
        .into_iter()
        .map(|q| (q.queue.clone(), q))
        .collect();
    let instances: BTreeMap<String, Value> = node
        .runtime
        .status()
        .into_iter()
        .filter_map(|s| {
            let v = serde_json::to_value(&s).ok()?;
            let name = v.get("name")?.as_str()?.to_string();
            let live = v
                .get("instances")
                .or_else(|| v.get("live_instances"))
                .cloned()
                .unwrap_or(json!(0));
            Some((name, live))
        })
        .collect();
    let mut per_bus: BTreeMap<String, (Vec<Value>, BTreeMap<String, Value>)> = BTreeMap::new();
    let snapshot = node.rules.snapshot();
    for (info, stats) in node.dispatcher.pools() {
        let Some((rule, target)) = snapshot.targets.get(&info.queue) else {
            continue;
        };
        let q = queues.get(&info.queue).cloned().unwrap_or_default();
        let s = stats.snapshot();
        let entry = per_bus.entry(rule.bus.clone()).or_default();
        entry.0.push(json!({
            "target": format!("{}/{}", rule.name, target.id),
            "plugin": info.plugin,
            "backlog": q.backlog,
            "in_flight": q.in_flight,
            "concurrency": info.concurrency,
            "min_concurrency": info.min_concurrency,
            "max_concurrency": info.max_concurrency,
            "processed_per_sec": round2(s.processed_per_sec),
            "error_rate": round2(s.error_rate),
            "p99_ms": round2(s.p99_ms),
            "oldest_age_ms": q.oldest_age_ms,
        }));
        ::metrics::gauge!("busbar_target_backlog", "target" => info.queue.clone())
            .set(q.backlog as f64);
        ::metrics::gauge!("busbar_target_in_flight", "target" => info.queue.clone())
            .set(q.in_flight as f64);
        ::metrics::gauge!("busbar_target_concurrency", "target" => info.queue.clone())
            .set(info.concurrency as f64);
        if let Some(n) = instances.get(&info.plugin) {
            entry.1.insert(info.plugin.clone(), n.clone());
        }
    }
    per_bus
        .into_iter()
        .map(|(bus, (targets, plugins))| {
            let plugins: Vec<Value> = plugins
                .into_iter()
                .map(|(name, n)| json!({"name": name, "instances": n}))
                .collect();
            let detail = json!({"bus": bus, "targets": targets, "plugins": plugins});
            (bus, detail)
        })
        .collect()
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// Publishes the metrics events once (the loop's body; tests call it directly).
pub async fn publish_once(node: &Node) {
    let mut events = Vec::new();
    for (bus, detail) in snapshot(node) {
        let input = EventInput {
            source: Some(METRICS_SOURCE.into()),
            detail_type: Some(METRICS_DETAIL_TYPE.into()),
            detail: Some(detail),
            bus: Some(bus),
            ..Default::default()
        };
        match input.into_event(&node.event_limits) {
            Ok(e) => events.push(e),
            Err(e) => tracing::warn!(error = %e, "metrics event not published"),
        }
    }
    for r in node.publish(events).await {
        if let Err(e) = r {
            tracing::warn!(error = e.message(), "metrics event not published");
        }
    }
}
