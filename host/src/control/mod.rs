//! Self-scaling, routed like any other event.
//!
//! Every few seconds the metrics loop publishes one `Target Metrics` event per
//! bus (source `busbar`). An ordinary rule sends it to the autoscaler plugin,
//! whose `ScaleTarget` answers another ordinary rule sends to the built-in
//! control target [`CONTROL_PLUGIN`]. That target sets the target's
//! concurrency, clamped to the bounds of its plugin's manifest. The policy is
//! therefore a plugin: replacing `autoscaler.wasm` changes it live, and
//! removing it puts the targets it scaled back at their manifest defaults.
//!
//! Only a plugin may drive the control target, and only one whose manifest
//! grants `[capabilities] control = true`: the dispatcher stamps every event a
//! plugin publishes with the plugin's name ([`PRODUCER_EXTENSION`], which no
//! client can set), and a decision from any other producer is dead-lettered
//! with the reason. Clients cannot publish the `busbar.*` sources at all.

pub mod metrics;

use crate::dispatch::Dispatcher;
use dashmap::DashMap;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::sync::Arc;

/// The `plugin` of a rule target that applies `ScaleTarget` events in the host.
pub const CONTROL_PLUGIN: &str = "busbar:control";
/// Source and detail-type of the metrics events.
pub const METRICS_SOURCE: &str = "busbar";
pub const METRICS_DETAIL_TYPE: &str = "Target Metrics";
/// The extension attribute naming the plugin whose handler produced an event.
pub const PRODUCER_EXTENSION: &str = "busbarproducer";

/// The detail of a `ScaleTarget` event.
#[derive(Debug, Clone, Deserialize)]
pub struct ScaleTarget {
    #[serde(default)]
    pub bus: Option<String>,
    /// `<rule>/<target id>`.
    pub target: String,
    pub desired_concurrency: i64,
    #[serde(default)]
    pub reason: Option<String>,
}

/// The last scaling decision applied to a target.
#[derive(Debug, Clone, Serialize)]
pub struct Decision {
    pub at: String,
    pub from: usize,
    pub requested: i64,
    pub applied: usize,
    pub clamped: bool,
    pub reason: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
}

/// Applies scaling decisions and remembers them.
#[derive(Default)]
pub struct Control {
    decisions: DashMap<String, Decision>,
    /// Plugins whose decisions are in force, to undo them when such a plugin goes away.
    deciders: DashMap<String, HashSet<String>>,
}

impl Control {
    pub fn decision(&self, queue: &str) -> Option<Decision> {
        self.decisions.get(queue).map(|d| d.clone())
    }

    /// Applies one `ScaleTarget` event. `Err` is a permanent refusal: the
    /// delivery is dead-lettered with that reason.
    pub fn apply(
        &self,
        dispatcher: &Dispatcher,
        event_bus: &str,
        detail: &serde_json::Value,
        producer: Option<&str>,
    ) -> Result<Decision, String> {
        authorize(dispatcher.runtime(), producer).inspect_err(|reason| {
            tracing::warn!(producer = producer.unwrap_or("-"), %reason,
                "scaling decision refused");
            ::metrics::counter!("busbar_scaling_decisions_refused_total").increment(1);
        })?;
        let st: ScaleTarget = serde_json::from_value(detail.clone()).map_err(|e| {
            format!("ScaleTarget detail must be {{target, desired_concurrency, reason}}: {e}")
        })?;
        let bus = st.bus.as_deref().unwrap_or(event_bus);
        let Some((rule, target)) = st.target.split_once('/') else {
            return Err(format!(
                "ScaleTarget target {:?} must be \"<rule>/<target id>\"",
                st.target
            ));
        };
        let queue = crate::rules::queue_key(bus, rule, target);
        let desired = st.desired_concurrency.max(0) as usize;
        let Some((from, applied)) = dispatcher.set_concurrency(&queue, desired) else {
            return Err(format!(
                "ScaleTarget for unknown target {} on bus {bus}",
                st.target
            ));
        };
        let clamped = applied as i64 != st.desired_concurrency;
        let decision = Decision {
            at: crate::event::now_rfc3339(),
            from,
            requested: st.desired_concurrency,
            applied,
            clamped,
            reason: st.reason.unwrap_or_default(),
            by: producer.map(str::to_string),
        };
        tracing::info!(target = %queue, from, to = applied, requested = st.desired_concurrency,
            clamped, reason = %decision.reason, "scaling decision applied");
        ::metrics::counter!("busbar_scaling_decisions_total", "clamped" => clamped.to_string())
            .increment(1);
        ::metrics::gauge!("busbar_target_concurrency", "target" => queue.clone())
            .set(applied as f64);
        if let Some(p) = producer {
            self.deciders
                .entry(p.to_string())
                .or_default()
                .insert(queue.clone());
        }
        self.decisions.insert(queue, decision.clone());
        Ok(decision)
    }

    /// A plugin went away: targets it scaled return to their manifest defaults.
    pub fn forget_decider(&self, dispatcher: &Dispatcher, plugin: &str) {
        let Some((_, queues)) = self.deciders.remove(plugin) else {
            return;
        };
        for q in queues {
            if let Some(level) = dispatcher.reset_concurrency(&q) {
                tracing::info!(target = %q, concurrency = level, plugin,
                    "scaling plugin unloaded; target back at its manifest default");
                self.decisions.remove(&q);
            }
        }
    }
}

/// Whether `producer`, the plugin that published a decision (none for an
/// event from a client or from busbar itself), may drive the control target:
/// its manifest, as loaded now, must grant the control capability.
fn authorize(runtime: &crate::runtime::Runtime, producer: Option<&str>) -> Result<(), String> {
    let grant =
        "only a plugin whose manifest grants [capabilities] control = true may scale targets";
    let Some(plugin) = producer else {
        return Err(format!(
            "scaling decision refused: it was not published by a plugin; {grant}"
        ));
    };
    match runtime.manifest(plugin) {
        Some(m) if m.capabilities.control => Ok(()),
        Some(_) => Err(format!(
            "scaling decision refused: plugin {plugin} does not have the control capability; \
             add [capabilities] control = true to {plugin}.toml if it should scale targets"
        )),
        None => Err(format!(
            "scaling decision refused: plugin {plugin}, which published it, is not loaded now; {grant}"
        )),
    }
}

/// Starts the metrics loop and the watcher that undoes decisions of unloaded plugins.
pub fn start(node: &Arc<crate::node::Node>) {
    metrics::spawn(node.clone());
    let node = node.clone();
    let mut changes = node.runtime.subscribe();
    tokio::spawn(async move {
        loop {
            match changes.recv().await {
                Ok(crate::runtime::RegistryChange::Unloaded { name }) => {
                    node.control.forget_decider(&node.dispatcher, &name)
                }
                Ok(_) => {}
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
            }
        }
    });
}
