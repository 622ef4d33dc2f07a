//! The embedded bus: one redb file in the data directory, one node.
//!
//! Writes go through a single committer thread. It takes every publish and
//! settle waiting in its channel, applies them in ONE write transaction, fsyncs
//! once, and only then answers the callers (group commit). Under load, many
//! HTTP requests and many finished deliveries share one fsync, which is what
//! makes durable ingest fast; with one caller it costs one fsync, as it must.
//!
//! Delivery queues are mirrored in memory (the table is the truth, read back
//! at start-up), so handing out a delivery never touches the disk.
//!
//! This file holds the store's tables and records, its settings, and opening
//! and closing it; the [`Bus`] methods delegate to one file per job:
//! `commit.rs` (the committer thread: publish and settle in group commits),
//! `queues.rs` (the in-memory queue mirror: take, stats, forget),
//! `recover.rs` (reading the store back at open), `rules.rs` (API rules and
//! buses), `dead.rs` (dead letters), `archive.rs` (archive pages and expiry)
//! and `kv.rs` (plugin state, [`RedbKv`], in the same file).

mod archive;
mod commit;
mod dead;
mod kv;
mod queues;
mod recover;
mod rules;
#[cfg(test)]
mod testing;

pub use kv::RedbKv;

use super::*;
use crate::rules::BusInfo;
use dashmap::DashMap;
use redb::{Database, TableDefinition};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;

// The tables of the store's file; plugin kv keeps its own (`kv.rs`).

/// Archived events by (time received in ms, sequence number). The key leads with
/// the time, so a `since`/`until` query is a range scan and a cursor (the key of the
/// last event a page read) resumes with one seek; no separate time index is needed.
const EVENTS: TableDefinition<(u64, u64), &[u8]> = TableDefinition::new("events");
/// Pending deliveries by (queue key, sequence number).
const QUEUE: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("deliveries");
const DEAD: TableDefinition<u64, &[u8]> = TableDefinition::new("dead_letters");
/// Rules by "bus/name".
const RULES: TableDefinition<&str, &[u8]> = TableDefinition::new("rules");
const BUSES: TableDefinition<&str, &[u8]> = TableDefinition::new("buses");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// Reads a stored JSON record.
fn json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, BusError> {
    serde_json::from_slice(bytes).map_err(|e| BusError::Store(format!("unreadable record: {e}")))
}

/// Writes a JSON record.
fn to_json<T: Serialize>(v: &T) -> Result<Vec<u8>, BusError> {
    serde_json::to_vec(v).map_err(|e| BusError::Store(e.to_string()))
}

/// Settings of the embedded store.
#[derive(Debug, Clone)]
pub struct EmbeddedConfig {
    /// The redb file (shared with plugin kv).
    pub path: PathBuf,
    /// A publish that would push one queue past this many waiting deliveries is throttled.
    pub max_queue_backlog: usize,
    /// The same bound over all queues together.
    pub max_total_backlog: usize,
    /// At most this many operations share one commit.
    pub max_batch: usize,
    /// redb's page cache, in bytes.
    pub cache_bytes: usize,
    /// Due times and queue ages are read on this clock (a test may advance it).
    pub clock: Arc<crate::clock::Clock>,
}

impl EmbeddedConfig {
    pub fn new(data_dir: &Path) -> Self {
        EmbeddedConfig {
            path: data_dir.join("busbar.redb"),
            max_queue_backlog: 100_000,
            max_total_backlog: 1_000_000,
            max_batch: 4096,
            cache_bytes: 256 << 20,
            clock: Default::default(),
        }
    }
}

struct Inner {
    db: Arc<Database>,
    config: EmbeddedConfig,
    queues: DashMap<String, Arc<queues::Queue>>,
    total_backlog: AtomicUsize,
    dead_count: AtomicUsize,
    seq: AtomicU64,
    closed: AtomicBool,
    kv: Arc<dyn crate::runtime::KvBackend>,
    /// Archive scans running at once (see [`archive_scan_slots`]).
    archive_scans: tokio::sync::Semaphore,
    observer: std::sync::OnceLock<Arc<dyn CommitObserver>>,
}

impl Inner {
    /// The next number of the store's one sequence (deliveries, archived events
    /// and dead letters share it); META persists it with every commit.
    fn next_seq(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::SeqCst) + 1
    }
}

/// The single-node bus on redb.
pub struct EmbeddedBus {
    inner: Arc<Inner>,
    /// `None` only while dropping: closing the channel is what stops the committer.
    ops: Option<mpsc::SyncSender<commit::Op>>,
    committer: Option<std::thread::JoinHandle<()>>,
}

impl Drop for EmbeddedBus {
    /// Lets the committer finish the batch in hand and release the file, so the
    /// same store can be opened again in this process (tests, restarts).
    fn drop(&mut self) {
        self.close();
        drop(self.ops.take());
        if let Some(t) = self.committer.take() {
            let _ = t.join();
        }
    }
}

impl EmbeddedBus {
    /// Opens (or creates) the store and starts its committer thread.
    pub fn open(config: EmbeddedConfig) -> Result<Arc<Self>, BusError> {
        if let Some(dir) = config.path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| BusError::Store(format!("cannot create {}: {e}", dir.display())))?;
        }
        let db = Arc::new(
            Database::builder()
                .set_cache_size(config.cache_bytes)
                .create(&config.path)
                .map_err(|e| {
                    BusError::Store(format!("cannot open store {}: {e}", config.path.display()))
                })?,
        );
        let kv: Arc<dyn crate::runtime::KvBackend> =
            Arc::new(RedbKv::new(db.clone()).map_err(|e| BusError::Store(e.to_string()))?);
        let inner = Arc::new(Inner {
            db,
            config,
            queues: DashMap::new(),
            total_backlog: AtomicUsize::new(0),
            dead_count: AtomicUsize::new(0),
            seq: AtomicU64::new(0),
            closed: AtomicBool::new(false),
            kv,
            archive_scans: tokio::sync::Semaphore::new(archive_scan_slots()),
            observer: std::sync::OnceLock::new(),
        });
        inner.recover()?;
        // Bounded, so a stalled disk pushes back on callers instead of queueing without limit.
        let (ops, rx) = mpsc::sync_channel(16_384);
        let committer = inner.clone();
        let committer = std::thread::Builder::new()
            .name("busbar-commit".into())
            .spawn(move || committer.commit_loop(rx))
            .map_err(|e| BusError::Store(format!("cannot start the committer thread: {e}")))?;
        Ok(Arc::new(EmbeddedBus {
            inner,
            ops: Some(ops),
            committer: Some(committer),
        }))
    }

    /// The underlying database, for components that keep their own tables in the same file.
    pub fn database(&self) -> Arc<Database> {
        self.inner.db.clone()
    }

    /// Runs blocking store work off the async workers.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Inner) -> Result<T, BusError> + Send + 'static,
    ) -> Result<T, BusError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || f(&inner))
            .await
            .map_err(|e| BusError::Store(format!("store task failed: {e}")))?
    }
}

#[async_trait]
impl Bus for EmbeddedBus {
    async fn publish(
        &self,
        events: Vec<RoutedEvent>,
    ) -> Result<Vec<Result<(), PublishError>>, BusError> {
        commit::publish(self, events).await
    }

    async fn take(&self, key: &str) -> Option<Delivery> {
        queues::take(&self.inner, key, 1).await.pop()
    }

    async fn take_batch(&self, key: &str, max: usize) -> Vec<Delivery> {
        queues::take(&self.inner, key, max).await
    }

    async fn settle(&self, delivery: Delivery, outcome: Settle) -> Result<(), BusError> {
        commit::settle(self, vec![(delivery, outcome)]).await
    }

    async fn settle_batch(&self, settles: Vec<(Delivery, Settle)>) -> Result<(), BusError> {
        commit::settle(self, settles).await
    }

    fn queue_stats(&self) -> Vec<QueueStats> {
        queues::stats(&self.inner)
    }

    async fn forget_queue(&self, queue: &str) {
        queues::forget(&self.inner, queue)
    }

    async fn put_rule(&self, rule: &Rule) -> Result<(), BusError> {
        rules::put_rule(self, rule).await
    }

    async fn delete_rule(&self, bus: &str, name: &str) -> Result<bool, BusError> {
        rules::delete_rule(self, bus, name).await
    }

    async fn rules(&self) -> Result<Vec<Rule>, BusError> {
        rules::rules(self).await
    }

    async fn put_bus(&self, bus: &BusInfo) -> Result<(), BusError> {
        rules::put_bus(self, bus).await
    }

    async fn delete_bus(&self, name: &str) -> Result<bool, BusError> {
        rules::delete_bus(self, name).await
    }

    async fn buses(&self) -> Result<Vec<BusInfo>, BusError> {
        rules::buses(self).await
    }

    async fn dead_letters(&self, after: u64, limit: usize) -> Result<Vec<DeadLetter>, BusError> {
        dead::list(self, after, limit).await
    }

    async fn dead_letter(&self, id: u64) -> Result<Option<DeadLetter>, BusError> {
        dead::get(self, id).await
    }

    async fn redrive(&self, ids: Option<&[u64]>) -> Result<usize, BusError> {
        dead::redrive(self, ids).await
    }

    async fn purge_dead_letters(&self, ids: Option<&[u64]>) -> Result<usize, BusError> {
        dead::purge(self, ids).await
    }

    fn dead_letter_count(&self) -> usize {
        self.inner.dead_count.load(Ordering::Relaxed)
    }

    async fn archive(&self, query: ArchiveQuery) -> Result<ArchivePage, BusError> {
        archive::query(self, query).await
    }

    async fn expire_archive(&self, before_ms: i64) -> Result<usize, BusError> {
        archive::expire(self, before_ms).await
    }

    fn observe_commits(&self, observer: Arc<dyn CommitObserver>) {
        set_observer(&self.inner.observer, observer);
    }

    fn kv(&self) -> Arc<dyn crate::runtime::KvBackend> {
        self.inner.kv.clone()
    }

    fn close(&self) {
        self.inner.closed.store(true, Ordering::SeqCst);
        self.inner.wake_takers();
    }
}
