//! What busbar remembers of each schedule between fires: the next scheduled
//! time, when it is due (the scheduled time plus its flexible-window offset),
//! the last fire and its outcome, and the claim of the node firing it now.
//!
//! One JSON value per schedule in the kv store (namespace [`NAMESPACE`]),
//! written only by compare-and-swap: on JetStream every node races for the
//! same key and exactly one wins each tick; on redb the swap is one write
//! transaction. Plugins cannot reach it: their namespace is their name, and a
//! plugin name cannot contain ':'.

use crate::runtime::{KvBackend, KvError};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// The kv namespace of schedule state.
pub const NAMESPACE: &str = "busbar:schedules";

/// How long a node's claim on a tick holds: the time another node waits
/// before it takes over a tick whose firing node went silent.
pub const CLAIM_MS: i64 = 5_000;

/// The stored state of one schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FireState {
    /// The schedule's timing as of this state (see `Job::fingerprint`): a
    /// changed expression, zone or window starts the clock again.
    pub fingerprint: String,
    /// Where a rate counts from.
    pub anchor_ms: i64,
    /// The next scheduled time (the event's `time`); `None` once the schedule is over.
    pub next_ms: Option<i64>,
    /// When the next fire is due: `next_ms` plus its offset in the flexible window.
    pub due_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last: Option<LastFire>,
    /// Fires so far.
    #[serde(default)]
    pub fires: u64,
    /// Scheduled times that passed while no node was running them and were
    /// folded into one late fire.
    #[serde(default)]
    pub missed: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim: Option<Claim>,
}

/// The most recent fire.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LastFire {
    /// Its scheduled time.
    pub scheduled_ms: i64,
    /// When it was fired (the node's clock).
    pub fired_ms: i64,
    /// `ok`, or why the event could not be published.
    pub outcome: String,
    /// The node that fired it.
    pub node: String,
}

/// A node's hold on the tick it is firing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Claim {
    pub node: String,
    pub until_ms: i64,
}

/// The state store: a thin typed layer over the kv seam, run off the async
/// workers because the seam blocks (redb commits, JetStream round trips).
#[derive(Clone)]
pub struct StateStore {
    kv: Arc<dyn KvBackend>,
}

/// A state as read, with the exact bytes a swap must expect.
pub struct Read {
    pub raw: Option<Vec<u8>>,
    pub state: Option<FireState>,
}

impl StateStore {
    pub fn new(kv: Arc<dyn KvBackend>) -> StateStore {
        StateStore { kv }
    }

    pub async fn read(&self, id: &str) -> Result<Read, KvError> {
        let kv = self.kv.clone();
        let key = id.to_string();
        let raw = blocking(move || kv.get(NAMESPACE, &key)).await?;
        // A value that no longer parses (an older format) is treated as absent:
        // the schedule starts its clock again rather than stopping.
        let state = raw
            .as_deref()
            .and_then(|b| serde_json::from_slice::<FireState>(b).ok());
        Ok(Read { raw, state })
    }

    /// Writes `new` if the stored bytes are still `expected`; false when another
    /// writer got there first. Returns the bytes written on success.
    pub async fn swap(
        &self,
        id: &str,
        expected: Option<Vec<u8>>,
        new: &FireState,
    ) -> Result<Option<Vec<u8>>, KvError> {
        let kv = self.kv.clone();
        let key = id.to_string();
        let bytes = serde_json::to_vec(new).map_err(|e| KvError::Store(e.to_string()))?;
        let written = bytes.clone();
        let ok =
            blocking(move || kv.compare_and_swap(NAMESPACE, &key, expected.as_deref(), &bytes))
                .await?;
        Ok(ok.then_some(written))
    }

    pub async fn delete(&self, id: &str) -> Result<(), KvError> {
        let kv = self.kv.clone();
        let key = id.to_string();
        blocking(move || kv.delete(NAMESPACE, &key).map(|_| ())).await
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, KvError> + Send + 'static,
) -> Result<T, KvError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| KvError::Store(format!("schedule state task: {e}")))?
}
