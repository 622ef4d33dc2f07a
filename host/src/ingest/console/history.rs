//! A short history of the node's figures, kept in memory for the console's
//! plots (`GET /v1/history`): every [`INTERVAL`] one [`Sample`] of what the
//! node already counts (events published, deliveries by outcome, backlog,
//! p99, dead letters, plugins, and each target's concurrency and backlog),
//! the last [`KEPT`] of them.
//!
//! The sampler reads counters that exist anyway; it adds nothing to the path
//! of an event, and the console asks for the samples newer than the ones it
//! has, so an open tab costs one small request per interval.

use crate::node::Node;
use parking_lot::Mutex;
use serde::Serialize;
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Weak};
use std::time::Duration;

/// How often a sample is taken.
pub const INTERVAL: Duration = Duration::from_secs(2);
/// How many samples are kept: ten minutes at [`INTERVAL`].
pub const KEPT: usize = 300;

/// The node's figures at one moment. Rates are per second over the interval
/// since the previous sample.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Sample {
    /// Unix time in milliseconds.
    pub t: i64,
    /// Events published on this node (clients, replays and busbar's own
    /// metrics events) since it started, and per second.
    pub events_total: u64,
    pub events_per_sec: f64,
    /// Deliveries that ended well, and those that failed (each failed attempt).
    pub delivered_total: u64,
    pub delivered_per_sec: f64,
    pub failed_total: u64,
    pub failed_per_sec: f64,
    /// Deliveries waiting in every queue.
    pub backlog: usize,
    /// The highest p99 handling time (ms) over the targets' recent deliveries.
    pub p99_ms: f64,
    pub dead_letters: usize,
    pub plugins_loaded: usize,
    pub plugins_failed: usize,
    /// Per target queue (`bus/rule/target`): concurrency and backlog, so the
    /// autoscaler's decisions show as steps over time.
    pub targets: BTreeMap<String, TargetSample>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TargetSample {
    pub concurrency: usize,
    pub backlog: usize,
    pub p99_ms: f64,
}

/// The samples of one node.
#[derive(Default)]
pub struct History {
    samples: Mutex<VecDeque<Sample>>,
}

impl History {
    /// Starts sampling `node` every [`INTERVAL`] until the node is gone.
    pub fn start(node: &Arc<Node>) -> Arc<History> {
        let history = Arc::new(History::default());
        let weak: Weak<Node> = Arc::downgrade(node);
        let h = history.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(node) = weak.upgrade() else { break };
                h.record(&node);
            }
        });
        history
    }

    /// Takes one sample of `node` now.
    pub fn record(&self, node: &Node) {
        let now = crate::bus::now_ms();
        let targets = node.dispatcher.targets();
        let plugins = node.runtime.status();
        let mut delivered_total = 0;
        let mut failed_total = 0;
        let mut p99_ms: f64 = 0.0;
        let mut per_target = BTreeMap::new();
        for t in &targets {
            delivered_total += t.stats.processed_total - t.stats.errors_total;
            failed_total += t.stats.errors_total;
            p99_ms = p99_ms.max(t.stats.p99_ms);
            per_target.insert(
                t.queue.clone(),
                TargetSample {
                    concurrency: t.concurrency,
                    backlog: t.backlog,
                    p99_ms: t.stats.p99_ms,
                },
            );
        }
        let failed = plugins
            .iter()
            .filter(|p| p.state == crate::runtime::PluginState::Failed)
            .count();
        let loaded = plugins
            .iter()
            .filter(|p| node.runtime.is_loaded(&p.name))
            .count();
        let events_total = node.publisher.published_total();
        let mut samples = self.samples.lock();
        let rate = |now_total: u64, before: Option<u64>, before_t: i64| match before {
            Some(b) if now > before_t => {
                now_total.saturating_sub(b) as f64 * 1000.0 / (now - before_t) as f64
            }
            _ => 0.0,
        };
        let prev = samples.back();
        let prev_t = prev.map_or(now, |p| p.t);
        let sample = Sample {
            t: now,
            events_total,
            events_per_sec: rate(events_total, prev.map(|p| p.events_total), prev_t),
            delivered_total,
            delivered_per_sec: rate(delivered_total, prev.map(|p| p.delivered_total), prev_t),
            failed_total,
            failed_per_sec: rate(failed_total, prev.map(|p| p.failed_total), prev_t),
            backlog: targets.iter().map(|t| t.backlog).sum(),
            p99_ms,
            dead_letters: node.bus.dead_letter_count(),
            plugins_loaded: loaded,
            plugins_failed: failed,
            targets: per_target,
        };
        samples.push_back(sample);
        while samples.len() > KEPT {
            samples.pop_front();
        }
    }

    /// The samples taken after `after_ms` (all with `None`), oldest first.
    pub fn since(&self, after_ms: Option<i64>) -> Vec<Sample> {
        self.samples
            .lock()
            .iter()
            .filter(|s| after_ms.is_none_or(|a| s.t > a))
            .cloned()
            .collect()
    }
}
