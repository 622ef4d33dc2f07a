//! Rules and targets: what a rule is, where rules come from (the config file,
//! hot-reloaded, and the API, persisted), and how a target's input is shaped.

pub mod admin;
pub mod set;
pub mod transform;

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub use set::{Compiled, Routing, RuleError, RuleSet};
pub use transform::{InputTransformer, TransformError};

/// Where a matched event goes: one (rule, target) and the plugin behind it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Route {
    pub rule: String,
    pub target: String,
    pub plugin: String,
}

impl Route {
    pub fn queue_key(&self, bus: &str) -> String {
        queue_key(bus, &self.rule, &self.target)
    }
}

/// A rule: on one bus, a pattern (or a schedule), and the targets that get
/// every matching event (or every tick).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rule {
    pub name: String,
    pub bus: String,
    /// The event pattern as JSON text (validated when the rule is stored);
    /// empty for a scheduled rule.
    #[serde(default)]
    pub pattern: String,
    /// EventBridge's `ScheduleExpression` (`rate(...)` or `cron(...)`, UTC):
    /// the rule matches no events and its targets get a `Scheduled Event` per tick.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// The region of the rule's ARN (the credential scope of the PutRule that
    /// made it), which its scheduled events carry; `local` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    pub state: RuleState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default)]
    pub targets: Vec<Target>,
    /// Where the rule came from: rules from the config file are replaced on reload,
    /// rules from the API persist in the store.
    #[serde(default)]
    pub origin: RuleOrigin,
}

impl Rule {
    /// False for rules whose events are routed to them by name (scheduled
    /// rules and schedules' rules): they are left out of the matcher.
    pub fn matches_events(&self) -> bool {
        self.schedule.is_none() && self.origin != RuleOrigin::Schedule
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RuleState {
    #[default]
    Enabled,
    Disabled,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum RuleOrigin {
    #[default]
    Api,
    Config,
    /// Managed by a schedule of the Scheduler API whose target is a plugin:
    /// it matches no events, carries the schedule's ticks, and is kept by the
    /// schedule (not stored as a rule).
    Schedule,
}

/// A target of a rule: a plugin, how its input is shaped, how failures are retried.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Target {
    /// Unique within the rule.
    pub id: String,
    /// The plugin's name: the stem of `NAME.wasm` in the plugins directory.
    pub plugin: String,
    /// Constant JSON text delivered as `detail` instead of the event's (EventBridge `Input`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<String>,
    /// A JSONPath into the event whose value is delivered as `detail` (EventBridge `InputPath`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_transformer: Option<InputTransformer>,
    #[serde(default)]
    pub retry: RetryPolicy,
    /// Whether deliveries that exhaust their retries go to the dead-letter queue
    /// (true) or are dropped with a log line (false).
    #[serde(default = "yes")]
    pub dead_letter: bool,
}

fn yes() -> bool {
    true
}

/// EventBridge's RetryPolicy plus the backoff shape busbar uses between attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RetryPolicy {
    /// Retries after the first attempt (EventBridge MaximumRetryAttempts, 0–185).
    pub max_retry_attempts: u32,
    /// Deliveries older than this are dead-lettered (MaximumEventAgeInSeconds, 60–86,400).
    pub max_event_age_secs: u64,
    /// First backoff; doubles per attempt, with full jitter, up to `max_backoff_ms`.
    #[serde(default = "default_base_backoff")]
    pub base_backoff_ms: u64,
    #[serde(default = "default_max_backoff")]
    pub max_backoff_ms: u64,
}

fn default_base_backoff() -> u64 {
    100
}

fn default_max_backoff() -> u64 {
    60_000
}

impl Default for RetryPolicy {
    /// EventBridge's defaults: 185 retries over up to 24 hours.
    fn default() -> Self {
        RetryPolicy {
            max_retry_attempts: 185,
            max_event_age_secs: 86_400,
            base_backoff_ms: default_base_backoff(),
            max_backoff_ms: default_max_backoff(),
        }
    }
}

impl RetryPolicy {
    /// Checks the EventBridge bounds; the message names the field.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_retry_attempts > 185 {
            return Err(format!(
                "MaximumRetryAttempts must be between 0 and 185, got {}",
                self.max_retry_attempts
            ));
        }
        if !(60..=86_400).contains(&self.max_event_age_secs) {
            return Err(format!(
                "MaximumEventAgeInSeconds must be between 60 and 86400, got {}",
                self.max_event_age_secs
            ));
        }
        if self.base_backoff_ms == 0 || self.max_backoff_ms < self.base_backoff_ms {
            return Err("backoff must satisfy 0 < base_backoff_ms <= max_backoff_ms".into());
        }
        Ok(())
    }
}

/// A named event bus.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BusInfo {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// RFC 3339 creation time.
    pub created: String,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

/// A rule's ARN as EventBridge writes it: `rule/NAME` on the default bus,
/// `rule/BUS/NAME` on others. Scheduled events carry it in `resources`.
pub fn rule_arn(region: &str, bus: &str, name: &str) -> String {
    let path = if bus == crate::event::DEFAULT_BUS {
        name.to_string()
    } else {
        format!("{bus}/{name}")
    };
    format!(
        "arn:aws:events:{region}:{}:rule/{path}",
        crate::event::DEFAULT_ACCOUNT
    )
}

/// The key of one delivery queue: a (rule, target) on a bus.
pub fn queue_key(bus: &str, rule: &str, target: &str) -> String {
    format!("{bus}/{rule}/{target}")
}
