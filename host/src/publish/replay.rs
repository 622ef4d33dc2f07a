//! Replays: archived events of a time range published again, to every rule of
//! their bus or only to named rules. Replayed events carry `replay-name` and are
//! not archived a second time, so a replay never feeds the next one. A replay
//! reads its range a page at a time, following the archive's cursor, so it
//! reaches every event of the range with one page in memory.

use super::{PublishOptions, Publisher};
use crate::bus::{ArchiveFilter, ArchivePages, ArchiveQuery};
use dashmap::DashMap;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Events read from the archive per page, and published together.
const BATCH: usize = 500;

#[derive(Debug, Clone, Deserialize)]
pub struct ReplayRequest {
    pub name: String,
    /// The bus whose archived events are replayed (default: "default").
    #[serde(default)]
    pub bus: Option<String>,
    /// RFC 3339, inclusive; on the time busbar received each event.
    pub since: String,
    /// RFC 3339, inclusive.
    pub until: String,
    /// Only these rules get the replayed events (all rules of the bus when absent).
    #[serde(default)]
    pub rules: Option<Vec<String>>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "lowercase")]
pub enum ReplayState {
    Running,
    Completed,
    Failed,
}

#[derive(Debug, Clone, Serialize)]
pub struct ReplayStatus {
    pub name: String,
    pub bus: String,
    pub since: String,
    pub until: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rules: Option<Vec<String>>,
    pub state: ReplayState,
    pub replayed: usize,
    pub failed: usize,
    pub started_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The replays of this node, running and finished.
pub struct Replays {
    publisher: Arc<Publisher>,
    all: DashMap<String, ReplayStatus>,
}

impl Replays {
    /// Replays read the archive of `publisher`'s store and publish through it.
    pub fn new(publisher: Arc<Publisher>) -> Replays {
        Replays {
            publisher,
            all: DashMap::new(),
        }
    }

    pub fn list(&self) -> Vec<ReplayStatus> {
        let mut v: Vec<_> = self.all.iter().map(|r| r.value().clone()).collect();
        v.sort_by(|a, b| a.started_at.cmp(&b.started_at));
        v
    }

    pub fn get(&self, name: &str) -> Option<ReplayStatus> {
        self.all.get(name).map(|r| r.value().clone())
    }

    /// Checks the request and starts the replay in the background.
    pub fn start(self: &Arc<Self>, req: ReplayRequest) -> Result<ReplayStatus, String> {
        let rule_set = self.publisher.rules();
        if req.name.is_empty()
            || !req
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        {
            return Err(format!(
                "replay name {:?} must be letters, digits and . - _",
                req.name
            ));
        }
        let since = crate::event::parse_time(&req.since)
            .map_err(|e| format!("since {:?} is not an RFC 3339 time: {e}", req.since))?;
        let until = crate::event::parse_time(&req.until)
            .map_err(|e| format!("until {:?} is not an RFC 3339 time: {e}", req.until))?;
        if until < since {
            return Err("until is before since".into());
        }
        let bus = req
            .bus
            .clone()
            .unwrap_or_else(|| crate::event::DEFAULT_BUS.into());
        if !rule_set.has_bus(&bus) {
            return Err(format!("Event bus {bus} does not exist."));
        }
        if let Some(rules) = &req.rules {
            for r in rules {
                if rule_set.get(&bus, r).is_none() {
                    return Err(format!("Rule {r} does not exist on EventBus {bus}."));
                }
            }
        }
        let status = ReplayStatus {
            name: req.name.clone(),
            bus: bus.clone(),
            since: req.since.clone(),
            until: req.until.clone(),
            rules: req.rules.clone(),
            state: ReplayState::Running,
            replayed: 0,
            failed: 0,
            started_at: crate::event::now_rfc3339(),
            finished_at: None,
            error: None,
        };
        match self.all.entry(req.name.clone()) {
            dashmap::Entry::Occupied(_) => {
                return Err(format!("replay {} already exists", req.name));
            }
            dashmap::Entry::Vacant(v) => {
                v.insert(status.clone());
            }
        }
        let me = self.clone();
        let since_ms = (since.unix_timestamp_nanos() / 1_000_000) as i64;
        let until_ms = (until.unix_timestamp_nanos() / 1_000_000) as i64;
        tokio::spawn(async move {
            let result = me.run(&req.name, &bus, since_ms, until_ms, req.rules).await;
            if let Some(mut s) = me.all.get_mut(&req.name) {
                s.finished_at = Some(crate::event::now_rfc3339());
                match result {
                    Ok(()) => s.state = ReplayState::Completed,
                    Err(e) => {
                        s.state = ReplayState::Failed;
                        s.error = Some(e);
                    }
                }
            }
        });
        Ok(status)
    }

    async fn run(
        &self,
        name: &str,
        bus: &str,
        since_ms: i64,
        until_ms: i64,
        rules: Option<Vec<String>>,
    ) -> Result<(), String> {
        let wanted = bus.to_string();
        let filter: ArchiveFilter =
            Arc::new(move |e: &crate::event::Event, _: &[u8]| e.bus == wanted);
        let mut pages = ArchivePages::new(ArchiveQuery {
            since_ms: Some(since_ms),
            until_ms: Some(until_ms),
            ..ArchiveQuery::new(BATCH, filter)
        });
        let bus = self.publisher.bus();
        while let Some(events) = pages.next(&**bus).await.map_err(|e| e.to_string())? {
            if events.is_empty() {
                continue;
            }
            let batch: Vec<_> = events
                .into_iter()
                .map(|mut e| {
                    e.replay_name = Some(name.to_string());
                    e
                })
                .collect();
            let options = PublishOptions {
                skip_archive: true,
                only_rules: rules.clone(),
                ..Default::default()
            };
            let results = self.publisher.publish(batch, &options).await;
            let ok = results.iter().filter(|r| r.is_ok()).count();
            if let Some(mut s) = self.all.get_mut(name) {
                s.replayed += ok;
                s.failed += results.len() - ok;
            }
        }
        Ok(())
    }
}
