//! Queues whose rule or target is gone. Their waiting deliveries are not
//! dropped: each is taken and dead-lettered with the reason ("rule … or its
//! target … no longer exists"), so an operator can see them and redrive them
//! once the rule is back. Then the backend forgets the queue (on JetStream its
//! durable consumer is deleted). A queue whose rule returns while it is being
//! emptied is handed back to its new pool.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use super::Dispatcher;
use super::stats::TargetStats;
use crate::rules::{Rule, Target};

/// How long an empty queue is watched for late deliveries (a retry coming due,
/// a message in flight on another node) before it counts as drained.
const QUIET: Duration = Duration::from_secs(2);
/// Quiet periods after which a queue that still counts deliveries is left.
const MAX_QUIET_ROUNDS: u32 = 30;

impl Dispatcher {
    /// Starts emptying every queue that holds deliveries but has no target.
    pub(super) fn drain_orphans(self: &Arc<Self>, targets: &BTreeMap<String, (Rule, Target)>) {
        for s in self.bus.queue_stats() {
            if s.backlog + s.in_flight == 0 || targets.contains_key(&s.queue) {
                continue;
            }
            if !self.draining.lock().insert(s.queue.clone()) {
                continue;
            }
            let me = self.clone();
            tokio::spawn(async move { me.drain(s.queue).await });
        }
    }

    async fn drain(self: Arc<Self>, queue: String) {
        /// Deliveries dead-lettered per commit while draining.
        const DRAIN_BATCH: usize = 256;
        let stats = TargetStats::default();
        let mut drained = 0usize;
        let mut quiet = 0u32;
        let mut empty = false;
        while self.rules.target(&queue).is_none() {
            match tokio::time::timeout(QUIET, self.bus.take_batch(&queue, DRAIN_BATCH)).await {
                Ok(batch) if batch.is_empty() => break,
                // Without a target, delivering dead-letters them with the reason.
                Ok(batch) => {
                    drained += batch.len();
                    quiet = 0;
                    self.deliver(&queue, batch, &stats).await;
                }
                Err(_) => {
                    let left = self
                        .bus
                        .queue_stats()
                        .iter()
                        .find(|s| s.queue == queue)
                        .map_or(0, |s| s.backlog + s.in_flight);
                    empty = left == 0;
                    quiet += 1;
                    // Deliveries still counted in flight after a minute belong to a
                    // settle that failed; they come back (and are drained) at restart.
                    if empty || quiet >= MAX_QUIET_ROUNDS {
                        break;
                    }
                }
            }
        }
        self.draining.lock().remove(&queue);
        if drained > 0 {
            tracing::warn!(queue = %queue, deliveries = drained,
                "dead-lettered the deliveries of a removed rule or target");
        }
        if empty && self.rules.target(&queue).is_none() {
            self.bus.forget_queue(&queue).await;
        }
    }
}
