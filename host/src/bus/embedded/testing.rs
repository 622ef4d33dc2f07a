//! Helpers shared by the embedded store's unit tests: a store in a temporary
//! directory, events, and routing by source in place of real rules.

use super::*;
use crate::event::{EventInput, EventLimits};
use serde_json::json;
use std::time::Duration;

/// Routes every event whose source starts with "to-" to one target named after
/// the rest (what `crate::publish` does with real rules, above the store).
pub(super) fn by_source(events: Vec<Event>) -> Vec<RoutedEvent> {
    events
        .into_iter()
        .map(|e| {
            let routes = match e.source.strip_prefix("to-") {
                Some(t) => vec![Route {
                    rule: "r".into(),
                    target: t.into(),
                    plugin: t.into(),
                }],
                None => vec![],
            };
            RoutedEvent {
                json: serde_json::to_vec(&e).unwrap(),
                archive: e.replay_name.is_none(),
                event: e,
                rules: routes.iter().map(|r| r.rule.as_str().into()).collect(),
                routes,
            }
        })
        .collect()
}

pub(super) fn event(source: &str) -> Event {
    EventInput::from_json(json!({"source": source, "detail-type": "t", "detail": {"n": 1}}))
        .unwrap()
        .into_event(&EventLimits::default())
        .unwrap()
}

pub(super) fn open(dir: &Path) -> Arc<EmbeddedBus> {
    EmbeddedBus::open(EmbeddedConfig::new(dir)).unwrap()
}

pub(super) async fn take(bus: &EmbeddedBus, q: &str) -> Delivery {
    tokio::time::timeout(Duration::from_secs(5), bus.take(q))
        .await
        .expect("a delivery within 5 s")
        .expect("bus open")
}

/// An archive filter that takes every event.
pub(super) fn all() -> ArchiveFilter {
    Arc::new(|_: &Event, _: &[u8]| true)
}
