//! Turns busbar's `Target Metrics` events into `ScaleTarget` decisions by target
//! tracking on backlog per worker. The policy itself lives in `policy.rs`; this file
//! reads the event, the plugin's config and its cooldown records in kv.

mod policy;

use policy::{Decision, Settings, TargetMetrics};
use serde_json::{Map, Value, json};

wit_bindgen::generate!({
    world: "handler",
    path: "../../wit",
});

use busbar::plugin::config;
use busbar::plugin::kv::{self, KvError};
use busbar::plugin::log::{Level, log};

struct Autoscaler;

impl Guest for Autoscaler {
    fn handle(event: Event, _delivery: Delivery) -> Result<Vec<NewEvent>, HandlerError> {
        if event.detail_type != "Target Metrics" {
            return Ok(Vec::new());
        }
        let settings = settings()?;
        let now_ms = policy::parse_rfc3339_ms(&event.time).ok_or_else(|| {
            HandlerError::Reject(format!(
                "event time {:?} is not an RFC 3339 timestamp",
                event.time
            ))
        })?;
        let detail: Map<String, Value> = match serde_json::from_str(&event.detail) {
            Ok(Value::Object(detail)) => detail,
            _ => return Err(HandlerError::Reject("detail must be a JSON object".into())),
        };
        let bus = match detail.get("bus") {
            Some(Value::String(bus)) => bus.clone(),
            _ => event.bus.clone(),
        };
        let targets = match detail.get("targets") {
            Some(Value::Array(targets)) => targets,
            None => return Ok(Vec::new()),
            Some(_) => {
                return Err(HandlerError::Reject(
                    "detail.targets must be an array".into(),
                ));
            }
        };

        let mut out = Vec::new();
        for (i, entry) in targets.iter().enumerate() {
            let metrics = target_metrics(i, entry)?;
            let key = format!("last-scale-out/{}", metrics.target);
            let last = last_scale_out(&key)?;
            match policy::decide(&metrics, &settings, now_ms, last) {
                Decision::Scale {
                    desired,
                    scale_out,
                    reason,
                } => {
                    if scale_out {
                        kv::set(&key, now_ms.to_string().as_bytes()).map_err(kv_failure)?;
                    }
                    log(
                        Level::Info,
                        &format!(
                            "{}: {} -> {desired}: {reason}",
                            metrics.target, metrics.concurrency
                        ),
                    );
                    out.push(NewEvent {
                        source: "busbar.autoscaler".into(),
                        detail_type: "ScaleTarget".into(),
                        detail: json!({
                            "bus": bus,
                            "target": metrics.target,
                            "desired_concurrency": desired,
                            "reason": reason,
                        })
                        .to_string(),
                        resources: Vec::new(),
                        bus: None,
                    });
                }
                Decision::Hold(Some(why)) => {
                    log(Level::Debug, &format!("{}: holding: {why}", metrics.target));
                }
                Decision::Hold(None) => {}
            }
        }
        Ok(out)
    }
}

fn settings() -> Result<Settings, HandlerError> {
    let mut s = Settings::default();
    if let Some(text) = config::get("target_backlog_per_worker") {
        s.target_backlog_per_worker = text
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite() && *v > 0.0)
            .ok_or_else(|| {
                HandlerError::Reject(format!(
                    "config target_backlog_per_worker must be a positive number, got {text:?}"
                ))
            })?;
    }
    if let Some(text) = config::get("scale_in_cooldown_secs") {
        let secs = text
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite() && *v >= 0.0)
            .ok_or_else(|| {
                HandlerError::Reject(format!(
                    "config scale_in_cooldown_secs must be a number of seconds >= 0, got {text:?}"
                ))
            })?;
        s.scale_in_cooldown_ms = (secs * 1000.0) as i64;
    }
    Ok(s)
}

fn target_metrics(i: usize, entry: &Value) -> Result<TargetMetrics, HandlerError> {
    let field = |name: &str| -> Result<u64, HandlerError> {
        entry.get(name).and_then(Value::as_u64).ok_or_else(|| {
            HandlerError::Reject(format!(
                "detail.targets[{i}].{name} must be a non-negative integer"
            ))
        })
    };
    let target = entry.get("target").and_then(Value::as_str).ok_or_else(|| {
        HandlerError::Reject(format!("detail.targets[{i}].target must be a string"))
    })?;
    Ok(TargetMetrics {
        target: target.to_owned(),
        backlog: field("backlog")?,
        in_flight: field("in_flight")?,
        concurrency: field("concurrency")?,
        min_concurrency: field("min_concurrency")?,
        max_concurrency: field("max_concurrency")?,
    })
}

fn last_scale_out(key: &str) -> Result<Option<i64>, HandlerError> {
    let Some(bytes) = kv::get(key).map_err(kv_failure)? else {
        return Ok(None);
    };
    // A record this plugin cannot read must not block scale-in forever.
    let parsed = std::str::from_utf8(&bytes)
        .ok()
        .and_then(|s| s.parse::<i64>().ok());
    if parsed.is_none() {
        log(
            Level::Warn,
            &format!("kv {key} does not hold a millisecond timestamp; ignoring it"),
        );
    }
    Ok(parsed)
}

fn kv_failure(err: KvError) -> HandlerError {
    match err {
        KvError::Store(msg) => HandlerError::Retry(format!("kv store failed: {msg}")),
        KvError::TooLarge(msg) => HandlerError::Reject(format!("kv refused the record: {msg}")),
        KvError::NotANumber(msg) => HandlerError::Reject(format!("kv: {msg}")),
    }
}

export!(Autoscaler);
