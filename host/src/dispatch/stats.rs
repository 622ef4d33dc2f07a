//! Per-target delivery statistics: throughput, error rate and latency
//! percentiles over a sliding window, read by the metrics loop.

use parking_lot::Mutex;
use serde::Serialize;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How far back rates and percentiles look.
const WINDOW: Duration = Duration::from_secs(10);
/// Bounds memory when a target is very busy: percentiles come from the latest samples.
const MAX_SAMPLES: usize = 8192;

/// How long a worker may keep the rest of its batch waiting on its handler:
/// a batch holds about this much handler time, so batching never delays an
/// event by more than this behind its neighbours.
const BATCH_BUDGET_US: u64 = 2_000;
/// The most deliveries one worker takes at once.
const MAX_BATCH: u64 = 32;

#[derive(Default)]
pub struct TargetStats {
    samples: Mutex<VecDeque<(Instant, f64, bool)>>,
    totals: Mutex<(u64, u64)>,
    /// Moving average of a handling's time in µs (0: none seen yet).
    mean_us: AtomicU64,
}

/// A snapshot of [`TargetStats`].
#[derive(Debug, Clone, Default, Serialize)]
pub struct StatsSnapshot {
    pub processed_total: u64,
    pub errors_total: u64,
    pub processed_per_sec: f64,
    pub error_rate: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

impl TargetStats {
    pub fn record(&self, latency_ms: f64, ok: bool) {
        let now = Instant::now();
        let mut s = self.samples.lock();
        s.push_back((now, latency_ms, ok));
        while s.len() > MAX_SAMPLES || s.front().is_some_and(|f| now - f.0 > WINDOW) {
            s.pop_front();
        }
        let mut t = self.totals.lock();
        t.0 += 1;
        t.1 += u64::from(!ok);
        // An exponential average over about the last eight handlings; kept at
        // least 1 so that 0 keeps meaning "nothing seen yet".
        let us = ((latency_ms * 1000.0) as u64).max(1);
        let old = self.mean_us.load(Ordering::Relaxed);
        let new = if old == 0 { us } else { (old * 7 + us) / 8 };
        self.mean_us.store(new.max(1), Ordering::Relaxed);
    }

    /// How many deliveries a worker of this target takes at once: as many as
    /// fit [`BATCH_BUDGET_US`] of handling at the recent average, so a quick
    /// handler gets batches (up to [`MAX_BATCH`]) and a slow one (an HTTP call,
    /// a timeout) gets one at a time, its calls side by side on its workers.
    /// One until a handling has been timed.
    pub fn batch_limit(&self) -> usize {
        match self.mean_us.load(Ordering::Relaxed) {
            0 => 1,
            mean => (BATCH_BUDGET_US / mean).clamp(1, MAX_BATCH) as usize,
        }
    }

    pub fn snapshot(&self) -> StatsSnapshot {
        let now = Instant::now();
        let s = self.samples.lock();
        let recent: Vec<&(Instant, f64, bool)> = s.iter().filter(|x| now - x.0 <= WINDOW).collect();
        let (processed_total, errors_total) = *self.totals.lock();
        if recent.is_empty() {
            return StatsSnapshot {
                processed_total,
                errors_total,
                ..Default::default()
            };
        }
        let span = (now - recent[0].0).as_secs_f64().max(1.0);
        let errors = recent.iter().filter(|x| !x.2).count();
        let mut lat: Vec<f64> = recent.iter().map(|x| x.1).collect();
        lat.sort_by(|a, b| a.total_cmp(b));
        let pct = |p: f64| lat[((lat.len() as f64 - 1.0) * p).round() as usize];
        StatsSnapshot {
            processed_total,
            errors_total,
            processed_per_sec: recent.len() as f64 / span,
            error_rate: errors as f64 / recent.len() as f64,
            p50_ms: pct(0.5),
            p99_ms: pct(0.99),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quick_handlers_get_batches_and_slow_ones_single_deliveries() {
        let quick = TargetStats::default();
        assert_eq!(quick.batch_limit(), 1, "one at a time until timed");
        for _ in 0..20 {
            quick.record(0.010, true); // 10 µs, a warm Rust plugin
        }
        assert_eq!(quick.batch_limit(), MAX_BATCH as usize);

        let slow = TargetStats::default();
        for _ in 0..20 {
            slow.record(0.5, true);
        }
        assert_eq!(slow.batch_limit(), 4, "2 ms of 0.5 ms handlings");
        // A plugin that turns slow (an HTTP call, timeouts) drops to one at a
        // time within a few handlings, so its calls run side by side again.
        for _ in 0..5 {
            slow.record(100.0, false);
        }
        assert_eq!(slow.batch_limit(), 1);
    }
}
