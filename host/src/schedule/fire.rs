//! What a tick does on a node: the event it publishes, through the ordinary
//! publish path, so a scheduled event is archived, tailed and delivered like
//! any other, and each target's Input, InputPath or input transformer shapes it.

use super::api::{Schedules, TargetKind};
use super::{Action, Job, Sink};
use crate::event::{DEFAULT_ACCOUNT, DEFAULT_REGION, Event};
use crate::publish::{PublishOptions, Publisher};
use crate::rules::RuleSet;
use async_trait::async_trait;
use serde_json::json;
use std::sync::Arc;

/// Where EventBridge's scheduled events come from.
pub const SCHEDULED_SOURCE: &str = "aws.events";
pub const SCHEDULED_DETAIL_TYPE: &str = "Scheduled Event";

/// Where the Scheduler API's plugin-targeted schedules' events come from.
pub const SCHEDULER_SOURCE: &str = "aws.scheduler";

/// The node's [`Sink`]: publishes each tick.
pub struct NodeSink {
    pub publisher: Arc<Publisher>,
    pub schedules: Arc<Schedules>,
}

/// An event time as EventBridge writes it (UTC, whole seconds).
pub fn event_time(ms: i64) -> String {
    let text = crate::bus::ms_to_rfc3339(ms.div_euclid(1000) * 1000);
    crate::event::normalize_time(&text).unwrap_or(text)
}

/// The scheduled event EventBridge sends a scheduled rule's targets.
pub fn scheduled_rule_event(
    id: String,
    scheduled_ms: i64,
    bus: &str,
    arn: &str,
    region: &str,
) -> Event {
    Event {
        version: "0".into(),
        id,
        detail_type: SCHEDULED_DETAIL_TYPE.into(),
        source: SCHEDULED_SOURCE.into(),
        account: DEFAULT_ACCOUNT.into(),
        time: event_time(scheduled_ms),
        region: region.into(),
        resources: vec![arn.into()],
        detail: json!({}),
        bus: bus.into(),
        replay_name: None,
        hops: 0,
        extensions: Default::default(),
    }
}

#[async_trait]
impl Sink for NodeSink {
    async fn fire(&self, job: &Job, scheduled_ms: i64, event_id: String) -> Result<(), String> {
        let (event, options) = match &job.action {
            Action::Rule {
                bus,
                name,
                arn,
                region,
            } => (
                scheduled_rule_event(event_id, scheduled_ms, bus, arn, region),
                PublishOptions {
                    to_rule: Some(name.clone()),
                    ..Default::default()
                },
            ),
            Action::Schedule { group, name } => {
                let def = self
                    .schedules
                    .get(group, name)
                    .ok_or_else(|| format!("schedule {group}/{name} no longer exists"))?;
                let detail = match def.target.input.as_deref().map(serde_json::from_str) {
                    None => json!({}),
                    Some(Ok(v @ serde_json::Value::Object(_))) => v,
                    // A plugin takes any Input; a detail is always an object.
                    Some(Ok(other)) => json!({ "input": other }),
                    Some(Err(e)) => return Err(format!("Input is not JSON: {e}")),
                };
                let mut event = scheduled_rule_event(
                    event_id,
                    scheduled_ms,
                    crate::event::DEFAULT_BUS,
                    &def.arn(),
                    &def.region,
                );
                event.detail = detail;
                match &def.target.kind {
                    TargetKind::Bus {
                        bus,
                        source,
                        detail_type,
                    } => {
                        event.bus = bus.clone();
                        event.source = source.clone();
                        event.detail_type = detail_type.clone();
                        (event, PublishOptions::default())
                    }
                    TargetKind::Plugin { .. } => {
                        event.source = SCHEDULER_SOURCE.into();
                        (
                            event,
                            PublishOptions {
                                to_rule: Some(super::api::managed_rule_name(group, name)),
                                ..Default::default()
                            },
                        )
                    }
                }
            }
        };
        match self.publisher.publish(vec![event], &options).await.pop() {
            Some(Ok(_)) => Ok(()),
            Some(Err(e)) => Err(format!("{}: {}", e.code(), e.message())),
            None => Err("the publish answered nothing".into()),
        }
    }

    /// ActionAfterCompletion DELETE: the schedule goes once it has no next fire.
    async fn completed(&self, job: &Job) {
        let Action::Schedule { group, name } = &job.action else {
            return;
        };
        if !self
            .schedules
            .get(group, name)
            .is_some_and(|d| d.delete_after_completion)
        {
            return;
        }
        let schedules = self.schedules.clone();
        let (g, n) = (group.clone(), name.clone());
        // The revision moves with the delete: every node's scheduler (this
        // one too) drops the job at its next look at the definitions.
        let done =
            tokio::task::spawn_blocking(move || schedules.store.delete_schedule(&g, &n)).await;
        match done {
            Ok(Ok(_)) => tracing::info!(schedule = %job.id, "deleted after its last fire"),
            Ok(Err(e)) => {
                tracing::warn!(schedule = %job.id, error = %e, "not deleted after completion")
            }
            Err(e) => {
                tracing::warn!(schedule = %job.id, error = %e, "not deleted after completion")
            }
        }
    }
}

/// The jobs of every scheduled rule of `rules` that is enabled: a disabled
/// rule has no job, so disabling stops its clock and enabling starts a new one.
pub fn rule_jobs(rules: &RuleSet) -> Vec<Job> {
    let snapshot = rules.snapshot();
    snapshot
        .rules
        .values()
        .filter(|r| r.state == crate::rules::RuleState::Enabled)
        .filter_map(|r| {
            let text = r.schedule.as_ref()?;
            // Stored rules were validated on the way in; one that no longer
            // parses is skipped with a log line rather than stopping the others.
            let expression = match super::expr::Expression::parse(text, super::expr::Dialect::Rule)
            {
                Ok(e) => e,
                Err(e) => {
                    tracing::error!(rule = %r.name, error = %e, "scheduled rule skipped");
                    return None;
                }
            };
            let region = r.region.clone().unwrap_or_else(|| DEFAULT_REGION.into());
            Some(Job {
                id: format!("{RULE_PREFIX}{}/{}", r.bus, r.name),
                expression,
                text: text.clone(),
                zone: chrono_tz::Tz::UTC,
                start_ms: None,
                end_ms: None,
                window_ms: 0,
                anchor_ms: None,
                action: Action::Rule {
                    bus: r.bus.clone(),
                    name: r.name.clone(),
                    arn: crate::rules::rule_arn(&region, &r.bus, &r.name),
                    region,
                },
            })
        })
        .collect()
}

/// The id prefix of scheduled rules' jobs.
pub const RULE_PREFIX: &str = "rule/";
