//! One call of a plugin's `handle` export: limits armed, the event lowered,
//! the result checked, and every way it can fail turned into a [`CallError`]
//! that names the plugin, the export and the kind of failure.

use super::classify::classify;
use super::errors::{CallError, EXPORT, FailureKind};
use super::imports::LimitExceeded;
use super::imports::bindings::busbar::plugin::types as wit;
use super::pool::{Instance, Version, first_deadline};
use super::{Delivery, NewEvent};
use crate::event::Event;
use std::sync::Arc;
use std::time::Instant;

/// A handler may publish at most this many events per call...
pub const MAX_OUTPUT_EVENTS: usize = 1000;
/// ...totalling at most this many bytes (source, detail-type, detail, resources).
pub const MAX_OUTPUT_BYTES: usize = 8 << 20;

/// The outcome of running the guest, before the instance is returned.
enum Ran {
    /// The export returned (`healthy` instance).
    Returned(Result<Vec<wit::NewEvent>, wit::HandlerError>),
    /// It trapped or hit a limit; the instance must not be reused.
    Broken(CallError),
}

pub async fn run(
    version: &Arc<Version>,
    event: &Event,
    delivery: &Delivery,
) -> Result<Vec<NewEvent>, CallError> {
    let started = Instant::now();
    let plugin = &*version.name;
    let clock = version.clock();
    let input = lower_event(event);
    let delivery = wit::Delivery {
        rule: delivery.rule.clone(),
        target: delivery.target.clone(),
        attempt: delivery.attempt,
        id: delivery.id.clone(),
    };

    // The wall-clock bound covers everything the guest can wait on (WASI
    // polls, HTTP, slot waits); dropping the future cancels the call and drops
    // the instance with it. The epoch check inside enforces the same bound
    // while guest code runs, and the CPU budget.
    let work = async {
        let mut instance = version.checkout(clock).await?;
        let ran = invoke(&mut instance, clock, &input, &delivery).await;
        let memory = instance.store.data().limiter.reserved_bytes();
        version
            .memory_high_water
            .fetch_max(memory, std::sync::atomic::Ordering::Relaxed);
        let healthy = matches!(ran, Ran::Returned(_));
        version.checkin(instance, healthy);
        Ok::<Ran, CallError>(ran)
    };
    let ran = match tokio::time::timeout(clock.timeout, work).await {
        Ok(Ok(ran)) => ran,
        Ok(Err(e)) => Ran::Broken(e),
        Err(_) => Ran::Broken(CallError::Failed {
            plugin: plugin.to_string(),
            kind: FailureKind::Timeout,
            message: format!(
                "{} (the call was blocked in a host call or waiting when the limit passed)",
                LimitExceeded::Timeout {
                    elapsed_ms: started.elapsed().as_millis(),
                    limit_ms: clock.timeout.as_millis(),
                }
            ),
        }),
    };
    let result = match ran {
        Ran::Returned(Ok(events)) => lift_output(
            plugin,
            events,
            Some(Passthrough {
                text: &input.detail,
                value: &event.detail,
            }),
        ),
        Ran::Returned(Err(wit::HandlerError::Retry(message))) => Err(CallError::Retry {
            plugin: plugin.to_string(),
            message,
        }),
        Ran::Returned(Err(wit::HandlerError::Reject(message))) => Err(CallError::Reject {
            plugin: plugin.to_string(),
            message,
        }),
        Ran::Broken(e) => Err(e),
    };
    version.metrics.record(&result, started);
    result
}

async fn invoke(
    instance: &mut Instance,
    clock: super::imports::CallClock,
    event: &wit::Event,
    delivery: &wit::Delivery,
) -> Ran {
    instance.calls += 1;
    // The CPU budget starts here: checkout may have waited or instantiated.
    let clock = clock.start_cpu();
    instance.store.data_mut().start_call(clock);
    instance.store.set_epoch_deadline(first_deadline(&clock));
    let result = instance
        .handler
        .call_handle(&mut instance.store, event, delivery)
        .await;
    instance.store.data_mut().finish_call();
    match result {
        Ok(returned) => Ran::Returned(returned),
        Err(e) => {
            let plugin = instance.store.data().host.name.clone();
            Ran::Broken(classify(&plugin, e, instance.store.data()))
        }
    }
}

fn lower_event(event: &Event) -> wit::Event {
    wit::Event {
        id: event.id.clone(),
        source: event.source.clone(),
        detail_type: event.detail_type.clone(),
        time: event.time.clone(),
        account: event.account.clone(),
        region: event.region.clone(),
        resources: event.resources.clone(),
        // `to_string` writes straight into a byte buffer; `Display` goes through
        // `fmt::Write` a few bytes at a time and is about twice as slow.
        detail: serde_json::to_string(&event.detail).unwrap_or_else(|_| "{}".to_string()),
        bus: event.bus.clone(),
    }
}

/// The incoming detail as the guest saw it (text) and as the host holds it
/// (parsed). Handlers often forward the detail unchanged; an output detail
/// with the same bytes is the same JSON, so it is cloned instead of parsed
/// again (a parse builds an ordered, hashed map per object and costs several
/// times a clone).
#[derive(Clone, Copy)]
struct Passthrough<'a> {
    text: &'a str,
    value: &'a serde_json::Value,
}

/// Checks and converts the handler's events. Too many or too big is a
/// failure (OutputTooLarge); a malformed event is a Reject naming it.
fn lift_output(
    plugin: &str,
    events: Vec<wit::NewEvent>,
    passthrough: Option<Passthrough<'_>>,
) -> Result<Vec<NewEvent>, CallError> {
    let too_large = |message: String| CallError::Failed {
        plugin: plugin.to_string(),
        kind: FailureKind::OutputTooLarge,
        message,
    };
    if events.len() > MAX_OUTPUT_EVENTS {
        return Err(too_large(format!(
            "returned {} events; the limit is {MAX_OUTPUT_EVENTS} per call",
            events.len()
        )));
    }
    let bytes: usize = events
        .iter()
        .map(|e| {
            e.source.len()
                + e.detail_type.len()
                + e.detail.len()
                + e.resources.iter().map(String::len).sum::<usize>()
        })
        .sum();
    if bytes > MAX_OUTPUT_BYTES {
        return Err(too_large(format!(
            "returned {bytes} bytes of events; the limit is {MAX_OUTPUT_BYTES} bytes per call"
        )));
    }
    let reject = |message: String| CallError::Reject {
        plugin: plugin.to_string(),
        message: format!("`{EXPORT}` returned an invalid event: {message}"),
    };
    events
        .into_iter()
        .enumerate()
        .map(|(i, e)| {
            for (field, value) in [("source", &e.source), ("detail-type", &e.detail_type)] {
                if value.trim().is_empty() || value.len() > 256 {
                    return Err(reject(format!(
                        "events[{i}].{field} must be 1 to 256 bytes"
                    )));
                }
            }
            let detail: serde_json::Value = match passthrough {
                Some(p) if p.text == e.detail => p.value.clone(),
                _ => serde_json::from_str(&e.detail).map_err(|err| {
                    reject(format!("events[{i}].detail is not valid JSON: {err}"))
                })?,
            };
            if !detail.is_object() {
                return Err(reject(format!(
                    "events[{i}].detail must be a JSON object, got {}",
                    crate::event::json_kind(&detail)
                )));
            }
            if let Some(r) = e.resources.iter().position(String::is_empty) {
                return Err(reject(format!("events[{i}].resources[{r}] is empty")));
            }
            let bus = match e.bus {
                Some(b) => Some(
                    crate::event::validate_bus_name(&b)
                        .map_err(|err| reject(format!("events[{i}].bus: {}", err.message)))?,
                ),
                None => None,
            };
            Ok(NewEvent {
                source: e.source,
                detail_type: e.detail_type,
                detail,
                resources: e.resources,
                bus,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_event(detail: &str) -> wit::NewEvent {
        wit::NewEvent {
            source: "s".into(),
            detail_type: "t".into(),
            detail: detail.into(),
            resources: vec![],
            bus: None,
        }
    }

    #[test]
    fn output_is_checked() {
        let ok = lift_output("p", vec![new_event(r#"{"a":1}"#)], None).unwrap();
        assert_eq!(ok[0].detail["a"], 1);
        let err =
            lift_output("p", vec![new_event(r#"{"a":1}"#), new_event("[1]")], None).unwrap_err();
        assert!(
            matches!(&err, CallError::Reject { message, .. } if message.contains("events[1].detail must be a JSON object")),
            "{err}"
        );
        let err = lift_output("p", vec![new_event("{")], None).unwrap_err();
        assert!(err.to_string().contains("not valid JSON"), "{err}");
        let many = (0..=MAX_OUTPUT_EVENTS).map(|_| new_event("{}")).collect();
        assert_eq!(
            lift_output("p", many, None).unwrap_err().kind(),
            Some(FailureKind::OutputTooLarge)
        );
        let big = format!(r#"{{"x":"{}"}}"#, "y".repeat(MAX_OUTPUT_BYTES));
        assert_eq!(
            lift_output("p", vec![new_event(&big)], None)
                .unwrap_err()
                .kind(),
            Some(FailureKind::OutputTooLarge)
        );
    }

    #[test]
    fn forwarded_detail_is_not_parsed_again() {
        // A value no parse of `text` could produce: if it comes back, the
        // identical output was taken from the input, not re-parsed.
        let held = serde_json::json!({"held": true});
        let p = Passthrough {
            text: r#"{"a":1}"#,
            value: &held,
        };
        let out = lift_output(
            "p",
            vec![new_event(r#"{"a":1}"#), new_event(r#"{"a": 1}"#)],
            Some(p),
        )
        .unwrap();
        assert_eq!(out[0].detail, held);
        assert_eq!(out[1].detail, serde_json::json!({"a": 1}));
    }
}
