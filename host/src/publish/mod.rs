//! The one way an event becomes durable: check its bus, serialize it once,
//! route it once against the rules of its bus, and append it with its routes to
//! the store in one commit.
//!
//! Every event comes through here: those clients publish (ingest), busbar's own
//! metrics, replays, and the events handlers return (dispatch, appended with the
//! ack). So each event is matched exactly once, and the store, the tail and the
//! spans all see the routes that were committed.

pub mod replay;

use crate::bus::{Bus, PublishError, RoutedEvent};
use crate::event::Event;
use crate::rules::RuleSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Options of one publish call.
#[derive(Debug, Clone, Default)]
pub struct PublishOptions {
    /// Replays set this: such events are not archived again.
    pub skip_archive: bool,
    /// Route only to these rules (a replay to named rules).
    pub only_rules: Option<Vec<String>>,
    /// Route to this one rule's targets without matching: a scheduled rule's tick.
    pub to_rule: Option<String>,
}

/// Serializes `event` once and routes it on those bytes. Replayed events are in
/// the archive already, so they are never archived again.
pub fn route(
    rules: &RuleSet,
    event: Event,
    options: &PublishOptions,
) -> Result<RoutedEvent, PublishError> {
    let json = serde_json::to_vec(&event)
        .map_err(|e| PublishError::Store(format!("event {}: {e}", event.id)))?;
    let routing = match &options.to_rule {
        Some(name) => rules.route_to_rule(&event.bus, name),
        None => rules.route(&event, &json, options.only_rules.as_deref()),
    };
    let archive = !options.skip_archive && event.replay_name.is_none();
    Ok(RoutedEvent {
        event,
        json,
        routes: routing.routes,
        rules: routing.rules,
        archive,
    })
}

/// Publishes events for a node: the bus check, [`route`], then one append.
pub struct Publisher {
    rules: Arc<RuleSet>,
    bus: Arc<dyn Bus>,
    /// Events made durable through this publisher, for the console's plots.
    published: AtomicU64,
}

impl Publisher {
    pub fn new(rules: Arc<RuleSet>, bus: Arc<dyn Bus>) -> Publisher {
        Publisher {
            rules,
            bus,
            published: AtomicU64::new(0),
        }
    }

    /// How many events this publisher has made durable since the node started.
    pub fn published_total(&self) -> u64 {
        self.published.load(Ordering::Relaxed)
    }

    /// The rules events are routed by.
    pub fn rules(&self) -> &Arc<RuleSet> {
        &self.rules
    }

    /// The store events are appended to.
    pub fn bus(&self) -> &Arc<dyn Bus> {
        &self.bus
    }

    /// Publishes validated events: for each, in order, the rules it was routed to
    /// once it is durable, or why it was refused.
    pub async fn publish(
        &self,
        events: Vec<Event>,
        options: &PublishOptions,
    ) -> Vec<Result<Vec<Arc<str>>, PublishError>> {
        let n = events.len();
        let mut results: Vec<Option<Result<Vec<Arc<str>>, PublishError>>> = vec![None; n];
        let mut routed = Vec::with_capacity(n);
        let mut slots = Vec::with_capacity(n);
        for (i, e) in events.into_iter().enumerate() {
            // Events for unknown buses are refused one by one; the rest go in one commit.
            if !self.rules.has_bus(&e.bus) {
                results[i] = Some(Err(PublishError::NoSuchBus(format!(
                    "Event bus {} does not exist.",
                    e.bus
                ))));
                continue;
            }
            match route(&self.rules, e, options) {
                Ok(r) => {
                    slots.push(i);
                    routed.push(r);
                }
                Err(err) => results[i] = Some(Err(err)),
            }
        }
        let rules: Vec<Vec<Arc<str>>> = routed.iter().map(|r| r.rules.clone()).collect();
        if !routed.is_empty() {
            match self.bus.publish(routed).await {
                Ok(out) => {
                    let durable = out.iter().filter(|r| r.is_ok()).count();
                    self.published.fetch_add(durable as u64, Ordering::Relaxed);
                    for ((slot, r), names) in slots.iter().zip(out).zip(rules) {
                        results[*slot] = Some(r.map(|()| names));
                    }
                }
                Err(e) => {
                    for slot in &slots {
                        results[*slot] = Some(Err(PublishError::Store(e.to_string())));
                    }
                }
            }
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(PublishError::Store("not processed".into()))))
            .collect()
    }
}
