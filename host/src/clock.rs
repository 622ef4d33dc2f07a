//! The clock busbar reads wherever it waits on time: delivery due times, event
//! ages, queue ages. One per node, so a test can move one node's time forward
//! (`node.clock.advance(..)`) instead of sleeping a real minute, while other
//! nodes in the same process keep real time.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;
use tokio::sync::watch;

#[derive(Debug)]
pub struct Clock {
    /// Added to the system time; only [`Clock::advance`] changes it.
    offset_ms: AtomicI64,
    /// Bumped on every advance, so waiters sleeping toward a due time wake and look again.
    advanced: watch::Sender<u64>,
}

impl Default for Clock {
    fn default() -> Self {
        Clock {
            offset_ms: AtomicI64::new(0),
            advanced: watch::channel(0).0,
        }
    }
}

impl Clock {
    /// Milliseconds since the Unix epoch, as this node sees them.
    pub fn now_ms(&self) -> i64 {
        crate::bus::now_ms() + self.offset_ms.load(Ordering::Relaxed)
    }

    /// Moves this clock forward by `by`; every waiter on a due time looks again.
    pub fn advance(&self, by: Duration) {
        self.offset_ms
            .fetch_add(by.as_millis() as i64, Ordering::Relaxed);
        self.advanced.send_modify(|n| *n += 1);
    }

    /// Sleeps `ms` of this clock's time: ends early when the clock is advanced
    /// (the caller re-reads `now_ms` and decides again).
    pub async fn sleep_ms(&self, ms: u64) {
        let mut advanced = self.advanced.subscribe();
        advanced.mark_unchanged();
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(ms)) => {}
            _ = advanced.changed() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn advance_moves_time_and_wakes_sleepers() {
        let clock = std::sync::Arc::new(Clock::default());
        let before = clock.now_ms();
        let c = clock.clone();
        let sleeper = tokio::spawn(async move { c.sleep_ms(3_600_000).await });
        tokio::task::yield_now().await;
        clock.advance(Duration::from_secs(3600));
        tokio::time::timeout(Duration::from_secs(5), sleeper)
            .await
            .expect("an advance wakes a sleeper")
            .unwrap();
        assert!(clock.now_ms() - before >= 3_600_000);
    }
}
