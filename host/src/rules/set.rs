//! The live rule set: every rule of every bus, compiled into one matcher per bus.
//!
//! Changes build a whole new [`Compiled`] aside and swap it in, so routing
//! never waits for a rule change and never sees half of one.

use super::Route;
use super::{BusInfo, Rule, RuleOrigin, RuleState, Target};
use crate::event::{DEFAULT_BUS, Event};
use crate::pattern::{Limits, Matcher, Pattern};
use crate::schedule::expr::{Dialect, Expression};
use arc_swap::ArcSwap;
use parking_lot::Mutex;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use tokio::sync::watch;

/// Why a rule or bus change was refused. The message names the rule, target or field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    #[error("{0}")]
    InvalidPattern(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
}

/// A compiled snapshot of all rules.
#[derive(Default)]
pub struct Compiled {
    /// All rules by (bus, name).
    pub rules: BTreeMap<(String, String), Rule>,
    pub buses: BTreeMap<String, BusInfo>,
    /// Per bus: the matcher over enabled rules, each id indexing `routes`.
    matchers: HashMap<String, BusMatcher>,
    /// Every queue key with its rule and target.
    pub targets: BTreeMap<String, (Rule, Target)>,
}

/// What routing decided for one event.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Routing {
    /// Every enabled rule it matched, targets or not (what the tail and spans show).
    /// Shared names: routing every event must not copy strings nobody may read.
    pub rules: Vec<Arc<str>>,
    /// One per target of those rules: the deliveries to write.
    pub routes: Vec<Route>,
}

/// One bus's matcher; its ids index `routes` and `names`.
struct BusMatcher {
    matcher: Matcher<usize>,
    routes: Vec<Vec<Route>>,
    names: Vec<Arc<str>>,
}

/// The rule set shared by ingest (validation), the bus (routing) and dispatch (targets).
pub struct RuleSet {
    current: ArcSwap<Compiled>,
    /// Serializes writers; readers never take it.
    write: Mutex<()>,
    limits: Limits,
    version: watch::Sender<u64>,
    /// Calls of [`RuleSet::route`]: one per event published, whatever watches it.
    matched: std::sync::atomic::AtomicU64,
}

impl RuleSet {
    pub fn new(limits: Limits) -> Arc<Self> {
        let mut c = Compiled::default();
        c.buses.insert(DEFAULT_BUS.into(), default_bus());
        Arc::new(RuleSet {
            current: ArcSwap::from_pointee(c),
            write: Mutex::new(()),
            limits,
            version: watch::channel(0).0,
            matched: Default::default(),
        })
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    pub fn snapshot(&self) -> Arc<Compiled> {
        self.current.load_full()
    }

    /// Fires after every change (the value is a change counter).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    /// Checks a rule without storing it; its compiled pattern, `None` for a scheduled rule.
    pub fn validate(&self, rule: &Rule) -> Result<Option<Pattern>, RuleError> {
        if rule.name.is_empty()
            || rule.name.len() > 64
            || !rule
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        {
            return Err(RuleError::Invalid(format!(
                "rule name {:?} must be 1 to 64 characters of letters, digits and . - _",
                rule.name
            )));
        }
        let pattern = match &rule.schedule {
            Some(text) => {
                if !rule.pattern.is_empty() {
                    return Err(RuleError::Invalid(format!(
                        "rule {}: Parameter(s) EventPattern and ScheduleExpression cannot be used together; a rule has a pattern or a schedule",
                        rule.name
                    )));
                }
                if rule.bus != DEFAULT_BUS {
                    return Err(RuleError::Invalid(format!(
                        "rule {}: ScheduleExpression is supported only on the default event bus.",
                        rule.name
                    )));
                }
                Expression::parse(text, Dialect::Rule)
                    .map_err(|e| RuleError::Invalid(e.message))?;
                None
            }
            None if rule.origin == RuleOrigin::Schedule => None,
            None => Some(
                Pattern::parse_with(&rule.pattern, &self.limits).map_err(|e| {
                    RuleError::InvalidPattern(format!("Event pattern is not valid. Reason: {e}"))
                })?,
            ),
        };
        let mut ids = std::collections::HashSet::new();
        for t in &rule.targets {
            if t.id.is_empty() || t.id.len() > 64 || t.id.contains('/') {
                return Err(RuleError::Invalid(format!(
                    "target id {:?} of rule {} must be 1 to 64 characters without '/'",
                    t.id, rule.name
                )));
            }
            if !ids.insert(&t.id) {
                return Err(RuleError::Invalid(format!(
                    "rule {} has two targets with id {:?}",
                    rule.name, t.id
                )));
            }
            if t.plugin.is_empty() {
                return Err(RuleError::Invalid(format!(
                    "target {} of rule {} names no plugin",
                    t.id, rule.name
                )));
            }
            t.retry.validate().map_err(|e| {
                RuleError::Invalid(format!("target {} of rule {}: {e}", t.id, rule.name))
            })?;
            super::transform::validate_target_input(t).map_err(|e| {
                RuleError::Invalid(format!("target {} of rule {}: {e}", t.id, rule.name))
            })?;
        }
        Ok(pattern)
    }

    fn change(
        &self,
        f: impl FnOnce(&mut Compiled) -> Result<(), RuleError>,
    ) -> Result<(), RuleError> {
        let _w = self.write.lock();
        let cur = self.current.load();
        let mut next = Compiled {
            rules: cur.rules.clone(),
            buses: cur.buses.clone(),
            ..Default::default()
        };
        f(&mut next)?;
        self.compile(&mut next);
        self.current.store(Arc::new(next));
        self.version.send_modify(|v| *v += 1);
        Ok(())
    }

    fn compile(&self, c: &mut Compiled) {
        type Pending = (Vec<(usize, Pattern)>, Vec<Vec<Route>>, Vec<Arc<str>>);
        let mut per_bus: HashMap<String, Pending> = HashMap::new();
        c.targets.clear();
        for ((bus, name), rule) in &c.rules {
            for t in &rule.targets {
                c.targets.insert(
                    super::queue_key(bus, name, &t.id),
                    (rule.clone(), t.clone()),
                );
            }
            // A scheduled rule matches no events: its ticks are routed to it by name.
            if rule.state != RuleState::Enabled || !rule.matches_events() {
                continue;
            }
            // Rules were validated on the way in; a rule that no longer parses (a lowered
            // limit on restart) is skipped with a log line rather than taking the bus down.
            let pattern = match Pattern::parse_with(&rule.pattern, &self.limits) {
                Ok(p) => p,
                Err(e) => {
                    tracing::error!(rule = %name, bus = %bus, error = %e, "rule skipped: invalid pattern");
                    continue;
                }
            };
            let entry = per_bus.entry(bus.clone()).or_default();
            let idx = entry.1.len();
            entry.0.push((idx, pattern));
            entry.2.push(Arc::<str>::from(name.as_str()));
            entry.1.push(
                rule.targets
                    .iter()
                    .map(|t| Route {
                        rule: name.clone(),
                        target: t.id.clone(),
                        plugin: t.plugin.clone(),
                    })
                    .collect(),
            );
        }
        c.matchers = per_bus
            .into_iter()
            .map(|(bus, (patterns, routes, names))| {
                let matcher = Matcher::new(patterns);
                (
                    bus,
                    BusMatcher {
                        matcher,
                        routes,
                        names,
                    },
                )
            })
            .collect();
    }

    /// Adds or replaces a rule (keeping its targets when `keep_targets`, as PutRule does).
    pub fn put(&self, mut rule: Rule, keep_targets: bool) -> Result<Rule, RuleError> {
        self.validate(&rule)?;
        let mut stored = None;
        self.change(|c| {
            if !c.buses.contains_key(&rule.bus) {
                return Err(RuleError::NotFound(format!(
                    "Event bus {} does not exist.",
                    rule.bus
                )));
            }
            let key = (rule.bus.clone(), rule.name.clone());
            if let Some(old) = c.rules.get(&key) {
                if old.origin != RuleOrigin::Api && rule.origin == RuleOrigin::Api {
                    return Err(RuleError::Conflict(managed_elsewhere(old, "change")));
                }
                if keep_targets {
                    rule.targets = old.targets.clone();
                }
            }
            stored = Some(rule.clone());
            c.rules.insert(key, rule);
            Ok(())
        })?;
        Ok(stored.expect("set by the change"))
    }

    /// Loads rules that were already validated and stored (at start-up).
    pub fn load(&self, rules: Vec<Rule>, buses: Vec<BusInfo>) {
        let _ = self.change(|c| {
            for b in buses {
                c.buses.insert(b.name.clone(), b);
            }
            for r in rules {
                c.rules.insert((r.bus.clone(), r.name.clone()), r);
            }
            Ok(())
        });
    }

    /// Makes the rules managed by schedules exactly `rules` (the schedules
    /// whose target is a plugin, after a change of schedules).
    pub fn replace_managed(&self, rules: Vec<Rule>) -> Result<(), RuleError> {
        for r in &rules {
            self.validate(r)?;
        }
        let wanted: BTreeMap<(String, String), Rule> = rules
            .into_iter()
            .map(|r| ((r.bus.clone(), r.name.clone()), r))
            .collect();
        let current: BTreeMap<(String, String), Rule> = self
            .current
            .load()
            .rules
            .iter()
            .filter(|(_, r)| r.origin == RuleOrigin::Schedule)
            .map(|(k, r)| (k.clone(), r.clone()))
            .collect();
        // Most reloads change nothing here: skip recompiling the matchers then.
        if current == wanted {
            return Ok(());
        }
        self.change(|c| {
            c.rules.retain(|_, r| r.origin != RuleOrigin::Schedule);
            for (key, rule) in wanted {
                if c.rules.contains_key(&key) {
                    return Err(RuleError::Conflict(format!(
                        "rule {} already exists, so the schedule's rule of that name cannot be made; rename the schedule or the rule",
                        rule.name
                    )));
                }
                c.rules.insert(key, rule);
            }
            Ok(())
        })
    }

    /// Replaces every rule that came from the config file with `rules` (a reload).
    pub fn replace_config(&self, rules: Vec<Rule>, buses: Vec<BusInfo>) -> Result<(), RuleError> {
        for r in &rules {
            self.validate(r)?;
        }
        self.change(|c| {
            c.rules.retain(|_, r| r.origin != RuleOrigin::Config);
            for b in buses {
                c.buses.entry(b.name.clone()).or_insert(b);
            }
            for mut r in rules {
                r.origin = RuleOrigin::Config;
                if !c.buses.contains_key(&r.bus) {
                    return Err(RuleError::NotFound(format!(
                        "rule {} is on bus {}, which the config file does not define",
                        r.name, r.bus
                    )));
                }
                c.rules.insert((r.bus.clone(), r.name.clone()), r);
            }
            Ok(())
        })
    }

    pub fn remove(&self, bus: &str, name: &str) -> Result<Rule, RuleError> {
        let mut removed = None;
        self.change(|c| {
            let key = (bus.to_string(), name.to_string());
            match c.rules.get(&key) {
                None => Err(RuleError::NotFound(format!(
                    "Rule {name} does not exist on EventBus {bus}."
                ))),
                Some(r) if r.origin != RuleOrigin::Api => {
                    Err(RuleError::Conflict(managed_elsewhere(r, "remove")))
                }
                Some(_) => {
                    removed = c.rules.remove(&key);
                    Ok(())
                }
            }
        })?;
        Ok(removed.expect("set by the change"))
    }

    /// Applies `f` to a stored rule (targets, state) and returns the result.
    pub fn update(
        &self,
        bus: &str,
        name: &str,
        f: impl FnOnce(&mut Rule) -> Result<(), RuleError>,
    ) -> Result<Rule, RuleError> {
        let mut out = None;
        self.change(|c| {
            let key = (bus.to_string(), name.to_string());
            let Some(rule) = c.rules.get_mut(&key) else {
                return Err(RuleError::NotFound(format!(
                    "Rule {name} does not exist on EventBus {bus}."
                )));
            };
            let mut edited = rule.clone();
            f(&mut edited)?;
            self.validate(&edited)?;
            *rule = edited.clone();
            out = Some(edited);
            Ok(())
        })?;
        Ok(out.expect("set by the change"))
    }

    pub fn get(&self, bus: &str, name: &str) -> Option<Rule> {
        self.current
            .load()
            .rules
            .get(&(bus.to_string(), name.to_string()))
            .cloned()
    }

    pub fn put_bus(&self, info: BusInfo) -> Result<(), RuleError> {
        crate::event::validate_bus_name(&info.name).map_err(|e| RuleError::Invalid(e.message))?;
        self.change(|c| {
            // The same bus again is no change: on a shared store this node's own write
            // comes back through the watch, possibly before the writer applies it.
            if c.buses.get(&info.name) == Some(&info) {
                return Ok(());
            }
            if c.buses.contains_key(&info.name) {
                return Err(RuleError::Conflict(format!(
                    "Event bus {} already exists.",
                    info.name
                )));
            }
            c.buses.insert(info.name.clone(), info);
            Ok(())
        })
    }

    pub fn remove_bus(&self, name: &str) -> Result<(), RuleError> {
        self.change(|c| {
            check_bus_removal(c, name)?;
            c.buses.remove(name);
            Ok(())
        })
    }

    /// Why [`RuleSet::remove_bus`] would refuse `name` now, if it would: checked
    /// before the store is written, so a refused delete writes nothing.
    pub fn check_remove_bus(&self, name: &str) -> Result<(), RuleError> {
        check_bus_removal(&self.current.load(), name)
    }

    pub fn has_bus(&self, name: &str) -> bool {
        self.current.load().buses.contains_key(name)
    }

    /// The rule and target behind a queue key, as configured now.
    pub fn target(&self, queue: &str) -> Option<(Rule, Target)> {
        self.current.load().targets.get(queue).cloned()
    }
}

/// Why a rule the API did not make cannot be changed through it.
pub fn managed_elsewhere(rule: &Rule, verb: &str) -> String {
    match rule.origin {
        RuleOrigin::Config => format!(
            "rule {} is defined in the config file; {verb} it there",
            rule.name
        ),
        _ => format!(
            "rule {} belongs to a schedule of the Scheduler API; {verb} the schedule instead",
            rule.name
        ),
    }
}

fn default_bus() -> BusInfo {
    BusInfo {
        name: DEFAULT_BUS.into(),
        description: Some("The default event bus".into()),
        created: crate::event::now_rfc3339(),
        tags: Default::default(),
    }
}

fn check_bus_removal(c: &Compiled, name: &str) -> Result<(), RuleError> {
    if name == DEFAULT_BUS {
        return Err(RuleError::Invalid(
            "Cannot delete event bus default.".into(),
        ));
    }
    if !c.buses.contains_key(name) {
        return Err(RuleError::NotFound(format!(
            "Event bus {name} does not exist."
        )));
    }
    if c.rules.keys().any(|(b, _)| b == name) {
        return Err(RuleError::Conflict(format!(
            "Event bus {name} still has rules; delete them first."
        )));
    }
    Ok(())
}

impl RuleSet {
    /// The routes of an event: one per target of every enabled rule it matches,
    /// kept to the rules in `only` when given (a replay to named rules). `json` is
    /// the event as serialized for the store (`serde_json::to_vec(event)`): the
    /// matcher scans those bytes instead of building a JSON tree. This is the one
    /// match an event gets (see `crate::publish`); [`RuleSet::match_count`] counts them.
    pub fn route(&self, event: &Event, json: &[u8], only: Option<&[String]>) -> Routing {
        self.matched
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        metrics::counter!("busbar_events_routed_total").increment(1);
        let mut out = Routing::default();
        let c = self.current.load();
        let Some(m) = c.matchers.get(&event.bus) else {
            return out;
        };
        // The bytes are serde_json's own output of an event validated at ingest,
        // so the matcher may pass over what no rule reads without validating it.
        let mut ids = m.matcher.matches_trusted(json);
        ids.sort_unstable();
        metrics::counter!("busbar_matches_total").increment(ids.len() as u64);
        for i in ids {
            let name = &m.names[i];
            if only.is_some_and(|only| !only.iter().any(|o| **o == **name)) {
                continue;
            }
            out.rules.push(name.clone());
            out.routes.extend(m.routes[i].iter().cloned());
        }
        out
    }

    /// The routes of a scheduled rule's tick: every target of that one rule
    /// when it is enabled, nothing otherwise. No pattern is matched.
    pub fn route_to_rule(&self, bus: &str, name: &str) -> Routing {
        metrics::counter!("busbar_events_routed_total").increment(1);
        let c = self.current.load();
        let Some(rule) = c
            .rules
            .get(&(bus.to_string(), name.to_string()))
            .filter(|r| r.state == RuleState::Enabled)
        else {
            return Routing::default();
        };
        Routing {
            rules: vec![Arc::from(name)],
            routes: rule
                .targets
                .iter()
                .map(|t| Route {
                    rule: name.to_string(),
                    target: t.id.clone(),
                    plugin: t.plugin.clone(),
                })
                .collect(),
        }
    }

    /// Events routed so far (calls of [`RuleSet::route`]).
    pub fn match_count(&self) -> u64 {
        self.matched.load(std::sync::atomic::Ordering::Relaxed)
    }
}
