//! The queues' in-memory mirror: waiting deliveries by due time, per queue,
//! and the count in flight. The `deliveries` table is the truth (a commit
//! changes memory only once it is durable, and `recover.rs` reads the table
//! back at open), so handing out a delivery never touches the disk.

use super::*;
use parking_lot::Mutex;
use std::collections::BTreeMap;
use tokio::sync::Notify;

/// One delivery queue's in-memory mirror.
pub(super) struct Queue {
    state: Mutex<QueueState>,
    notify: Notify,
}

#[derive(Default)]
struct QueueState {
    /// Waiting deliveries, earliest due first.
    ready: BTreeMap<(i64, u64), Delivery>,
    in_flight: usize,
}

impl Inner {
    /// Queue `key`'s mirror, made on first use.
    fn queue(&self, key: &str) -> Arc<Queue> {
        if let Some(q) = self.queues.get(key) {
            return q.clone();
        }
        self.queues
            .entry(key.to_string())
            .or_insert_with(|| {
                Arc::new(Queue {
                    state: Mutex::new(QueueState::default()),
                    notify: Notify::new(),
                })
            })
            .clone()
    }

    /// Adds a durable delivery to its queue's mirror and wakes its takers.
    pub(super) fn enqueue(&self, d: Delivery) {
        let q = self.queue(&d.queue);
        q.state.lock().ready.insert((d.due_ms, d.seq), d);
        self.total_backlog.fetch_add(1, Ordering::Relaxed);
        q.notify.notify_waiters();
    }

    /// Deliveries waiting in queue `key` (not those in flight).
    pub(super) fn backlog(&self, key: &str) -> usize {
        self.queues
            .get(key)
            .map(|q| q.state.lock().ready.len())
            .unwrap_or(0)
    }

    /// A delivery of `key` was settled: it is no longer in flight.
    pub(super) fn release(&self, key: &str) {
        let q = self.queue(key);
        let mut st = q.state.lock();
        st.in_flight = st.in_flight.saturating_sub(1);
    }

    /// Wakes every `take` waiting, so each sees the store closed.
    pub(super) fn wake_takers(&self) {
        for q in self.queues.iter() {
            q.notify.notify_waiters();
        }
    }
}

/// The earliest due deliveries of queue `key`, at most `max` (at least one),
/// waiting until one is due; empty once the store is closed. Only the first is
/// waited for: the others are those already due, taken under the same lock.
pub(super) async fn take(inner: &Inner, key: &str, max: usize) -> Vec<Delivery> {
    let q = inner.queue(key);
    loop {
        if inner.closed.load(Ordering::SeqCst) {
            return Vec::new();
        }
        let notified = q.notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let wait_ms = {
            let mut st = q.state.lock();
            let now = inner.config.clock.now_ms();
            match st.ready.first_key_value().map(|(k, _)| *k) {
                Some((due, _)) if due <= now => {
                    let mut taken = Vec::with_capacity(max.min(st.ready.len()));
                    while taken.len() < max.max(1) {
                        match st.ready.first_entry() {
                            Some(e) if e.key().0 <= now => taken.push(e.remove()),
                            _ => break,
                        }
                    }
                    st.in_flight += taken.len();
                    inner
                        .total_backlog
                        .fetch_sub(taken.len(), Ordering::Relaxed);
                    return taken;
                }
                Some((due, _)) => Some((due - now) as u64),
                None => None,
            }
        };
        match wait_ms {
            Some(ms) => {
                tokio::select! {
                    _ = &mut notified => {}
                    _ = inner.config.clock.sleep_ms(ms) => {}
                }
            }
            None => notified.await,
        }
    }
}

/// Each queue's backlog, in-flight count and oldest waiting delivery's age.
pub(super) fn stats(inner: &Inner) -> Vec<QueueStats> {
    let now = inner.config.clock.now_ms();
    let mut out: Vec<QueueStats> = inner
        .queues
        .iter()
        .map(|q| {
            let st = q.state.lock();
            let oldest = st.ready.values().map(|d| d.created_ms).min();
            QueueStats {
                queue: q.key().clone(),
                backlog: st.ready.len(),
                in_flight: st.in_flight,
                oldest_age_ms: oldest.map(|c| (now - c).max(0) as u64).unwrap_or(0),
            }
        })
        .collect();
    out.sort_by(|a, b| a.queue.cmp(&b.queue));
    out
}

/// Drops the mirror of a queue no rule feeds any more.
pub(super) fn forget(inner: &Inner, queue: &str) {
    // Only an empty queue nobody waits on: a `take` holds the queue it waits for.
    inner.queues.remove_if(queue, |_, q| {
        let st = q.state.lock();
        st.ready.is_empty() && st.in_flight == 0 && Arc::strong_count(q) == 1
    });
}

#[cfg(test)]
mod tests {
    use super::super::testing::{by_source, event, open, take};
    use super::*;

    #[tokio::test]
    async fn a_batch_takes_only_what_is_due_up_to_its_size() {
        let dir = tempfile::tempdir().unwrap();
        let bus = open(dir.path());
        let events = (0..5).map(|_| event("to-a")).collect();
        bus.publish(by_source(events)).await.unwrap();
        let first = bus.take_batch("default/r/a", 3).await;
        assert_eq!(first.len(), 3);
        assert!(first.windows(2).all(|w| w[0].seq < w[1].seq), "in order");
        // One goes back for later: the batch does not wait for it.
        let mut later = first[0].clone();
        later.attempts = 1;
        bus.settle(
            later,
            Settle::Retry {
                due_ms: now_ms() + 60_000,
                error: "later".into(),
            },
        )
        .await
        .unwrap();
        let rest = bus.take_batch("default/r/a", 10).await;
        assert_eq!(
            rest.len(),
            2,
            "the two still due, not the one retrying later"
        );
        let stats = &bus.queue_stats()[0];
        assert_eq!((stats.backlog, stats.in_flight), (1, 4));
    }

    #[tokio::test]
    async fn retry_waits_until_due_and_keeps_the_error() {
        let dir = tempfile::tempdir().unwrap();
        let bus = open(dir.path());
        bus.publish(by_source(vec![event("to-a")])).await.unwrap();
        let mut d = take(&bus, "default/r/a").await;
        d.attempts = 1;
        let due = now_ms() + 300;
        bus.settle(
            d,
            Settle::Retry {
                due_ms: due,
                error: "boom".into(),
            },
        )
        .await
        .unwrap();
        let d = take(&bus, "default/r/a").await;
        assert!(now_ms() >= due);
        assert_eq!(d.attempts, 1);
        assert_eq!(d.last_error.as_deref(), Some("boom"));
    }
}
