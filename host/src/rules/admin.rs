//! Rule and bus changes made through the API: validate, persist, then apply,
//! so the store and the live rule set agree. A refused change writes nothing;
//! a failed write leaves the live set as the store has it.
//!
//! The store is reached through [`RuleStore`], the rule set's own small seam,
//! so `rules` knows nothing of the bus that implements it.

use super::{BusInfo, Rule, RuleError, RuleOrigin, RuleSet, RuleState, Target};
use async_trait::async_trait;
use std::sync::Arc;

/// Where API rules and buses are persisted (the bus implements it).
#[async_trait]
pub trait RuleStore: Send + Sync + 'static {
    async fn put_rule(&self, rule: &Rule) -> Result<(), StoreError>;
    /// True when the rule existed.
    async fn delete_rule(&self, bus: &str, name: &str) -> Result<bool, StoreError>;
    async fn put_bus(&self, bus: &BusInfo) -> Result<(), StoreError>;
    /// True when the bus existed.
    async fn delete_bus(&self, name: &str) -> Result<bool, StoreError>;
}

/// The store failed; its message says how.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StoreError(pub String);

/// A rule-changing call failed: either the request was wrong or the store was.
#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    #[error(transparent)]
    Rule(#[from] RuleError),
    #[error("store error: {0}")]
    Store(#[from] StoreError),
}

/// Changes the live rule set and its store together.
pub struct RuleAdmin {
    set: Arc<RuleSet>,
    store: Arc<dyn RuleStore>,
}

impl RuleAdmin {
    pub fn new(set: Arc<RuleSet>, store: Arc<dyn RuleStore>) -> RuleAdmin {
        RuleAdmin { set, store }
    }

    pub async fn put_rule(&self, mut rule: Rule, keep_targets: bool) -> Result<Rule, ChangeError> {
        rule.origin = RuleOrigin::Api;
        if keep_targets && let Some(old) = self.set.get(&rule.bus, &rule.name) {
            rule.targets = old.targets;
        }
        self.set.validate(&rule)?;
        if !self.set.has_bus(&rule.bus) {
            return Err(
                RuleError::NotFound(format!("Event bus {} does not exist.", rule.bus)).into(),
            );
        }
        if let Some(old) = self.set.get(&rule.bus, &rule.name)
            && old.origin != RuleOrigin::Api
        {
            return Err(RuleError::Conflict(super::set::managed_elsewhere(&old, "change")).into());
        }
        self.store.put_rule(&rule).await?;
        Ok(self.set.put(rule, false)?)
    }

    pub async fn delete_rule(&self, bus: &str, name: &str) -> Result<(), ChangeError> {
        match self.set.get(bus, name) {
            None => {
                return Err(RuleError::NotFound(format!(
                    "Rule {name} does not exist on EventBus {bus}."
                ))
                .into());
            }
            Some(r) if r.origin != RuleOrigin::Api => {
                return Err(
                    RuleError::Conflict(super::set::managed_elsewhere(&r, "remove")).into(),
                );
            }
            Some(r) if !r.targets.is_empty() => {
                return Err(RuleError::Conflict(format!(
                    "Rule can't be deleted since it has targets. Remove the targets of rule {name} first."
                ))
                .into());
            }
            Some(_) => {}
        }
        // Persist, then apply: a failed write leaves the live rule as the store has it.
        self.store.delete_rule(bus, name).await?;
        already_applied(self.set.remove(bus, name).map(|_| ()))
    }

    /// Edits a stored API rule (targets, state) and persists the result.
    pub async fn edit_rule(
        &self,
        bus: &str,
        name: &str,
        f: impl FnOnce(&mut Rule) -> Result<(), RuleError>,
    ) -> Result<Rule, ChangeError> {
        let Some(mut rule) = self.set.get(bus, name) else {
            return Err(RuleError::NotFound(format!(
                "Rule {name} does not exist on EventBus {bus}."
            ))
            .into());
        };
        if rule.origin != RuleOrigin::Api {
            return Err(RuleError::Conflict(super::set::managed_elsewhere(&rule, "change")).into());
        }
        f(&mut rule)?;
        self.set.validate(&rule)?;
        self.store.put_rule(&rule).await?;
        Ok(self.set.put(rule, false)?)
    }

    pub async fn set_rule_state(
        &self,
        bus: &str,
        name: &str,
        state: RuleState,
    ) -> Result<Rule, ChangeError> {
        self.edit_rule(bus, name, |r| {
            r.state = state;
            Ok(())
        })
        .await
    }

    /// Adds or replaces targets by id (PutTargets); returns per-target failures.
    pub async fn put_targets(
        &self,
        bus: &str,
        name: &str,
        targets: Vec<Target>,
    ) -> Result<Rule, ChangeError> {
        self.edit_rule(bus, name, |r| {
            if r.targets.len()
                + targets
                    .iter()
                    .filter(|t| !r.targets.iter().any(|o| o.id == t.id))
                    .count()
                > 5
            {
                return Err(RuleError::Invalid(format!(
                    "rule {name} would have more than 5 targets"
                )));
            }
            for t in targets {
                match r.targets.iter_mut().find(|o| o.id == t.id) {
                    Some(slot) => *slot = t,
                    None => r.targets.push(t),
                }
            }
            Ok(())
        })
        .await
    }

    pub async fn remove_targets(
        &self,
        bus: &str,
        name: &str,
        ids: &[String],
    ) -> Result<Rule, ChangeError> {
        self.edit_rule(bus, name, |r| {
            r.targets.retain(|t| !ids.contains(&t.id));
            Ok(())
        })
        .await
    }

    pub async fn create_bus(
        &self,
        name: &str,
        description: Option<String>,
    ) -> Result<BusInfo, ChangeError> {
        let info = BusInfo {
            name: name.to_string(),
            description,
            created: crate::event::now_rfc3339(),
            tags: Default::default(),
        };
        if self.set.has_bus(name) {
            return Err(RuleError::Conflict(format!("Event bus {name} already exists.")).into());
        }
        crate::event::validate_bus_name(name).map_err(|e| RuleError::Invalid(e.message))?;
        self.store.put_bus(&info).await?;
        self.set.put_bus(info.clone())?;
        Ok(info)
    }

    pub async fn delete_bus(&self, name: &str) -> Result<(), ChangeError> {
        // Validate, persist, then apply, as every rule change does.
        self.set.check_remove_bus(name)?;
        self.store.delete_bus(name).await?;
        already_applied(self.set.remove_bus(name))
    }
}

/// A removal that finds nothing to remove after its write succeeded was applied
/// already: on a shared store the write comes back through the watch of stored
/// rules, which may apply it before the writer does.
fn already_applied(r: Result<(), RuleError>) -> Result<(), ChangeError> {
    match r {
        Err(RuleError::NotFound(_)) => Ok(()),
        r => Ok(r?),
    }
}
