//! Self-scaling, routed like any other event.
//!
//! Every few seconds the metrics loop publishes one `Target Metrics` event per
//! bus (source `busbar`). An ordinary rule sends it to the autoscaler plugin,
//! whose `ScaleTarget` answers another ordinary rule sends to the built-in
//! control target [`CONTROL_PLUGIN`]. That target is an ordinary dispatch
//! [`Handler`] ([`ControlHandler`], registered under that name by the node's
//! wiring): it sets the target's concurrency through a [`Scaler`] (the
//! dispatcher), clamped to the bounds of its plugin's manifest. The policy is
//! therefore a plugin: replacing `autoscaler.wasm` changes it live, and
//! removing it puts the targets it scaled back at their manifest defaults.
//!
//! Only a plugin may drive the control target, and only one whose manifest
//! grants `[capabilities] control = true`: the dispatcher stamps every event a
//! plugin publishes with the plugin's name ([`PRODUCER_EXTENSION`], which no
//! client can set), and a decision from any other producer is dead-lettered
//! with the reason. Clients cannot publish the `busbar.*` sources at all.

pub mod metrics;

use crate::dispatch::{Bounds, Dispatcher, Handler, HandlerError, ScalingDecision};
use crate::event::Event;
use crate::runtime::{Delivery, NewEvent, RegistryChange, Runtime};
use async_trait::async_trait;
use dashmap::DashMap;
use serde::Deserialize;
use std::collections::HashSet;
use std::sync::{Arc, Weak};
use tokio::sync::broadcast::error::RecvError;

/// The `plugin` of a rule target that applies `ScaleTarget` events in the host.
pub const CONTROL_PLUGIN: &str = "busbar:control";
/// Source and detail-type of the metrics events.
pub const METRICS_SOURCE: &str = "busbar";
pub const METRICS_DETAIL_TYPE: &str = "Target Metrics";
/// The extension attribute naming the plugin that published a decision.
pub use crate::dispatch::PRODUCER_EXTENSION;

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

/// What the control target needs of whoever runs the targets' workers.
pub trait Scaler: Send + Sync {
    /// Sets `queue`'s concurrency, clamped to its bounds; returns the level
    /// before and the one applied, or `None` when there is no such target.
    fn set_concurrency(&self, queue: &str, desired: usize) -> Option<(usize, usize)>;
    /// Remembers the decision behind `queue`'s current level (for its view).
    fn record_scaling(&self, queue: &str, decision: ScalingDecision);
    /// Puts `queue` back at its default level and forgets its decision;
    /// returns that level, or `None` when there is no such target.
    fn reset_concurrency(&self, queue: &str) -> Option<usize>;
}

impl Scaler for Dispatcher {
    fn set_concurrency(&self, queue: &str, desired: usize) -> Option<(usize, usize)> {
        Dispatcher::set_concurrency(self, queue, desired)
    }
    fn record_scaling(&self, queue: &str, decision: ScalingDecision) {
        Dispatcher::record_scaling(self, queue, decision)
    }
    fn reset_concurrency(&self, queue: &str) -> Option<usize> {
        Dispatcher::reset_concurrency(self, queue)
    }
}

/// The control target: applies `ScaleTarget` events and remembers which
/// plugin's decisions are in force.
pub struct ControlHandler {
    /// Weak: the dispatcher holds this handler, so a strong reference back
    /// would keep both (and the store under them) alive forever.
    scaler: Weak<dyn Scaler>,
    /// Producers' manifests are read here, as loaded at the moment of each decision.
    runtime: Arc<Runtime>,
    /// Plugins whose decisions are in force, to undo them when such a plugin goes away.
    deciders: DashMap<String, HashSet<String>>,
}

impl ControlHandler {
    pub fn new(scaler: Weak<dyn Scaler>, runtime: Arc<Runtime>) -> ControlHandler {
        ControlHandler {
            scaler,
            runtime,
            deciders: DashMap::new(),
        }
    }

    fn scaler(&self) -> Result<Arc<dyn Scaler>, String> {
        self.scaler.upgrade().ok_or_else(|| {
            "scaling decision not applied: the dispatcher is shutting down".to_string()
        })
    }

    /// Applies one `ScaleTarget` event. `Err` is a permanent refusal: the
    /// delivery is dead-lettered with that reason.
    pub fn apply(
        &self,
        event_bus: &str,
        detail: &serde_json::Value,
        producer: Option<&str>,
    ) -> Result<ScalingDecision, String> {
        authorize(&self.runtime, producer).inspect_err(|reason| {
            tracing::warn!(producer = producer.unwrap_or("-"), %reason,
                "scaling decision refused");
            ::metrics::counter!("busbar_scaling_decisions_refused_total").increment(1);
        })?;
        self.scale(event_bus, detail, producer)
    }

    /// Applies an authorised decision.
    fn scale(
        &self,
        event_bus: &str,
        detail: &serde_json::Value,
        producer: Option<&str>,
    ) -> Result<ScalingDecision, String> {
        let st = ScaleTarget::deserialize(detail).map_err(|e| {
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
        let scaler = self.scaler()?;
        let Some((from, applied)) = scaler.set_concurrency(&queue, desired) else {
            return Err(format!(
                "ScaleTarget for unknown target {} on bus {bus}",
                st.target
            ));
        };
        let clamped = applied as i64 != st.desired_concurrency;
        let decision = ScalingDecision {
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
        scaler.record_scaling(&queue, decision.clone());
        Ok(decision)
    }

    /// A plugin went away: targets it scaled return to their manifest defaults.
    pub fn forget_decider(&self, plugin: &str) {
        let Some((_, queues)) = self.deciders.remove(plugin) else {
            return;
        };
        let Ok(scaler) = self.scaler() else {
            return;
        };
        for q in queues {
            if let Some(level) = scaler.reset_concurrency(&q) {
                tracing::info!(target = %q, concurrency = level, plugin,
                    "scaling plugin unloaded; target back at its manifest default");
            }
        }
    }
}

#[async_trait]
impl Handler for ControlHandler {
    /// Built in: there is nothing to load.
    fn ready(&self) -> bool {
        true
    }

    /// One worker: decisions are applied one at a time, in the order they
    /// were delivered, so a later decision is never overtaken by an earlier one.
    fn bounds(&self) -> Option<Bounds> {
        Some(Bounds::SERIAL)
    }

    async fn handle(&self, event: Event, _: Delivery) -> Result<Vec<NewEvent>, HandlerError> {
        let producer = event
            .extensions
            .get(PRODUCER_EXTENSION)
            .and_then(|v| v.as_str());
        self.apply(&event.bus, &event.detail, producer)
            .map(|_| Vec::new())
            .map_err(HandlerError::Refused)
    }
}

/// Whether `producer`, the plugin that published a decision (none for an
/// event from a client or from busbar itself), may drive the control target:
/// its manifest, as loaded now, must grant the control capability.
fn authorize(runtime: &Runtime, producer: Option<&str>) -> Result<(), String> {
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

/// Undoes the decisions of every plugin that is unloaded from now on (the
/// metrics loop is started apart, see [`metrics::MetricsLoop::spawn`]).
pub fn start(control: &Arc<ControlHandler>, runtime: &Runtime) {
    let control = control.clone();
    let mut changes = runtime.subscribe();
    tokio::spawn(async move {
        loop {
            match changes.recv().await {
                Ok(RegistryChange::Unloaded { name }) => control.forget_decider(&name),
                Ok(_) | Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => break,
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use parking_lot::Mutex;
    use std::collections::HashMap;

    /// One target as the fake scaler keeps it.
    struct Level {
        now: usize,
        min: usize,
        max: usize,
        default: usize,
        last: Option<ScalingDecision>,
    }

    /// A [`Scaler`] over a map of targets by queue.
    #[derive(Default)]
    struct Levels(Mutex<HashMap<String, Level>>);

    impl Scaler for Levels {
        fn set_concurrency(&self, queue: &str, desired: usize) -> Option<(usize, usize)> {
            let mut all = self.0.lock();
            let t = all.get_mut(queue)?;
            let before = t.now;
            t.now = desired.clamp(t.min, t.max);
            Some((before, t.now))
        }
        fn record_scaling(&self, queue: &str, decision: ScalingDecision) {
            if let Some(t) = self.0.lock().get_mut(queue) {
                t.last = Some(decision);
            }
        }
        fn reset_concurrency(&self, queue: &str) -> Option<usize> {
            let mut all = self.0.lock();
            let t = all.get_mut(queue)?;
            t.now = t.default;
            t.last = None;
            Some(t.default)
        }
    }

    fn control(dir: &tempfile::TempDir) -> (Arc<Levels>, ControlHandler) {
        let levels = Arc::new(Levels::default());
        levels.0.lock().insert(
            "default/orders/pay".into(),
            Level {
                now: 2,
                min: 1,
                max: 8,
                default: 2,
                last: None,
            },
        );
        let runtime = crate::dispatch::handler::tests::empty_runtime(dir);
        let scaler: Weak<dyn Scaler> = Arc::<Levels>::downgrade(&levels);
        (levels, ControlHandler::new(scaler, runtime))
    }

    fn level(levels: &Levels) -> usize {
        levels.0.lock()["default/orders/pay"].now
    }

    #[test]
    fn a_decision_is_clamped_recorded_and_undone_with_its_plugin() {
        let dir = tempfile::tempdir().unwrap();
        let (levels, control) = control(&dir);
        let detail = serde_json::json!({
            "target": "orders/pay", "desired_concurrency": 50, "reason": "backlog 500"
        });
        let d = control
            .scale("default", &detail, Some("autoscaler"))
            .unwrap();
        assert_eq!(
            (d.from, d.requested, d.applied, d.clamped),
            (2, 50, 8, true)
        );
        assert_eq!(d.by.as_deref(), Some("autoscaler"));
        assert_eq!(level(&levels), 8);
        assert_eq!(levels.0.lock()["default/orders/pay"].last, Some(d));

        // Another plugin's unloading leaves it; its own puts the default back.
        control.forget_decider("rewards");
        assert_eq!(level(&levels), 8);
        control.forget_decider("autoscaler");
        assert_eq!(level(&levels), 2);
        assert_eq!(levels.0.lock()["default/orders/pay"].last, None);
    }

    #[test]
    fn a_bad_decision_is_refused_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let (levels, control) = control(&dir);
        let refuse = |detail: serde_json::Value| {
            control
                .scale("default", &detail, Some("autoscaler"))
                .unwrap_err()
        };
        let e = refuse(serde_json::json!({"target": "orders/nope", "desired_concurrency": 3}));
        assert!(
            e.contains("unknown target orders/nope on bus default"),
            "{e}"
        );
        let e = refuse(serde_json::json!({"target": "orders", "desired_concurrency": 3}));
        assert!(e.contains("must be \"<rule>/<target id>\""), "{e}");
        let e = refuse(serde_json::json!({"target": "orders/pay"}));
        assert!(e.contains("desired_concurrency"), "{e}");
        // The decision's own bus wins over the event's.
        let e = refuse(serde_json::json!({
            "bus": "audit", "target": "orders/pay", "desired_concurrency": 3
        }));
        assert!(e.contains("on bus audit"), "{e}");
        assert_eq!(level(&levels), 2);
    }

    #[tokio::test]
    async fn only_a_granted_plugin_may_decide() {
        let dir = tempfile::tempdir().unwrap();
        let (levels, control) = control(&dir);
        let mut event = crate::event::EventInput {
            source: Some("testkit".into()),
            detail_type: Some("ScaleTarget".into()),
            detail: Some(serde_json::json!({"target": "orders/pay", "desired_concurrency": 5})),
            ..Default::default()
        }
        .into_event(&Default::default())
        .unwrap();
        let delivery = Delivery {
            rule: "decisions".into(),
            target: "control".into(),
            attempt: 1,
            id: "d".into(),
        };
        let refused = control.handle(event.clone(), delivery.clone()).await;
        assert!(
            matches!(&refused, Err(HandlerError::Refused(r)) if r.contains("not published by a plugin")),
            "{refused:?}"
        );
        event
            .extensions
            .insert(PRODUCER_EXTENSION.into(), "gone".into());
        let refused = control.handle(event, delivery).await;
        assert!(
            matches!(&refused, Err(HandlerError::Refused(r)) if r.contains("plugin gone, which published it, is not loaded now")),
            "{refused:?}"
        );
        assert_eq!(level(&levels), 2);
    }
}
