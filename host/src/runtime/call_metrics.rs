//! Per-plugin call metrics (`busbar_plugin_calls_total` by outcome,
//! `busbar_plugin_call_seconds`), with their handles resolved once per
//! loaded version.

use super::NewEvent;
use super::errors::CallError;
use std::sync::Arc;
use std::time::Instant;

/// Metric handles of one plugin version, looked up once at load: building a
/// labelled key and finding it in the recorder on every call costs more than
/// the rest of the bookkeeping.
pub struct CallMetrics {
    plugin: Arc<str>,
    ok: metrics::Counter,
    seconds: metrics::Histogram,
}

impl CallMetrics {
    pub fn new(plugin: &Arc<str>) -> CallMetrics {
        CallMetrics {
            plugin: plugin.clone(),
            ok: metrics::counter!("busbar_plugin_calls_total", "plugin" => plugin.to_string(), "outcome" => "ok"),
            seconds: metrics::histogram!("busbar_plugin_call_seconds", "plugin" => plugin.to_string()),
        }
    }

    pub fn record(&self, result: &Result<Vec<NewEvent>, CallError>, started: Instant) {
        match result {
            Ok(_) => self.ok.increment(1),
            // Failures are rarer and have many reasons: looked up when they happen.
            Err(e) => metrics::counter!("busbar_plugin_calls_total", "plugin" => self.plugin.to_string(), "outcome" => e.reason()).increment(1),
        }
        self.seconds.record(started.elapsed().as_secs_f64());
    }
}
