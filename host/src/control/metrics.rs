//! The metrics loop: one `Target Metrics` event per bus every interval, the
//! autoscaler's input, published on the bus like any event (so it is archived,
//! visible in `busbar tail`, and can feed any rule).
//!
//! The detail is a typed projection ([`MetricsDetail`]) of the dispatcher's
//! [`TargetView`]s; its field names are the contract the autoscaler plugin
//! (`plugins/autoscaler`) parses.

use super::{METRICS_DETAIL_TYPE, METRICS_SOURCE};
use crate::dispatch::{Dispatcher, TargetView};
use crate::event::{EventInput, EventLimits};
use crate::publish::Publisher;
use crate::runtime::Runtime;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// The detail of one bus's `Target Metrics` event.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MetricsDetail {
    pub bus: String,
    pub targets: Vec<TargetMetrics>,
    /// The plugins serving those targets, each once.
    pub plugins: Vec<PluginInstances>,
}

/// One target in a `Target Metrics` event.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TargetMetrics {
    /// `<rule>/<target id>`: what a `ScaleTarget` decision names.
    pub target: String,
    pub plugin: String,
    pub backlog: usize,
    pub in_flight: usize,
    pub concurrency: usize,
    pub min_concurrency: usize,
    pub max_concurrency: usize,
    pub processed_per_sec: f64,
    pub error_rate: f64,
    pub p99_ms: f64,
    pub oldest_age_ms: u64,
}

impl From<&TargetView> for TargetMetrics {
    fn from(v: &TargetView) -> TargetMetrics {
        TargetMetrics {
            target: v.scaling_name(),
            plugin: v.plugin.clone(),
            backlog: v.backlog,
            in_flight: v.in_flight,
            concurrency: v.concurrency,
            min_concurrency: v.min_concurrency,
            max_concurrency: v.max_concurrency,
            // Two decimals: enough for a policy, and short in `busbar tail`.
            processed_per_sec: round2(v.stats.processed_per_sec),
            error_rate: round2(v.stats.error_rate),
            p99_ms: round2(v.stats.p99_ms),
            oldest_age_ms: v.oldest_age_ms,
        }
    }
}

/// How many instances of a plugin are alive.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PluginInstances {
    pub name: String,
    pub instances: u32,
}

/// What the metrics loop reads (the dispatcher's target views, the runtime's
/// instance counts) and where it publishes: no more of the node than that.
pub struct MetricsLoop {
    pub dispatcher: Arc<Dispatcher>,
    pub runtime: Arc<Runtime>,
    pub publisher: Arc<Publisher>,
    pub limits: EventLimits,
}

impl MetricsLoop {
    /// Publishes the metrics events every `interval_secs` (never when it is 0).
    pub fn spawn(self: &Arc<Self>, interval_secs: u64) {
        if interval_secs == 0 {
            return;
        }
        let me = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(interval_secs));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                me.publish_once().await;
            }
        });
    }

    /// Publishes the metrics events once (the loop's body; tests call it directly).
    pub async fn publish_once(&self) {
        let views = self.dispatcher.targets();
        let mut events = Vec::new();
        for (bus, detail) in snapshot(&views, |plugin| self.runtime.live_instances(plugin)) {
            let detail = match serde_json::to_value(&detail) {
                Ok(d) => d,
                Err(e) => {
                    tracing::warn!(error = %e, bus, "metrics event not published");
                    continue;
                }
            };
            let input = EventInput {
                source: Some(METRICS_SOURCE.into()),
                detail_type: Some(METRICS_DETAIL_TYPE.into()),
                detail: Some(detail),
                bus: Some(bus),
                ..Default::default()
            };
            match input.into_event(&self.limits) {
                Ok(e) => events.push(e),
                Err(e) => tracing::warn!(error = %e, "metrics event not published"),
            }
        }
        if events.is_empty() {
            return;
        }
        for r in self.publisher.publish(events, &Default::default()).await {
            if let Err(e) = r {
                tracing::warn!(error = e.message(), "metrics event not published");
            }
        }
    }
}

/// The metrics detail of every bus that has a target with workers, from the
/// targets' views and the live instance count of a plugin by name (`None`
/// for a name that is not a plugin, such as a built-in handler's).
pub fn snapshot(
    views: &[TargetView],
    instances: impl Fn(&str) -> Option<u32>,
) -> BTreeMap<String, MetricsDetail> {
    let mut per_bus: BTreeMap<String, (Vec<TargetMetrics>, BTreeMap<String, u32>)> =
        BTreeMap::new();
    // Only a target with workers can be scaled; one without is a rule change
    // the dispatcher has not caught up with yet.
    for view in views.iter().filter(|v| v.has_pool()) {
        ::metrics::gauge!("busbar_target_backlog", "target" => view.queue.clone())
            .set(view.backlog as f64);
        ::metrics::gauge!("busbar_target_in_flight", "target" => view.queue.clone())
            .set(view.in_flight as f64);
        ::metrics::gauge!("busbar_target_concurrency", "target" => view.queue.clone())
            .set(view.concurrency as f64);
        let (targets, plugins) = per_bus.entry(view.bus.clone()).or_default();
        targets.push(TargetMetrics::from(view));
        if let Some(n) = instances(&view.plugin) {
            plugins.insert(view.plugin.clone(), n);
        }
    }
    per_bus
        .into_iter()
        .map(|(bus, (targets, plugins))| {
            let plugins = plugins
                .into_iter()
                .map(|(name, instances)| PluginInstances { name, instances })
                .collect();
            let detail = MetricsDetail {
                bus: bus.clone(),
                targets,
                plugins,
            };
            (bus, detail)
        })
        .collect()
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dispatch::stats::StatsSnapshot;

    fn view(bus: &str, rule: &str, plugin: &str, concurrency: usize) -> TargetView {
        TargetView {
            queue: format!("{bus}/{rule}/t"),
            bus: bus.into(),
            rule: rule.into(),
            target: "t".into(),
            plugin: plugin.into(),
            concurrency,
            min_concurrency: 1,
            max_concurrency: 8,
            backlog: 40,
            in_flight: 2,
            oldest_age_ms: 75,
            stats: StatsSnapshot {
                processed_total: 10,
                errors_total: 0,
                processed_per_sec: 12.3456,
                error_rate: 0.0,
                p50_ms: 1.0,
                p99_ms: 0.456,
            },
            plugin_loaded: true,
            plugin_state: "loaded",
            last_scaling: None,
        }
    }

    /// The autoscaler parses these names (plugins/autoscaler/src/lib.rs):
    /// renaming one silently stops it scaling.
    #[test]
    fn detail_field_names_are_the_autoscalers_contract() {
        let views = [
            view("default", "orders", "payment-check", 2),
            view("default", "scale", crate::control::CONTROL_PLUGIN, 1),
            view("default", "new", "payment-check", 0),
            view("audit", "all", "rewards", 1),
        ];
        let details = snapshot(&views, |p| {
            (p != crate::control::CONTROL_PLUGIN).then_some(3)
        });
        assert_eq!(details.keys().collect::<Vec<_>>(), ["audit", "default"]);
        let json = serde_json::to_value(&details["default"]).unwrap();
        let payment = serde_json::json!({
            "target": "orders/t",
            "plugin": "payment-check",
            "backlog": 40,
            "in_flight": 2,
            "concurrency": 2,
            "min_concurrency": 1,
            "max_concurrency": 8,
            "processed_per_sec": 12.35,
            "error_rate": 0.0,
            "p99_ms": 0.46,
            "oldest_age_ms": 75
        });
        let mut control = payment.clone();
        control["target"] = "scale/t".into();
        control["plugin"] = crate::control::CONTROL_PLUGIN.into();
        control["concurrency"] = 1.into();
        assert_eq!(
            json,
            serde_json::json!({
                "bus": "default",
                "targets": [payment, control],
                // The target without a pool is left out; the built-in has no instances.
                "plugins": [{"name": "payment-check", "instances": 3}]
            })
        );
    }
}
