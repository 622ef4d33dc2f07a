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

mod deliver;
pub mod handler;
mod orphans;
pub mod retry;
pub mod stats;
mod view;

use crate::bus::Bus;
use crate::event::EventLimits;
use crate::rules::RuleSet;
use crate::runtime::Runtime;
use parking_lot::Mutex;
use serde::Serialize;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;

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
                    if self.handlers.resolve(&target.plugin).missing() {
                        tracing::warn!(
                            rule = %queue,
                            plugin = %target.plugin,
                            "the target names plugin {:?}, which is not in the plugins directory: its \
                             deliveries stay queued until {}.wasm appears (a plugin's name is its \
                             .wasm file's stem)",
                            target.plugin,
                            target.plugin
                        );
                    }
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
            let batch = tokio::select! {
                b = self.bus.take_batch(&queue, stats.batch_limit()) => b,
                // `take_batch` is cancel-safe: it hands out deliveries only in the poll that returns them.
                r = level.changed() => { if r.is_err() { return } continue }
            };
            if batch.is_empty() {
                return;
            }
            self.deliver(&queue, batch, &stats).await;
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
}
