//! The EventBridge Scheduler API's schedules and schedule groups: what they
//! are, how they are checked, where they are kept, and the jobs and rules
//! they become.
//!
//! Definitions live in the kv store (namespace [`NAMESPACE`]): `group/NAME`
//! and `schedule/GROUP/NAME`, plus a revision counter `rev` bumped by every
//! change. Each node follows the counter (one read a second) and reloads the
//! definitions when it moves, so on JetStream a schedule created through one
//! node runs on all of them (and fires on one).
//!
//! A schedule whose target is a plugin is delivered through a rule the
//! schedule manages (origin `schedule`, named [`managed_rule_name`]): the
//! dispatcher's queues, retries and dead letters are a rule target's, so the
//! schedule's RetryPolicy and DeadLetterConfig mean what they mean for rules.

use super::expr::{Dialect, Expression};
use super::{Action, Job};
use crate::rules::{RetryPolicy, Rule, RuleOrigin, RuleSet, RuleState, Target};
use crate::runtime::{KvBackend, KvError};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;

/// The kv namespace of schedule definitions.
pub const NAMESPACE: &str = "busbar:scheduler";
/// The group every account has.
pub const DEFAULT_GROUP: &str = "default";
/// Job ids of Scheduler API schedules start with this.
pub const JOB_PREFIX: &str = "schedule/";

/// A schedule as stored; field names follow the API's members.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScheduleDef {
    pub name: String,
    pub group: String,
    pub expression: String,
    /// IANA zone; UTC when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_ms: Option<i64>,
    /// FlexibleTimeWindow: `None` is OFF, else MaximumWindowInMinutes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_minutes: Option<u32>,
    pub enabled: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// ActionAfterCompletion DELETE: remove the schedule once it has no next fire.
    #[serde(default)]
    pub delete_after_completion: bool,
    pub target: ScheduleTarget,
    pub created_ms: i64,
    pub modified_ms: i64,
    /// The region of its ARN (the credential scope of the request that made it).
    pub region: String,
}

/// Where a schedule's ticks go.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScheduleTarget {
    /// The target's `Arn` as given.
    pub arn: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role_arn: Option<String>,
    /// `Input`: for a bus, the event's detail; for a plugin, the detail it receives.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<String>,
    pub kind: TargetKind,
    pub retry: RetryPolicy,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letter_arn: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum TargetKind {
    /// EventBridge PutEvents: an event on `bus`, with EventBridgeParameters.
    Bus {
        bus: String,
        source: String,
        detail_type: String,
    },
    /// A plugin, called through the schedule's managed rule.
    Plugin { plugin: String },
}

/// A schedule group as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupDef {
    pub name: String,
    pub created_ms: i64,
    pub region: String,
}

impl ScheduleDef {
    pub fn arn(&self) -> String {
        schedule_arn(&self.region, &self.group, &self.name)
    }

    /// The job the scheduler runs for this schedule (none while disabled).
    pub fn job(&self) -> Result<Option<Job>, String> {
        if !self.enabled {
            return Ok(None);
        }
        let expression =
            Expression::parse(&self.expression, Dialect::Scheduler).map_err(|e| e.message)?;
        Ok(Some(Job {
            id: format!("{JOB_PREFIX}{}/{}", self.group, self.name),
            expression,
            text: self.expression.clone(),
            zone: super::expr::zone(self.timezone.as_deref())?,
            start_ms: self.start_ms,
            end_ms: self.end_ms,
            window_ms: self.window_minutes.unwrap_or(0) as i64 * 60_000,
            // A rate counts from the start date, else from the last change of
            // the schedule: an update starts a new clock, as in AWS.
            anchor_ms: Some(self.start_ms.unwrap_or(self.modified_ms)),
            action: Action::Schedule {
                group: self.group.clone(),
                name: self.name.clone(),
            },
        }))
    }

    /// The rule that carries a plugin target's deliveries, if it has one.
    pub fn managed_rule(&self) -> Option<Rule> {
        let TargetKind::Plugin { plugin } = &self.target.kind else {
            return None;
        };
        Some(Rule {
            name: managed_rule_name(&self.group, &self.name),
            bus: crate::event::DEFAULT_BUS.into(),
            pattern: String::new(),
            schedule: None,
            region: Some(self.region.clone()),
            state: if self.enabled {
                RuleState::Enabled
            } else {
                RuleState::Disabled
            },
            description: Some(format!(
                "delivers schedule {}/{} to plugin {plugin}",
                self.group, self.name
            )),
            targets: vec![Target {
                id: "schedule".into(),
                plugin: plugin.clone(),
                input: None,
                input_path: None,
                input_transformer: None,
                retry: self.target.retry,
                dead_letter: self.target.dead_letter_arn.is_some(),
            }],
            origin: RuleOrigin::Schedule,
        })
    }
}

pub fn schedule_arn(region: &str, group: &str, name: &str) -> String {
    format!(
        "arn:aws:scheduler:{region}:{}:schedule/{group}/{name}",
        crate::event::DEFAULT_ACCOUNT
    )
}

pub fn group_arn(region: &str, name: &str) -> String {
    format!(
        "arn:aws:scheduler:{region}:{}:schedule-group/{name}",
        crate::event::DEFAULT_ACCOUNT
    )
}

/// The name of the rule a plugin-targeted schedule manages: readable when it
/// fits a rule name's 64 characters, a digest of group and name otherwise.
pub fn managed_rule_name(group: &str, name: &str) -> String {
    let readable = format!("schedule.{group}.{name}");
    if readable.len() <= 64 {
        return readable;
    }
    use sha2::Digest;
    let h = sha2::Sha256::digest(format!("{group}/{name}").as_bytes());
    format!("schedule.{}", hex::encode(&h[..16]))
}

/// Names of schedules and groups: 1 to 64 of letters, digits, `-`, `_` and `.`.
pub fn check_name(what: &str, name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "1 validation error detected: Value '{name}' at '{what}' failed to satisfy constraint: Member must satisfy regular expression pattern: [0-9a-zA-Z-_.]+ and have length between 1 and 64"
        ))
    }
}

/// The definitions in the kv store.
#[derive(Clone)]
pub struct DefStore {
    kv: Arc<dyn KvBackend>,
}

fn schedule_key(group: &str, name: &str) -> String {
    format!("schedule/{group}/{name}")
}

fn group_key(name: &str) -> String {
    format!("group/{name}")
}

/// At most this many definitions are read back (a bound, far above real use).
const MAX_DEFS: u32 = 10_000_000;

impl DefStore {
    pub fn new(kv: Arc<dyn KvBackend>) -> DefStore {
        DefStore { kv }
    }

    fn get<T: for<'de> Deserialize<'de>>(&self, key: &str) -> Result<Option<T>, KvError> {
        match self.kv.get(NAMESPACE, key)? {
            None => Ok(None),
            Some(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| KvError::Store(format!("{key}: {e}"))),
        }
    }

    fn put<T: Serialize>(&self, key: &str, value: &T) -> Result<(), KvError> {
        let bytes = serde_json::to_vec(value).map_err(|e| KvError::Store(e.to_string()))?;
        self.kv.set(NAMESPACE, key, &bytes)?;
        self.bump()
    }

    fn bump(&self) -> Result<(), KvError> {
        self.kv.increment(NAMESPACE, "rev", 1).map(|_| ())
    }

    /// The revision counter: changes whenever a definition does.
    pub fn revision(&self) -> Result<i64, KvError> {
        Ok(match self.kv.get(NAMESPACE, "rev")? {
            Some(b) => KvError::parse_counter("rev", &b)?,
            None => 0,
        })
    }

    pub fn schedule(&self, group: &str, name: &str) -> Result<Option<ScheduleDef>, KvError> {
        self.get(&schedule_key(group, name))
    }

    pub fn put_schedule(&self, def: &ScheduleDef) -> Result<(), KvError> {
        self.put(&schedule_key(&def.group, &def.name), def)
    }

    pub fn delete_schedule(&self, group: &str, name: &str) -> Result<bool, KvError> {
        let existed = self.kv.delete(NAMESPACE, &schedule_key(group, name))?;
        self.bump()?;
        Ok(existed)
    }

    /// Every schedule, by group then name.
    pub fn schedules(&self) -> Result<Vec<ScheduleDef>, KvError> {
        let keys = self.kv.list_keys(NAMESPACE, "schedule/", MAX_DEFS)?;
        let mut out = Vec::with_capacity(keys.len());
        for k in keys {
            // A key deleted between the listing and the read is simply gone.
            if let Some(d) = self.get::<ScheduleDef>(&k)? {
                out.push(d);
            }
        }
        Ok(out)
    }

    pub fn group(&self, name: &str) -> Result<Option<GroupDef>, KvError> {
        self.get(&group_key(name))
    }

    pub fn put_group(&self, def: &GroupDef) -> Result<(), KvError> {
        self.put(&group_key(&def.name), def)
    }

    pub fn delete_group(&self, name: &str) -> Result<(), KvError> {
        self.kv.delete(NAMESPACE, &group_key(name))?;
        self.bump()
    }

    pub fn groups(&self) -> Result<Vec<GroupDef>, KvError> {
        let keys = self.kv.list_keys(NAMESPACE, "group/", MAX_DEFS)?;
        let mut out = Vec::new();
        for k in keys {
            if let Some(g) = self.get::<GroupDef>(&k)? {
                out.push(g);
            }
        }
        Ok(out)
    }
}

/// The live view of the definitions on one node: what fires read, and what
/// the managed rules and the scheduler's jobs are made from.
pub struct Schedules {
    pub store: DefStore,
    defs: parking_lot::RwLock<BTreeMap<(String, String), Arc<ScheduleDef>>>,
    revision: std::sync::atomic::AtomicI64,
    rules: Arc<RuleSet>,
}

impl Schedules {
    pub fn new(kv: Arc<dyn KvBackend>, rules: Arc<RuleSet>) -> Arc<Schedules> {
        Arc::new(Schedules {
            store: DefStore::new(kv),
            defs: Default::default(),
            revision: std::sync::atomic::AtomicI64::new(-1),
            rules,
        })
    }

    pub fn get(&self, group: &str, name: &str) -> Option<Arc<ScheduleDef>> {
        self.defs
            .read()
            .get(&(group.to_string(), name.to_string()))
            .cloned()
    }

    /// Every schedule, ordered by group then name.
    pub fn all(&self) -> Vec<Arc<ScheduleDef>> {
        self.defs.read().values().cloned().collect()
    }

    /// Reads the definitions again if their revision moved; returns the jobs
    /// when it did. Managed rules are put or removed to match. Blocking (kv).
    pub fn reload(&self, force: bool) -> Result<Option<Vec<Job>>, KvError> {
        let rev = self.store.revision()?;
        let seen = self.revision.load(std::sync::atomic::Ordering::SeqCst);
        if !force && rev == seen {
            return Ok(None);
        }
        let defs = self.store.schedules()?;
        self.revision
            .store(rev, std::sync::atomic::Ordering::SeqCst);
        let mut jobs = Vec::new();
        let mut map = BTreeMap::new();
        let mut managed: Vec<Rule> = Vec::new();
        for d in defs {
            match d.job() {
                Ok(Some(j)) => jobs.push(j),
                Ok(None) => {}
                Err(e) => {
                    tracing::error!(schedule = %format!("{}/{}", d.group, d.name), error = %e, "schedule skipped")
                }
            }
            managed.extend(d.managed_rule());
            map.insert((d.group.clone(), d.name.clone()), Arc::new(d));
        }
        *self.defs.write() = map;
        if let Err(e) = self.rules.replace_managed(managed) {
            tracing::error!(error = %e, "the rules of plugin-targeted schedules were not applied");
        }
        Ok(Some(jobs))
    }
}
