//! Delivering one batch a worker took from its queue: each delivery is checked
//! (its rule still there, its age, its handler ready) and transformed for its
//! target, the handler runs the rest in one go, and every outcome (ack with the
//! handler's new events, retry with backoff, or dead-letter) is settled in one
//! commit.
//!
//! Batching is what keeps a quick handler fed when the cores are busy with
//! ingest: a worker pays the hand-off to a plugin thread, its place in the
//! scheduler's queue and the settle once per batch instead of once per event.
//! A slow handler gets batches of one (see [`TargetStats::batch_limit`]), so
//! its calls still run side by side on all of its workers.

use super::{DeliveryOutcome, Dispatcher, PRODUCER_EXTENSION, TargetStats, retry};
use crate::bus::{Delivery, RoutedEvent, Settle};
use crate::event::{Event, EventInput};
use crate::rules::transform::{TransformContext, render_target_input};
use crate::rules::{Rule, Target};
use crate::runtime::{self, CallError};
use std::sync::Arc;
use tracing::Span;

use super::handler::{Handler, HandlerError};

/// A delivery's outcome, ready to be committed, and what to report once it is.
struct Settled {
    delivery: Delivery,
    settle: Settle,
    report: DeliveryOutcome,
}

impl Dispatcher {
    /// Delivers `batch`, all taken from `queue`, and settles every delivery in it.
    pub(super) async fn deliver(&self, queue: &str, batch: Vec<Delivery>, stats: &TargetStats) {
        let mut settled = Vec::with_capacity(batch.len());
        let found = self.rules.target(queue);
        let handler = found
            .as_ref()
            .map(|(_, target)| self.handlers.resolve(&target.plugin));
        let mut calls = Vec::with_capacity(batch.len());
        let mut waiting = Vec::with_capacity(batch.len());
        for mut d in batch {
            let span = crate::telemetry::delivery_span(
                &d.event,
                &d.rule,
                &d.target,
                &d.plugin,
                d.attempts + 1,
            );
            let _in = span.enter();
            let checked = match (&found, &handler) {
                (Some((rule, target)), Some(handler)) => self.check(&d, rule, target, &**handler),
                _ => Err(Settle::DeadLetter {
                    reason: format!(
                        "rule {} or its target {} no longer exists",
                        d.rule, d.target
                    ),
                    keep: true,
                }),
            };
            match checked {
                Ok(event) => {
                    d.attempts += 1;
                    calls.push((
                        event,
                        runtime::Delivery {
                            rule: d.rule.clone(),
                            target: d.target.clone(),
                            attempt: d.attempts,
                            id: d.id.clone(),
                        },
                    ));
                    drop(_in);
                    waiting.push((d, span));
                }
                Err(settle) => settled.push(self.settled(d, settle, None, 0.0, 0)),
            }
        }
        if let (Some((_, target)), Some(handler), false) = (&found, &handler, calls.is_empty()) {
            let mut answers = handler.handle_batch(calls).await.into_iter();
            for (d, span) in waiting {
                let _in = span.enter();
                let Some((result, took)) = answers.next() else {
                    // A handler breaking its contract: the delivery goes back, no attempt lost.
                    let error = format!("handler {} gave no answer for this event", d.plugin);
                    let due_ms = self.config.clock.now_ms() + 250;
                    settled.push(self.settled(d, Settle::Retry { due_ms, error }, None, 0.0, 0));
                    continue;
                };
                let latency = took.as_secs_f64() * 1000.0;
                stats.record(latency, result.is_ok());
                settled.push(match result {
                    Ok(outputs) => {
                        let (new_events, stopped) = self.outputs(&d, outputs);
                        let n = new_events.len();
                        let ack = Settle::Ack {
                            new_events,
                            stopped,
                        };
                        self.settled(d, ack, None, latency, n)
                    }
                    Err(HandlerError::Call(e)) => {
                        let settle = self.on_error(&d, target, &e);
                        self.settled(d, settle, Some(e.to_string()), latency, 0)
                    }
                    Err(HandlerError::Refused(reason)) => {
                        let settle = Settle::DeadLetter { reason, keep: true };
                        self.settled(d, settle, None, latency, 0)
                    }
                });
            }
        }
        self.commit(settled).await;
    }

    /// The event as the target's handler should get it, or why the delivery
    /// ends without a call.
    fn check(
        &self,
        d: &Delivery,
        rule: &Rule,
        target: &Target,
        handler: &dyn Handler,
    ) -> Result<Event, Settle> {
        let now = self.config.clock.now_ms();
        let age_ms = (now - d.created_ms).max(0) as u64;
        if self.superseded(&d.event, age_ms) {
            // busbar's own metrics describe the moment they were taken; a newer one
            // is on its way every interval. While a target's plugin is not loaded
            // (a minute on a first start) they would otherwise age into dead letters.
            tracing::debug!(rule = %d.rule, target = %d.target, event = %d.event.id, age_ms,
                "metrics event superseded by fresher metrics; dropped");
            ::metrics::counter!("busbar_metrics_events_superseded_total").increment(1);
            return Err(Settle::Ack {
                new_events: vec![],
                stopped: vec![],
            });
        }
        if age_ms > target.retry.max_event_age_secs * 1000 {
            let reason = format!(
                "maximum event age of {} s exceeded after {} attempts; last error: {}",
                target.retry.max_event_age_secs,
                d.attempts,
                d.last_error.as_deref().unwrap_or("none")
            );
            let keep = target.dead_letter;
            return Err(Settle::DeadLetter { reason, keep });
        }
        if !handler.ready() {
            // Unloaded between the check and the take: back in the queue, no attempt spent.
            let error = format!("plugin {} is not loaded", target.plugin);
            return Err(Settle::Retry {
                due_ms: now + 250,
                error,
            });
        }
        self.input_for(&d.event, &rule.name, target)
            .map_err(|reason| Settle::DeadLetter {
                reason,
                keep: target.dead_letter,
            })
    }

    /// True for an event of the superseded kind once older than its bound.
    fn superseded(&self, event: &Event, age_ms: u64) -> bool {
        self.config.superseded.as_ref().is_some_and(|s| {
            age_ms > s.after.as_millis() as u64
                && event.source == s.source
                && event.detail_type == s.detail_type
        })
    }

    /// The event as this target receives it: its detail replaced by the target's
    /// Input, InputPath or InputTransformer output when it has one.
    fn input_for(&self, event: &Event, rule: &str, target: &Target) -> Result<Event, String> {
        if target.input.is_none()
            && target.input_path.is_none()
            && target.input_transformer.is_none()
        {
            return Ok(event.clone());
        }
        let json = serde_json::to_value(event).map_err(|e| e.to_string())?;
        let arn = format!(
            "arn:aws:events:{}:{}:rule/{}/{}",
            event.region, event.account, event.bus, rule
        );
        let ctx = TransformContext {
            rule_name: rule,
            rule_arn: &arn,
            ingestion_time: &event.time,
        };
        let rendered = render_target_input(target, &json, &ctx)
            .map_err(|e| format!("input transformation failed for target {}: {e}", target.id))?;
        let mut out = event.clone();
        if let Some(text) = rendered {
            out.detail = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
        }
        Ok(out)
    }

    /// Turns a handler's outputs into events; those over the hop limit or invalid
    /// are returned apart, to be dead-lettered with the reason.
    fn outputs(
        &self,
        d: &Delivery,
        outputs: Vec<runtime::NewEvent>,
    ) -> (Vec<RoutedEvent>, Vec<(Event, String)>) {
        let hops = d.event.hops + 1;
        let mut ok = Vec::with_capacity(outputs.len());
        let mut stopped = Vec::new();
        for (i, out) in outputs.into_iter().enumerate() {
            let input = EventInput {
                source: Some(out.source),
                detail_type: Some(out.detail_type),
                detail: Some(out.detail),
                resources: out.resources,
                bus: Some(out.bus.unwrap_or_else(|| d.event.bus.clone())),
                ..Default::default()
            };
            match input.into_event(&self.config.event_limits) {
                Ok(mut e) => {
                    e.hops = hops;
                    crate::telemetry::stamp_current(&mut e);
                    e.extensions.insert(
                        PRODUCER_EXTENSION.into(),
                        serde_json::Value::String(d.plugin.clone()),
                    );
                    if hops > self.config.hop_limit {
                        let reason = format!(
                            "hop limit of {} reached: event {} from plugin {} was produced by a chain of {} plugin calls (a rule may match its own output)",
                            self.config.hop_limit, e.detail_type, d.plugin, hops
                        );
                        stopped.push((e, reason));
                    } else if !self.rules.has_bus(&e.bus) {
                        let reason = format!(
                            "plugin {} published to bus {}, which does not exist",
                            d.plugin, e.bus
                        );
                        stopped.push((e, reason));
                    } else {
                        // Routed here, once, and appended with the ack in one commit.
                        match crate::publish::route(&self.rules, e, &Default::default()) {
                            Ok(routed) => ok.push(routed),
                            Err(err) => stopped.push((
                                d.event.clone(),
                                format!(
                                    "output {i} of plugin {} could not be stored: {}",
                                    d.plugin,
                                    err.message()
                                ),
                            )),
                        }
                    }
                }
                Err(err) => {
                    let mut e = d.event.clone();
                    e.hops = hops;
                    stopped.push((
                        e,
                        format!(
                            "output {i} of plugin {} is not a valid event: {}",
                            d.plugin, err.message
                        ),
                    ));
                }
            }
        }
        (ok, stopped)
    }

    fn on_error(&self, d: &Delivery, target: &Target, e: &CallError) -> Settle {
        let retries_used = d.attempts.saturating_sub(1);
        if e.is_retryable() && retries_used < target.retry.max_retry_attempts {
            let due_ms =
                self.config.clock.now_ms() + retry::backoff_ms(&target.retry, d.attempts) as i64;
            Settle::Retry {
                due_ms,
                error: e.to_string(),
            }
        } else {
            let reason = if e.is_retryable() {
                format!("gave up after {} attempts: {e}", d.attempts)
            } else {
                e.to_string()
            };
            Settle::DeadLetter {
                reason,
                keep: target.dead_letter,
            }
        }
    }

    /// Counts a delivery's outcome and makes its report. Called inside the
    /// delivery's span, which it records the outcome on.
    fn settled(
        &self,
        mut d: Delivery,
        settle: Settle,
        error: Option<String>,
        latency_ms: f64,
        emitted: usize,
    ) -> Settled {
        let outcome = match &settle {
            Settle::Ack { .. } => "ok",
            Settle::Retry { .. } => "retry",
            Settle::DeadLetter { keep: true, .. } => "dead-letter",
            Settle::DeadLetter { keep: false, .. } => "dropped",
        };
        if let Settle::Retry { error, .. } = &settle {
            d.last_error = Some(error.clone());
        }
        metrics::counter!("busbar_deliveries_total", "outcome" => outcome).increment(1);
        Span::current().record("outcome", outcome);
        if outcome == "retry" && error.is_some() {
            metrics::counter!("busbar_retries_total").increment(1);
        }
        let report = DeliveryOutcome {
            event_id: d.event.id.clone(),
            rule: d.rule.clone(),
            target: d.target.clone(),
            plugin: d.plugin.clone(),
            attempt: d.attempts,
            outcome,
            error: error.or_else(|| match &settle {
                Settle::DeadLetter { reason, .. } => Some(reason.clone()),
                Settle::Retry { error, .. } => Some(error.clone()),
                _ => None,
            }),
            latency_ms,
            emitted,
        };
        // The delivery span names the event, rule, target and attempt.
        tracing::debug!("delivery settled");
        Settled {
            delivery: d,
            settle,
            report,
        }
    }

    /// Commits a batch's outcomes together, in the background.
    async fn commit(&self, settled: Vec<Settled>) {
        if settled.is_empty() {
            return;
        }
        // The worker goes on to its next batch while this one commits: waiting
        // for every commit would cap a target at concurrency / commit latency.
        // Nothing is lost by not waiting: until the commit lands the deliveries
        // are still pending in the store, so a crash delivers them again.
        let n = u32::try_from(settled.len()).unwrap_or(u32::MAX);
        let Ok(permit) = Arc::clone(&self.settling).acquire_many_owned(n).await else {
            return;
        };
        let bus = self.bus.clone();
        let outcomes = self.outcomes.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let (settles, reports): (Vec<_>, Vec<_>) = settled
                .into_iter()
                .map(|s| ((s.delivery, s.settle), s.report))
                .unzip();
            if let Err(e) = bus.settle_batch(settles).await {
                // The deliveries stay in the store and are delivered again after a restart.
                tracing::error!(error = %e, deliveries = reports.len(), "could not settle deliveries");
                return;
            }
            for report in reports {
                let _ = outcomes.send(report);
            }
        });
    }
}
