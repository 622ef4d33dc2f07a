//! Delivery: per-target workers that take deliveries from the bus, hand them
//! to the target's handler, and settle the outcome (ack with the handler's new
//! events, retry with backoff, or dead-letter).
//!
//! A target's `plugin` names its handler ([`handler`]): a plugin in the
//! runtime, or a built-in registered by name at wiring. Each (rule, target)
//! queue has its own pool of workers. Its concurrency (how many of them work
//! at once, hence how many plugin instances serve that target at once) starts
//! at the handler's default (a plugin manifest's `scaling.concurrency`) and
//! can be changed at run time, within the handler's bounds, by whoever holds
//! the dispatcher (the control target).

pub mod handler;
mod orphans;
pub mod retry;
pub mod stats;
mod view;

use crate::bus::{Bus, Delivery, RoutedEvent, Settle};
use crate::event::{Event, EventInput, EventLimits};
use crate::rules::transform::{TransformContext, render_target_input};
use crate::rules::{RuleSet, Target};
use crate::runtime::{self, CallError, Runtime};
use parking_lot::Mutex;
use serde::Serialize;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;
use tracing::Instrument;

pub use handler::{Bounds, Handler, HandlerError, Handlers};
pub use stats::TargetStats;
pub use view::{ScalingDecision, TargetView};

/// Settings of the dispatcher.
#[derive(Debug, Clone)]
pub struct DispatchConfig {
    /// Events a plugin emits carry a hop count; past this, they are dead-lettered
    /// instead of published, so a rule matching its own output cannot loop forever.
    pub hop_limit: u32,
    /// Hard ceiling on workers per target, whatever a manifest asks for.
    pub max_workers_per_target: usize,
    pub event_limits: EventLimits,
    /// Event ages and retry due times are read on this clock (a test may advance it).
    pub clock: Arc<crate::clock::Clock>,
    /// Periodic events that a fresher one replaces (busbar's metrics): a
    /// delivery of one older than its bound is dropped (counted), not
    /// delivered stale or dead-lettered. `None`: no event goes stale.
    pub superseded: Option<Superseded>,
}

/// A kind of event, by source and detail-type, that goes stale after `after`.
#[derive(Debug, Clone)]
pub struct Superseded {
    pub source: &'static str,
    pub detail_type: &'static str,
    pub after: std::time::Duration,
}

/// The extension attribute naming the plugin whose handler produced an event
/// (stamped on every event a handler returns; no client can set it).
pub const PRODUCER_EXTENSION: &str = "busbarproducer";

impl Default for DispatchConfig {
    fn default() -> Self {
        DispatchConfig {
            hop_limit: 16,
            max_workers_per_target: 256,
            event_limits: EventLimits::default(),
            clock: Default::default(),
            superseded: None,
        }
    }
}

/// How one delivery attempt ended, for `busbar tail` and metrics.
#[derive(Debug, Clone, Serialize)]
pub struct DeliveryOutcome {
    pub event_id: String,
    pub rule: String,
    pub target: String,
    pub plugin: String,
    pub attempt: u32,
    /// "ok", "retry", "dead-letter" or "dropped".
    pub outcome: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub latency_ms: f64,
    pub emitted: usize,
}

struct Pool {
    concurrency: watch::Sender<usize>,
    /// The manifest's starting level, restored when a scaling plugin goes away.
    default: usize,
    bounds: (usize, usize),
    stats: Arc<TargetStats>,
    workers: Vec<JoinHandle<()>>,
    plugin: String,
    /// The scaling decision that set the current level, while it is in force.
    last_scaling: Option<ScalingDecision>,
}

/// Owns the worker pools of every target.
pub struct Dispatcher {
    bus: Arc<dyn Bus>,
    runtime: Arc<Runtime>,
    rules: Arc<RuleSet>,
    config: DispatchConfig,
    pools: Mutex<HashMap<String, Pool>>,
    outcomes: broadcast::Sender<DeliveryOutcome>,
    handlers: Handlers,
    /// Bounds the settles committing in the background (see `finish`).
    settling: Arc<tokio::sync::Semaphore>,
    /// Queues of removed rules or targets being emptied (see `orphans`).
    draining: Mutex<std::collections::HashSet<String>>,
}

/// Settles that may be committing at once, over all targets.
const MAX_SETTLING: usize = 4096;

impl Dispatcher {
    pub fn new(
        bus: Arc<dyn Bus>,
        runtime: Arc<Runtime>,
        rules: Arc<RuleSet>,
        config: DispatchConfig,
    ) -> Arc<Self> {
        Arc::new(Dispatcher {
            bus,
            handlers: Handlers::new(runtime.clone()),
            runtime,
            rules,
            config,
            pools: Mutex::new(HashMap::new()),
            outcomes: broadcast::channel(4096).0,
            settling: Arc::new(tokio::sync::Semaphore::new(MAX_SETTLING)),
            draining: Default::default(),
        })
    }

    /// Live delivery outcomes (for tail and tests).
    pub fn subscribe(&self) -> broadcast::Receiver<DeliveryOutcome> {
        self.outcomes.subscribe()
    }

    /// Makes targets whose `plugin` is `name` deliver to `handler` instead of
    /// a plugin. Register before [`Dispatcher::start`].
    pub fn register_handler(&self, name: &str, handler: Arc<dyn Handler>) {
        self.handlers.register(name, handler);
    }

    /// Starts pools for the current targets and keeps them in step with rule
    /// changes and plugin (re)loads until the process ends.
    pub fn start(self: &Arc<Self>) {
        self.reconcile();
        let me = self.clone();
        let mut rules = self.rules.subscribe();
        let mut plugins = self.runtime.subscribe();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    r = rules.changed() => if r.is_err() { break },
                    p = plugins.recv() => if let Err(broadcast::error::RecvError::Closed) = p { break },
                }
                me.reconcile();
            }
        });
    }

    /// Makes the set of pools equal to the set of configured targets.
    pub fn reconcile(self: &Arc<Self>) {
        let snapshot = self.rules.snapshot();
        let mut pools = self.pools.lock();
        // Dropping a pool closes its concurrency channel: each worker finishes the
        // delivery in hand, settles it and stops (none is cut off mid-call).
        pools.retain(|queue, pool| {
            snapshot
                .targets
                .get(queue)
                .is_some_and(|(_, t)| t.plugin == pool.plugin)
        });
        self.drain_orphans(&snapshot.targets);
        for (queue, (_, target)) in &snapshot.targets {
            let Bounds { default, min, max } = self.bounds_for(&target.plugin);
            match pools.get_mut(queue) {
                Some(pool) => {
                    // A manifest change moves the bounds; keep the current level inside them.
                    if pool.bounds != (min, max) || pool.default != default {
                        let old_default = pool.default;
                        pool.bounds = (min, max);
                        pool.default = default.clamp(min, max);
                        let cur = *pool.concurrency.borrow();
                        // A level nobody changed follows the new default: a pool made before
                        // its plugin loaded starts at a placeholder, and the manifest's
                        // `scaling.concurrency` must replace it. A level set by scaling stays,
                        // kept inside the new bounds.
                        let level = if cur == old_default {
                            pool.default
                        } else {
                            cur.clamp(min, max)
                        };
                        pool.concurrency.send_replace(level);
                        self.grow(queue, pool, max);
                    }
                }
                None => {
                    let mut pool = Pool {
                        concurrency: watch::channel(default.clamp(min, max)).0,
                        default: default.clamp(min, max),
                        bounds: (min, max),
                        stats: Arc::new(TargetStats::default()),
                        workers: Vec::new(),
                        plugin: target.plugin.clone(),
                        last_scaling: None,
                    };
                    self.grow(queue, &mut pool, max);
                    pools.insert(queue.clone(), pool);
                }
            }
        }
    }

    fn bounds_for(&self, plugin: &str) -> Bounds {
        let cap = self.config.max_workers_per_target;
        match self.handlers.resolve(plugin).bounds() {
            Some(asked) => asked.capped(cap),
            None => Bounds::unknown(cap),
        }
    }

    /// Spawns workers up to `max`; each works only while its index is below the
    /// pool's concurrency, so scaling is a number change, not a respawn.
    fn grow(self: &Arc<Self>, queue: &str, pool: &mut Pool, max: usize) {
        while pool.workers.len() < max {
            let index = pool.workers.len();
            let me = self.clone();
            let queue = queue.to_string();
            let level = pool.concurrency.subscribe();
            let stats = pool.stats.clone();
            pool.workers.push(tokio::spawn(async move {
                me.work(queue, index, level, stats).await;
            }));
        }
    }

    /// Sets a target's concurrency, clamped to its bounds; returns the applied value.
    pub fn set_concurrency(&self, queue: &str, desired: usize) -> Option<(usize, usize)> {
        let pools = self.pools.lock();
        let pool = pools.get(queue)?;
        let (min, max) = pool.bounds;
        let applied = desired.clamp(min, max);
        let before = pool.concurrency.send_replace(applied);
        Some((before, applied))
    }

    /// Remembers the decision behind a target's current level, shown in its
    /// [`TargetView`] until the target is reset or removed.
    pub fn record_scaling(&self, queue: &str, decision: ScalingDecision) {
        if let Some(pool) = self.pools.lock().get_mut(queue) {
            pool.last_scaling = Some(decision);
        }
    }

    /// Puts a target back at its default (its manifest's) and forgets the
    /// decision that moved it; returns that level.
    pub fn reset_concurrency(&self, queue: &str) -> Option<usize> {
        let mut pools = self.pools.lock();
        let pool = pools.get_mut(queue)?;
        pool.concurrency.send_replace(pool.default);
        pool.last_scaling = None;
        Some(pool.default)
    }

    async fn work(
        self: Arc<Self>,
        queue: String,
        index: usize,
        mut level: watch::Receiver<usize>,
        stats: Arc<TargetStats>,
    ) {
        loop {
            // Idle above the current concurrency until it rises.
            while index >= *level.borrow_and_update() {
                if level.changed().await.is_err() {
                    return;
                }
            }
            if !self.plugin_ready(&queue, index).await {
                continue;
            }
            let delivery = tokio::select! {
                d = self.bus.take(&queue) => d,
                // `take` is cancel-safe: it hands out a delivery only in the poll that returns it.
                r = level.changed() => { if r.is_err() { return } continue }
            };
            let Some(delivery) = delivery else { return };
            let span = crate::telemetry::delivery_span(
                &delivery.event,
                &delivery.rule,
                &delivery.target,
                &delivery.plugin,
                delivery.attempts + 1,
            );
            self.deliver(delivery, &stats).instrument(span).await;
        }
    }

    /// While a target's handler is not ready (its plugin is not loaded) its
    /// deliveries stay queued untouched; only the first worker wakes to
    /// dead-letter those that outgrow their maximum age.
    async fn plugin_ready(&self, queue: &str, index: usize) -> bool {
        let Some((_, target)) = self.rules.target(queue) else {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            return false;
        };
        if self.handlers.resolve(&target.plugin).ready() {
            return true;
        }
        if index == 0 {
            let expired = self.bus.queue_stats().iter().any(|s| {
                s.queue == queue && s.oldest_age_ms > target.retry.max_event_age_secs * 1000
            });
            if expired {
                return true;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        false
    }

    async fn deliver(&self, mut d: Delivery, stats: &TargetStats) {
        let now = self.config.clock.now_ms();
        let Some((rule, target)) = self.rules.target(&d.queue) else {
            let reason = format!(
                "rule {} or its target {} no longer exists",
                d.rule, d.target
            );
            self.finish(d, Settle::DeadLetter { reason, keep: true }, None, 0.0, 0)
                .await;
            return;
        };
        let age_ms = (now - d.created_ms).max(0) as u64;
        if self.superseded(&d.event, age_ms) {
            // busbar's own metrics describe the moment they were taken; a newer one
            // is on its way every interval. While a target's plugin is not loaded
            // (a minute on a first start) they would otherwise age into dead letters.
            tracing::debug!(rule = %d.rule, target = %d.target, event = %d.event.id, age_ms,
                "metrics event superseded by fresher metrics; dropped");
            ::metrics::counter!("busbar_metrics_events_superseded_total").increment(1);
            let settle = Settle::Ack {
                new_events: vec![],
                stopped: vec![],
            };
            self.finish(d, settle, None, 0.0, 0).await;
            return;
        }
        if age_ms > target.retry.max_event_age_secs * 1000 {
            let reason = format!(
                "maximum event age of {} s exceeded after {} attempts; last error: {}",
                target.retry.max_event_age_secs,
                d.attempts,
                d.last_error.as_deref().unwrap_or("none")
            );
            let keep = target.dead_letter;
            self.finish(d, Settle::DeadLetter { reason, keep }, None, 0.0, 0)
                .await;
            return;
        }
        let handler = self.handlers.resolve(&target.plugin);
        if !handler.ready() {
            // Unloaded between the check and the take: back in the queue, no attempt spent.
            let error = format!("plugin {} is not loaded", target.plugin);
            let due_ms = now + 250;
            self.finish(d, Settle::Retry { due_ms, error }, None, 0.0, 0)
                .await;
            return;
        }
        let event = match self.input_for(&d.event, &rule.name, &target) {
            Ok(e) => e,
            Err(reason) => {
                let keep = target.dead_letter;
                self.finish(d, Settle::DeadLetter { reason, keep }, None, 0.0, 0)
                    .await;
                return;
            }
        };
        d.attempts += 1;
        let call = runtime::Delivery {
            rule: d.rule.clone(),
            target: d.target.clone(),
            attempt: d.attempts,
            id: d.id.clone(),
        };
        let started = std::time::Instant::now();
        let result = handler.handle(event, call).await;
        let latency = started.elapsed().as_secs_f64() * 1000.0;
        stats.record(latency, result.is_ok());
        match result {
            Ok(outputs) => {
                let (new_events, stopped) = self.outputs(&d, outputs);
                let n = new_events.len();
                self.finish(
                    d,
                    Settle::Ack {
                        new_events,
                        stopped,
                    },
                    None,
                    latency,
                    n,
                )
                .await;
            }
            Err(HandlerError::Call(e)) => {
                let settle = self.on_error(&d, &target, &e);
                self.finish(d, settle, Some(e.to_string()), latency, 0)
                    .await;
            }
            Err(HandlerError::Refused(reason)) => {
                let settle = Settle::DeadLetter { reason, keep: true };
                self.finish(d, settle, None, latency, 0).await;
            }
        }
    }

    /// True for an event of the superseded kind once older than its bound.
    fn superseded(&self, event: &Event, age_ms: u64) -> bool {
        self.config.superseded.as_ref().is_some_and(|s| {
            age_ms > s.after.as_millis() as u64
                && event.source == s.source
                && event.detail_type == s.detail_type
        })
    }

    /// The event as this target receives it: its detail replaced by the target's
    /// Input, InputPath or InputTransformer output when it has one.
    fn input_for(&self, event: &Event, rule: &str, target: &Target) -> Result<Event, String> {
        if target.input.is_none()
            && target.input_path.is_none()
            && target.input_transformer.is_none()
        {
            return Ok(event.clone());
        }
        let json = serde_json::to_value(event).map_err(|e| e.to_string())?;
        let arn = format!(
            "arn:aws:events:{}:{}:rule/{}/{}",
            event.region, event.account, event.bus, rule
        );
        let ctx = TransformContext {
            rule_name: rule,
            rule_arn: &arn,
            ingestion_time: &event.time,
        };
        let rendered = render_target_input(target, &json, &ctx)
            .map_err(|e| format!("input transformation failed for target {}: {e}", target.id))?;
        let mut out = event.clone();
        if let Some(text) = rendered {
            out.detail = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
        }
        Ok(out)
    }

    /// Turns a handler's outputs into events; those over the hop limit or invalid
    /// are returned apart, to be dead-lettered with the reason.
    fn outputs(
        &self,
        d: &Delivery,
        outputs: Vec<runtime::NewEvent>,
    ) -> (Vec<RoutedEvent>, Vec<(Event, String)>) {
        let hops = d.event.hops + 1;
        let mut ok = Vec::with_capacity(outputs.len());
        let mut stopped = Vec::new();
        for (i, out) in outputs.into_iter().enumerate() {
            let input = EventInput {
                source: Some(out.source.clone()),
                detail_type: Some(out.detail_type.clone()),
                detail: Some(out.detail.clone()),
                resources: out.resources.clone(),
                bus: Some(out.bus.clone().unwrap_or_else(|| d.event.bus.clone())),
                ..Default::default()
            };
            match input.into_event(&self.config.event_limits) {
                Ok(mut e) => {
                    e.hops = hops;
                    crate::telemetry::stamp_current(&mut e);
                    e.extensions.insert(
                        PRODUCER_EXTENSION.into(),
                        serde_json::Value::String(d.plugin.clone()),
                    );
                    if hops > self.config.hop_limit {
                        let reason = format!(
                            "hop limit of {} reached: event {} from plugin {} was produced by a chain of {} plugin calls (a rule may match its own output)",
                            self.config.hop_limit, e.detail_type, d.plugin, hops
                        );
                        stopped.push((e, reason));
                    } else if !self.rules.has_bus(&e.bus) {
                        let reason = format!(
                            "plugin {} published to bus {}, which does not exist",
                            d.plugin, e.bus
                        );
                        stopped.push((e, reason));
                    } else {
                        // Routed here, once, and appended with the ack in one commit.
                        match crate::publish::route(&self.rules, e, &Default::default()) {
                            Ok(routed) => ok.push(routed),
                            Err(err) => stopped.push((
                                d.event.clone(),
                                format!(
                                    "output {i} of plugin {} could not be stored: {}",
                                    d.plugin,
                                    err.message()
                                ),
                            )),
                        }
                    }
                }
                Err(err) => {
                    let mut e = d.event.clone();
                    e.hops = hops;
                    stopped.push((
                        e,
                        format!(
                            "output {i} of plugin {} is not a valid event: {}",
                            d.plugin, err.message
                        ),
                    ));
                }
            }
        }
        (ok, stopped)
    }

    fn on_error(&self, d: &Delivery, target: &Target, e: &CallError) -> Settle {
        let retries_used = d.attempts.saturating_sub(1);
        if e.is_retryable() && retries_used < target.retry.max_retry_attempts {
            let due_ms =
                self.config.clock.now_ms() + retry::backoff_ms(&target.retry, d.attempts) as i64;
            Settle::Retry {
                due_ms,
                error: e.to_string(),
            }
        } else {
            let reason = if e.is_retryable() {
                format!("gave up after {} attempts: {e}", d.attempts)
            } else {
                e.to_string()
            };
            Settle::DeadLetter {
                reason,
                keep: target.dead_letter,
            }
        }
    }

    async fn finish(
        &self,
        mut d: Delivery,
        settle: Settle,
        error: Option<String>,
        latency_ms: f64,
        emitted: usize,
    ) {
        let outcome = match &settle {
            Settle::Ack { .. } => "ok",
            Settle::Retry { .. } => "retry",
            Settle::DeadLetter { keep: true, .. } => "dead-letter",
            Settle::DeadLetter { keep: false, .. } => "dropped",
        };
        if let Settle::Retry { error, .. } = &settle {
            d.last_error = Some(error.clone());
        }
        metrics::counter!("busbar_deliveries_total", "outcome" => outcome).increment(1);
        tracing::Span::current().record("outcome", outcome);
        if outcome == "retry" && error.is_some() {
            metrics::counter!("busbar_retries_total").increment(1);
        }
        let report = DeliveryOutcome {
            event_id: d.event.id.clone(),
            rule: d.rule.clone(),
            target: d.target.clone(),
            plugin: d.plugin.clone(),
            attempt: d.attempts,
            outcome,
            error: error.or_else(|| match &settle {
                Settle::DeadLetter { reason, .. } => Some(reason.clone()),
                Settle::Retry { error, .. } => Some(error.clone()),
                _ => None,
            }),
            latency_ms,
            emitted,
        };
        // The delivery span names the event, rule, target and attempt.
        tracing::debug!("delivery settled");
        // The worker goes on to its next delivery while this one commits: waiting
        // for every commit would cap a target at concurrency / commit latency.
        // Nothing is lost by not waiting: until the commit lands the delivery is
        // still pending in the store, so a crash delivers it again.
        let Ok(permit) = self.settling.clone().acquire_owned().await else {
            return;
        };
        let bus = self.bus.clone();
        let outcomes = self.outcomes.clone();
        tokio::spawn(async move {
            let _permit = permit;
            if let Err(e) = bus.settle(d, settle).await {
                // The delivery stays in the store and is delivered again after a restart.
                tracing::error!(error = %e, event = %report.event_id, "could not settle a delivery");
                return;
            }
            let _ = outcomes.send(report);
        });
    }
}
