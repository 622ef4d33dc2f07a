//! The per-target view: one typed record per (rule, target) with its queue,
//! worker pool, delivery statistics and last scaling decision, built in one
//! place ([`Dispatcher::targets`]). `GET /v1/targets` serves it as is; the
//! `Target Metrics` events (the autoscaler's input) are a projection of it.

use super::Dispatcher;
use super::stats::StatsSnapshot;
use serde::Serialize;
use std::collections::HashMap;

/// The last scaling decision applied to a target, kept while it is in force.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScalingDecision {
    /// RFC 3339 time it was applied.
    pub at: String,
    /// The concurrency before.
    pub from: usize,
    pub requested: i64,
    pub applied: usize,
    /// Whether `applied` differs from `requested` (the target's bounds won).
    pub clamped: bool,
    pub reason: String,
    /// The plugin that published the decision.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
}

/// One target as `GET /v1/targets` shows it. The field names are an API:
/// the CLI and clients read them.
#[derive(Debug, Clone, Serialize)]
pub struct TargetView {
    /// `<bus>/<rule>/<target id>`.
    pub queue: String,
    pub bus: String,
    pub rule: String,
    /// The target's id within its rule.
    pub target: String,
    /// The handler's name: a plugin, or a built-in such as `busbar:control`.
    pub plugin: String,
    /// Workers delivering at once now; 0 until the target's pool is made.
    pub concurrency: usize,
    pub min_concurrency: usize,
    pub max_concurrency: usize,
    /// Deliveries waiting (due now or later).
    pub backlog: usize,
    /// Deliveries taken and not yet settled.
    pub in_flight: usize,
    /// Age of the oldest waiting delivery (0 when none waits).
    pub oldest_age_ms: u64,
    /// Throughput, errors and latency of the target's recent deliveries.
    #[serde(flatten)]
    pub stats: StatsSnapshot,
    /// Whether the handler can take deliveries (its plugin is loaded).
    pub plugin_loaded: bool,
    /// `loaded`, `not_loaded` (its `.wasm` is there but no version serves:
    /// loading, or failed) or `plugin_missing` (no `NAME.wasm` in the plugins
    /// directory: a typo in the rule, or a file named after something else).
    pub plugin_state: &'static str,
    pub last_scaling: Option<ScalingDecision>,
}

impl TargetView {
    /// `<rule>/<target id>`, the name scaling decisions use for a target.
    pub fn scaling_name(&self) -> String {
        format!("{}/{}", self.rule, self.target)
    }

    /// Whether the target has a worker pool (there is a moment between a rule
    /// change and the dispatcher's reconcile when it has none yet): only such a
    /// target can be scaled. A pool always runs at least one worker.
    pub fn has_pool(&self) -> bool {
        self.concurrency > 0
    }
}

impl Dispatcher {
    /// Every configured target, in queue order.
    pub fn targets(&self) -> Vec<TargetView> {
        let snapshot = self.rules.snapshot();
        let mut queues: HashMap<String, crate::bus::QueueStats> = self
            .bus
            .queue_stats()
            .into_iter()
            .map(|q| (q.queue.clone(), q))
            .collect();
        let pools = self.pools.lock();
        snapshot
            .targets
            .iter()
            .map(|(queue, (rule, target))| {
                let pool = pools.get(queue);
                let handler = self.handlers.resolve(&target.plugin);
                let plugin_state = if handler.ready() {
                    "loaded"
                } else if handler.missing() {
                    "plugin_missing"
                } else {
                    "not_loaded"
                };
                let q = queues.remove(queue).unwrap_or_default();
                TargetView {
                    queue: queue.clone(),
                    bus: rule.bus.clone(),
                    rule: rule.name.clone(),
                    target: target.id.clone(),
                    plugin: target.plugin.clone(),
                    concurrency: pool.map_or(0, |p| *p.concurrency.borrow()),
                    min_concurrency: pool.map_or(0, |p| p.bounds.0),
                    max_concurrency: pool.map_or(0, |p| p.bounds.1),
                    backlog: q.backlog,
                    in_flight: q.in_flight,
                    oldest_age_ms: q.oldest_age_ms,
                    stats: pool.map(|p| p.stats.snapshot()).unwrap_or_default(),
                    plugin_loaded: plugin_state == "loaded",
                    plugin_state,
                    last_scaling: pool.and_then(|p| p.last_scaling.clone()),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The names clients, the CLI and the autoscaler read: renaming a field of
    /// [`TargetView`] or [`ScalingDecision`] breaks them.
    #[test]
    fn field_names_are_stable() {
        let view = TargetView {
            queue: "default/orders/pay".into(),
            bus: "default".into(),
            rule: "orders".into(),
            target: "pay".into(),
            plugin: "payment-check".into(),
            concurrency: 2,
            min_concurrency: 1,
            max_concurrency: 8,
            backlog: 30,
            in_flight: 2,
            oldest_age_ms: 120,
            stats: StatsSnapshot {
                processed_total: 100,
                errors_total: 1,
                processed_per_sec: 9.5,
                error_rate: 0.01,
                p50_ms: 0.4,
                p99_ms: 3.0,
            },
            plugin_loaded: true,
            plugin_state: "loaded",
            last_scaling: Some(ScalingDecision {
                at: "2025-01-01T00:00:00Z".into(),
                from: 1,
                requested: 2,
                applied: 2,
                clamped: false,
                reason: "backlog 30".into(),
                by: Some("autoscaler".into()),
            }),
        };
        let json = serde_json::to_value(&view).unwrap();
        let expected = serde_json::json!({
            "queue": "default/orders/pay",
            "bus": "default",
            "rule": "orders",
            "target": "pay",
            "plugin": "payment-check",
            "concurrency": 2,
            "min_concurrency": 1,
            "max_concurrency": 8,
            "backlog": 30,
            "in_flight": 2,
            "oldest_age_ms": 120,
            "processed_total": 100,
            "errors_total": 1,
            "processed_per_sec": 9.5,
            "error_rate": 0.01,
            "p50_ms": 0.4,
            "p99_ms": 3.0,
            "plugin_loaded": true,
            "plugin_state": "loaded",
            "last_scaling": {
                "at": "2025-01-01T00:00:00Z",
                "from": 1,
                "requested": 2,
                "applied": 2,
                "clamped": false,
                "reason": "backlog 30",
                "by": "autoscaler"
            }
        });
        assert_eq!(json, expected);
        assert_eq!(view.scaling_name(), "orders/pay");

        // No decision in force: `last_scaling` is null, not missing.
        let plain = TargetView {
            last_scaling: None,
            ..view
        };
        assert_eq!(
            serde_json::to_value(&plain).unwrap()["last_scaling"],
            serde_json::Value::Null
        );
    }
}
