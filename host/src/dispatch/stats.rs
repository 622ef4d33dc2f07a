//! Per-target delivery statistics: throughput, error rate and latency
//! percentiles over a sliding window, read by the metrics loop.

use parking_lot::Mutex;
use serde::Serialize;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How far back rates and percentiles look.
const WINDOW: Duration = Duration::from_secs(10);
/// Bounds memory when a target is very busy: percentiles come from the latest samples.
const MAX_SAMPLES: usize = 8192;

#[derive(Default)]
pub struct TargetStats {
    samples: Mutex<VecDeque<(Instant, f64, bool)>>,
    totals: Mutex<(u64, u64)>,
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
