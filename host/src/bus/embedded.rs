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

use super::*;
use crate::rules::BusInfo;
use dashmap::DashMap;
use parking_lot::Mutex;
use redb::{Database, ReadableTable, ReadableTableMetadata, TableDefinition};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use tokio::sync::{Notify, oneshot};

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

type PublishReply = oneshot::Sender<Result<Vec<Result<(), PublishError>>, BusError>>;

enum Op {
    Publish {
        events: Vec<Prepared>,
        reply: PublishReply,
    },
    Settle {
        delivery: Box<Delivery>,
        /// With an `Ack`, its `new_events` are moved, prepared, into `outputs`.
        outcome: Settle,
        outputs: Vec<Prepared>,
        reply: oneshot::Sender<Result<(), BusError>>,
    },
}

/// An event made ready for its commit by the caller, off the committer thread:
/// serialized once, routed on those bytes, its delivery records written. The
/// committer is the one serial step of the store, so it only checks bounds and
/// inserts bytes.
struct Prepared {
    /// The event as archived (when `archive`).
    json: Vec<u8>,
    archive: bool,
    /// Each delivery with its stored record.
    deliveries: Vec<(Delivery, Vec<u8>)>,
    /// What the commit observer is told once this is durable (when it watches).
    committed: Option<Committed>,
}

impl Inner {
    fn prepare(&self, routed: RoutedEvent) -> Prepared {
        let committed = Committed::of(self.observer.get(), &routed);
        let RoutedEvent {
            event,
            json,
            routes,
            archive,
            ..
        } = routed;
        let now = self.config.clock.now_ms();
        let mut deliveries = Vec::with_capacity(routes.len());
        for route in routes {
            let d = Delivery {
                id: uuid::Uuid::new_v4().to_string(),
                // Taken before the commit: a commit persists the counter as it stands,
                // which covers every number handed out so far.
                seq: self.next_seq(),
                queue: route.queue_key(&event.bus),
                rule: route.rule,
                target: route.target,
                plugin: route.plugin,
                event: event.clone(),
                attempts: 0,
                created_ms: now,
                due_ms: now,
                last_error: None,
            };
            let record = d.record(&json);
            deliveries.push((d, record));
        }
        Prepared {
            json,
            archive,
            deliveries,
            committed,
        }
    }
}

/// One delivery queue's in-memory mirror.
struct Queue {
    state: Mutex<QueueState>,
    notify: Notify,
}

#[derive(Default)]
struct QueueState {
    /// Waiting deliveries, earliest due first.
    ready: BTreeMap<(i64, u64), Delivery>,
    in_flight: usize,
}

struct Inner {
    db: Arc<Database>,
    config: EmbeddedConfig,
    queues: DashMap<String, Arc<Queue>>,
    total_backlog: AtomicUsize,
    dead_count: AtomicUsize,
    seq: AtomicU64,
    closed: AtomicBool,
    kv: Arc<dyn crate::runtime::KvBackend>,
    /// Archive scans running at once (see [`archive_scan_slots`]).
    archive_scans: tokio::sync::Semaphore,
    observer: std::sync::OnceLock<Arc<dyn CommitObserver>>,
}

/// The single-node bus on redb.
pub struct EmbeddedBus {
    inner: Arc<Inner>,
    /// `None` only while dropping: closing the channel is what stops the committer.
    ops: Option<mpsc::SyncSender<Op>>,
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

/// What a commit changes in memory once it is durable.
enum After {
    /// Reported before the event's deliveries are enqueued (see [`CommitObserver`]).
    Committed(Box<Committed>),
    Enqueue(Box<Delivery>),
    Release(String),
    DeadLettered,
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
        let kv: Arc<dyn crate::runtime::KvBackend> = Arc::new(
            crate::runtime::RedbKv::new(db.clone()).map_err(|e| BusError::Store(e.to_string()))?,
        );
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

    fn send(&self, op: Op) -> Result<(), BusError> {
        match &self.ops {
            Some(ops) => ops.send(op).map_err(|_| BusError::Closed),
            None => Err(BusError::Closed),
        }
    }
}

impl Inner {
    /// Creates the tables, restores the sequence counter and refills the in-memory queues.
    fn recover(&self) -> Result<(), BusError> {
        let tx = self.db.begin_write()?;
        {
            tx.open_table(EVENTS)?;
            tx.open_table(QUEUE)?;
            tx.open_table(DEAD)?;
            tx.open_table(RULES)?;
            tx.open_table(BUSES)?;
            tx.open_table(META)?;
        }
        tx.commit()?;
        let rx = self.db.begin_read()?;
        let meta = rx.open_table(META)?;
        let seq = meta.get("seq")?.map(|v| v.value()).unwrap_or(0);
        self.seq.store(seq, Ordering::SeqCst);
        let dead = rx.open_table(DEAD)?;
        self.dead_count
            .store(dead.len()? as usize, Ordering::SeqCst);
        let queue = rx.open_table(QUEUE)?;
        let mut n = 0;
        for row in queue.iter()? {
            let (_, v) = row?;
            match serde_json::from_slice::<Delivery>(v.value()) {
                Ok(d) => {
                    self.enqueue(d);
                    n += 1;
                }
                Err(e) => tracing::error!(error = %e, "skipping an unreadable delivery record"),
            }
        }
        if n > 0 {
            tracing::info!(
                deliveries = n,
                "recovered pending deliveries from the store"
            );
        }
        Ok(())
    }

    fn queue(&self, key: &str) -> Arc<Queue> {
        if let Some(q) = self.queues.get(key) {
            return q.clone();
        }
        self.queues
            .entry(key.to_string())
            .or_insert_with(|| {
                Arc::new(Queue {
                    state: Mutex::new(QueueState::default()),
                    notify: Notify::new(),
                })
            })
            .clone()
    }

    fn enqueue(&self, d: Delivery) {
        let q = self.queue(&d.queue);
        q.state.lock().ready.insert((d.due_ms, d.seq), d);
        self.total_backlog.fetch_add(1, Ordering::Relaxed);
        q.notify.notify_waiters();
    }

    fn backlog(&self, key: &str) -> usize {
        self.queues
            .get(key)
            .map(|q| q.state.lock().ready.len())
            .unwrap_or(0)
    }

    fn next_seq(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::SeqCst) + 1
    }

    fn commit_loop(self: Arc<Self>, rx: mpsc::Receiver<Op>) {
        while let Ok(first) = rx.recv() {
            let mut batch = vec![first];
            while batch.len() < self.config.max_batch {
                match rx.try_recv() {
                    Ok(op) => batch.push(op),
                    Err(_) => break,
                }
            }
            self.commit_batch(batch);
        }
    }

    fn commit_batch(&self, batch: Vec<Op>) {
        let mut after = Vec::new();
        let mut replies = Vec::with_capacity(batch.len());
        // Only publishes must reach the disk before their callers hear back. A batch
        // of settles alone commits without fsync: if it is lost in a crash, those
        // deliveries are still pending in the table and run again (at least once),
        // and the next durable commit persists it anyway.
        let durable = batch.iter().any(|op| matches!(op, Op::Publish { .. }));
        let result = (|| -> Result<(), BusError> {
            let mut tx = self.db.begin_write()?;
            if !durable {
                tx.set_durability(redb::Durability::None);
            }
            {
                let mut events = tx.open_table(EVENTS)?;
                let mut queue = tx.open_table(QUEUE)?;
                let mut dead = tx.open_table(DEAD)?;
                let mut pending: std::collections::HashMap<String, usize> = Default::default();
                let mut w = Writer {
                    inner: self,
                    events: &mut events,
                    queue: &mut queue,
                    dead: &mut dead,
                    after: &mut after,
                    pending: &mut pending,
                    now: self.config.clock.now_ms(),
                };
                for op in batch {
                    match op {
                        Op::Publish { events, reply } => {
                            let mut results = Vec::with_capacity(events.len());
                            for p in events {
                                results.push(w.publish(p, true)?);
                            }
                            replies.push(Reply::Publish(reply, results));
                        }
                        Op::Settle {
                            delivery,
                            outcome,
                            outputs,
                            reply,
                        } => {
                            w.settle(*delivery, outcome, outputs)?;
                            replies.push(Reply::Settle(reply));
                        }
                    }
                }
            }
            tx.open_table(META)?
                .insert("seq", self.seq.load(Ordering::SeqCst))?;
            tx.commit()?;
            Ok(())
        })();
        match result {
            Ok(()) => {
                for a in after {
                    match a {
                        After::Committed(c) => {
                            if let Some(o) = self.observer.get() {
                                o.committed(*c);
                            }
                        }
                        After::Enqueue(d) => self.enqueue(*d),
                        After::Release(key) => {
                            let q = self.queue(&key);
                            let mut st = q.state.lock();
                            st.in_flight = st.in_flight.saturating_sub(1);
                        }
                        After::DeadLettered => {
                            self.dead_count.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                for r in replies {
                    match r {
                        Reply::Publish(tx, results) => drop(tx.send(Ok(results))),
                        Reply::Settle(tx) => drop(tx.send(Ok(()))),
                    }
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "commit failed; the callers in this batch get the error");
                // Replies of ops applied before the failure are collected; ops after it
                // were dropped with their reply senders, which their callers see as an error.
                for r in replies {
                    match r {
                        Reply::Publish(tx, _) => drop(tx.send(Err(BusError::Store(e.to_string())))),
                        Reply::Settle(tx) => drop(tx.send(Err(BusError::Store(e.to_string())))),
                    }
                }
                // Deliveries taken by settles that failed stay in flight in memory, but the
                // table still holds them: they are delivered again after a restart.
            }
        }
    }
}

enum Reply {
    Publish(PublishReply, Vec<Result<(), PublishError>>),
    Settle(oneshot::Sender<Result<(), BusError>>),
}

/// The tables of one write transaction and what to do once it commits.
struct Writer<'a, 'tx> {
    inner: &'a Inner,
    events: &'a mut redb::Table<'tx, (u64, u64), &'static [u8]>,
    queue: &'a mut redb::Table<'tx, (&'static str, u64), &'static [u8]>,
    dead: &'a mut redb::Table<'tx, u64, &'static [u8]>,
    after: &'a mut Vec<After>,
    /// Deliveries added to each queue in this batch, for the backlog bound.
    pending: &'a mut std::collections::HashMap<String, usize>,
    now: i64,
}

impl Writer<'_, '_> {
    /// Archives one event and writes its deliveries. `bounded`: refuse when queues are full
    /// (ingest); handler output is never refused, because its delivery is already done.
    fn publish(
        &mut self,
        event: Prepared,
        bounded: bool,
    ) -> Result<Result<(), PublishError>, BusError> {
        if bounded {
            let total = self.inner.total_backlog.load(Ordering::Relaxed)
                + self.pending.values().sum::<usize>();
            if total + event.deliveries.len() > self.inner.config.max_total_backlog {
                return Ok(Err(PublishError::Throttled(format!(
                    "{total} deliveries are waiting, the limit is {}; retry later",
                    self.inner.config.max_total_backlog
                ))));
            }
            for (d, _) in &event.deliveries {
                let k = &d.queue;
                let n = self.inner.backlog(k) + self.pending.get(k).copied().unwrap_or(0);
                if n >= self.inner.config.max_queue_backlog {
                    return Ok(Err(PublishError::Throttled(format!(
                        "queue {k} holds {n} deliveries, the limit is {}; retry later",
                        self.inner.config.max_queue_backlog
                    ))));
                }
            }
        }
        if event.archive {
            let seq = self.inner.next_seq();
            self.events
                .insert((self.now as u64, seq), event.json.as_slice())?;
        }
        if let Some(c) = event.committed {
            self.after.push(After::Committed(Box::new(c)));
        }
        for (d, record) in event.deliveries {
            self.queue
                .insert((d.queue.as_str(), d.seq), record.as_slice())?;
            match self.pending.get_mut(&d.queue) {
                Some(n) => *n += 1,
                None => {
                    self.pending.insert(d.queue.clone(), 1);
                }
            }
            self.after.push(After::Enqueue(Box::new(d)));
        }
        Ok(Ok(()))
    }

    fn put_delivery(&mut self, d: &Delivery) -> Result<(), BusError> {
        let bytes = serde_json::to_vec(d).map_err(|e| BusError::Store(e.to_string()))?;
        self.queue
            .insert((d.queue.as_str(), d.seq), bytes.as_slice())?;
        Ok(())
    }

    fn settle(
        &mut self,
        mut d: Delivery,
        outcome: Settle,
        outputs: Vec<Prepared>,
    ) -> Result<(), BusError> {
        self.after.push(After::Release(d.queue.clone()));
        match outcome {
            Settle::Ack { stopped, .. } => {
                self.queue.remove((d.queue.as_str(), d.seq))?;
                for e in outputs {
                    // Handler output is not throttled: refusing it now would lose it.
                    let _ = self.publish(e, false)?;
                }
                for (event, reason) in stopped {
                    let mut stop = d.clone();
                    stop.event = event;
                    self.dead_letter(&stop, &reason)?;
                }
            }
            Settle::Retry { due_ms, error } => {
                self.queue.remove((d.queue.as_str(), d.seq))?;
                d.due_ms = due_ms;
                d.last_error = Some(error);
                self.put_delivery(&d)?;
                self.after.push(After::Enqueue(Box::new(d)));
            }
            Settle::DeadLetter { reason, keep } => {
                self.queue.remove((d.queue.as_str(), d.seq))?;
                if keep {
                    self.dead_letter(&d, &reason)?;
                } else {
                    tracing::warn!(rule = %d.rule, target = %d.target, event = %d.event.id, %reason,
                        "delivery dropped: the target's dead-letter queue is off");
                }
            }
        }
        Ok(())
    }

    fn dead_letter(&mut self, d: &Delivery, reason: &str) -> Result<(), BusError> {
        let id = self.inner.next_seq();
        let dl = DeadLetter {
            id,
            delivery_id: d.id.clone(),
            bus: d.event.bus.clone(),
            rule: d.rule.clone(),
            target: d.target.clone(),
            plugin: d.plugin.clone(),
            event: d.event.clone(),
            attempts: d.attempts,
            last_error: reason.to_string(),
            first_queued_at: ms_to_rfc3339(d.created_ms),
            dead_lettered_at: ms_to_rfc3339(self.now),
        };
        let bytes = serde_json::to_vec(&dl).map_err(|e| BusError::Store(e.to_string()))?;
        self.dead.insert(id, bytes.as_slice())?;
        self.after.push(After::DeadLettered);
        Ok(())
    }
}

impl Inner {
    /// Reads one page of the archive (blocking: run it on a blocking thread).
    fn archive_page(&self, q: &ArchiveQuery) -> Result<ArchivePage, BusError> {
        let mut lo = (q.since_ms.unwrap_or(0).max(0) as u64, 0);
        if let Some(c) = q.after {
            // Strictly after the cursor's key.
            let after = match c.seq.checked_add(1) {
                Some(seq) => (c.time_ms, seq),
                None => (c.time_ms.saturating_add(1), 0),
            };
            lo = lo.max(after);
        }
        let hi = (
            q.until_ms.map(|u| u.max(0) as u64).unwrap_or(u64::MAX),
            u64::MAX,
        );
        let mut page = ArchivePage::default();
        if lo > hi || q.limit == 0 {
            return Ok(page);
        }
        let rx = self.db.begin_read()?;
        let t = rx.open_table(EVENTS)?;
        let mut meter = ScanMeter::new(q.budget);
        for row in t.range(lo..=hi)? {
            let (key, value) = row?;
            let (time_ms, seq) = key.value();
            let bytes = value.value();
            let event: Event = serde_json::from_slice(bytes).map_err(|e| {
                BusError::Store(format!(
                    "archived event ({time_ms}, {seq}) is unreadable: {e}; \
                     query past it with since after {}",
                    ms_to_rfc3339(time_ms as i64)
                ))
            })?;
            let here = ArchiveCursor { time_ms, seq };
            if (q.filter)(&event, bytes) {
                page.events.push(event);
                if page.events.len() >= q.limit {
                    page.next = Some(here);
                    break;
                }
            }
            if !meter.read(bytes.len()) {
                page.next = Some(here);
                break;
            }
        }
        Ok(page)
    }
}

fn json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, BusError> {
    serde_json::from_slice(bytes).map_err(|e| BusError::Store(format!("unreadable record: {e}")))
}

fn to_json<T: Serialize>(v: &T) -> Result<Vec<u8>, BusError> {
    serde_json::to_vec(v).map_err(|e| BusError::Store(e.to_string()))
}

impl EmbeddedBus {
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
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let events = events.into_iter().map(|e| self.inner.prepare(e)).collect();
        let (reply, rx) = oneshot::channel();
        self.send(Op::Publish { events, reply })?;
        rx.await
            .map_err(|_| BusError::Store("the commit failed; nothing was written".into()))?
    }

    async fn take(&self, key: &str) -> Option<Delivery> {
        let q = self.inner.queue(key);
        loop {
            if self.inner.closed.load(Ordering::SeqCst) {
                return None;
            }
            let notified = q.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let wait_ms = {
                let mut st = q.state.lock();
                let now = self.inner.config.clock.now_ms();
                match st.ready.first_key_value().map(|(k, _)| *k) {
                    Some((due, seq)) if due <= now => {
                        let d = st.ready.remove(&(due, seq));
                        st.in_flight += 1;
                        self.inner.total_backlog.fetch_sub(1, Ordering::Relaxed);
                        return d;
                    }
                    Some((due, _)) => Some((due - now) as u64),
                    None => None,
                }
            };
            match wait_ms {
                Some(ms) => {
                    tokio::select! {
                        _ = &mut notified => {}
                        _ = self.inner.config.clock.sleep_ms(ms) => {}
                    }
                }
                None => notified.await,
            }
        }
    }

    async fn settle(&self, delivery: Delivery, mut outcome: Settle) -> Result<(), BusError> {
        let mut outputs = Vec::new();
        if let Settle::Ack { new_events, .. } = &mut outcome {
            outputs = std::mem::take(new_events)
                .into_iter()
                .map(|e| self.inner.prepare(e))
                .collect();
        }
        let (reply, rx) = oneshot::channel();
        self.send(Op::Settle {
            delivery: Box::new(delivery),
            outcome,
            outputs,
            reply,
        })?;
        rx.await
            .map_err(|_| BusError::Store("the commit failed".into()))?
    }

    fn queue_stats(&self) -> Vec<QueueStats> {
        let now = self.inner.config.clock.now_ms();
        let mut out: Vec<QueueStats> = self
            .inner
            .queues
            .iter()
            .map(|q| {
                let st = q.state.lock();
                let oldest = st.ready.values().map(|d| d.created_ms).min();
                QueueStats {
                    queue: q.key().clone(),
                    backlog: st.ready.len(),
                    in_flight: st.in_flight,
                    oldest_age_ms: oldest.map(|c| (now - c).max(0) as u64).unwrap_or(0),
                }
            })
            .collect();
        out.sort_by(|a, b| a.queue.cmp(&b.queue));
        out
    }

    async fn forget_queue(&self, queue: &str) {
        // Only an empty queue nobody waits on: a `take` holds the queue it waits for.
        self.inner.queues.remove_if(queue, |_, q| {
            let st = q.state.lock();
            st.ready.is_empty() && st.in_flight == 0 && Arc::strong_count(q) == 1
        });
    }

    async fn put_rule(&self, rule: &Rule) -> Result<(), BusError> {
        let key = format!("{}/{}", rule.bus, rule.name);
        let bytes = to_json(rule)?;
        self.blocking(move |inner| {
            let tx = inner.db.begin_write()?;
            tx.open_table(RULES)?
                .insert(key.as_str(), bytes.as_slice())?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn delete_rule(&self, bus: &str, name: &str) -> Result<bool, BusError> {
        let key = format!("{bus}/{name}");
        self.blocking(move |inner| {
            let tx = inner.db.begin_write()?;
            let existed = tx.open_table(RULES)?.remove(key.as_str())?.is_some();
            tx.commit()?;
            Ok(existed)
        })
        .await
    }

    async fn rules(&self) -> Result<Vec<Rule>, BusError> {
        self.blocking(|inner| {
            let rx = inner.db.begin_read()?;
            let t = rx.open_table(RULES)?;
            let mut out = Vec::new();
            for row in t.iter()? {
                out.push(json(row?.1.value())?);
            }
            Ok(out)
        })
        .await
    }

    async fn put_bus(&self, bus: &BusInfo) -> Result<(), BusError> {
        let key = bus.name.clone();
        let bytes = to_json(bus)?;
        self.blocking(move |inner| {
            let tx = inner.db.begin_write()?;
            tx.open_table(BUSES)?
                .insert(key.as_str(), bytes.as_slice())?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn delete_bus(&self, name: &str) -> Result<bool, BusError> {
        let key = name.to_string();
        self.blocking(move |inner| {
            let tx = inner.db.begin_write()?;
            let existed = tx.open_table(BUSES)?.remove(key.as_str())?.is_some();
            tx.commit()?;
            Ok(existed)
        })
        .await
    }

    async fn buses(&self) -> Result<Vec<BusInfo>, BusError> {
        self.blocking(|inner| {
            let rx = inner.db.begin_read()?;
            let t = rx.open_table(BUSES)?;
            let mut out = Vec::new();
            for row in t.iter()? {
                out.push(json(row?.1.value())?);
            }
            Ok(out)
        })
        .await
    }

    async fn dead_letters(&self, after: u64, limit: usize) -> Result<Vec<DeadLetter>, BusError> {
        self.blocking(move |inner| {
            let rx = inner.db.begin_read()?;
            let t = rx.open_table(DEAD)?;
            let mut out = Vec::new();
            for row in t.range(after.saturating_add(1)..)?.take(limit) {
                out.push(json(row?.1.value())?);
            }
            Ok(out)
        })
        .await
    }

    async fn dead_letter(&self, id: u64) -> Result<Option<DeadLetter>, BusError> {
        self.blocking(move |inner| {
            let rx = inner.db.begin_read()?;
            let t = rx.open_table(DEAD)?;
            t.get(id)?.map(|v| json(v.value())).transpose()
        })
        .await
    }

    async fn redrive(&self, ids: Option<&[u64]>) -> Result<usize, BusError> {
        let ids = ids.map(|i| i.to_vec());
        self.blocking(move |inner| {
            let tx = inner.db.begin_write()?;
            let mut redriven = Vec::new();
            {
                let mut dead = tx.open_table(DEAD)?;
                let mut queue = tx.open_table(QUEUE)?;
                let letters: Vec<DeadLetter> = match &ids {
                    Some(ids) => {
                        let mut v = Vec::new();
                        for id in ids {
                            if let Some(row) = dead.get(*id)? {
                                v.push(json(row.value())?);
                            }
                        }
                        v
                    }
                    None => {
                        let mut v = Vec::new();
                        for row in dead.iter()? {
                            v.push(json(row?.1.value())?);
                        }
                        v
                    }
                };
                let now = inner.config.clock.now_ms();
                for dl in letters {
                    dead.remove(dl.id)?;
                    let d = Delivery {
                        id: dl.delivery_id,
                        seq: inner.next_seq(),
                        queue: crate::rules::queue_key(&dl.bus, &dl.rule, &dl.target),
                        rule: dl.rule,
                        target: dl.target,
                        plugin: dl.plugin,
                        event: dl.event,
                        attempts: 0,
                        created_ms: now,
                        due_ms: now,
                        last_error: Some(format!("redriven after: {}", dl.last_error)),
                    };
                    queue.insert((d.queue.as_str(), d.seq), to_json(&d)?.as_slice())?;
                    redriven.push(d);
                }
            }
            tx.open_table(META)?
                .insert("seq", inner.seq.load(Ordering::SeqCst))?;
            tx.commit()?;
            let n = redriven.len();
            inner.dead_count.fetch_sub(n, Ordering::Relaxed);
            for d in redriven {
                inner.enqueue(d);
            }
            Ok(n)
        })
        .await
    }

    async fn purge_dead_letters(&self, ids: Option<&[u64]>) -> Result<usize, BusError> {
        let ids = ids.map(|i| i.to_vec());
        self.blocking(move |inner| {
            let tx = inner.db.begin_write()?;
            let n = {
                let mut dead = tx.open_table(DEAD)?;
                match ids {
                    Some(ids) => {
                        let mut n = 0;
                        for id in ids {
                            n += dead.remove(id)?.is_some() as usize;
                        }
                        n
                    }
                    None => {
                        let n = dead.len()? as usize;
                        dead.retain(|_, _| false)?;
                        n
                    }
                }
            };
            tx.commit()?;
            inner.dead_count.fetch_sub(n, Ordering::Relaxed);
            Ok(n)
        })
        .await
    }

    fn dead_letter_count(&self) -> usize {
        self.inner.dead_count.load(Ordering::Relaxed)
    }

    async fn archive(&self, query: ArchiveQuery) -> Result<ArchivePage, BusError> {
        let _slot = self
            .inner
            .archive_scans
            .acquire()
            .await
            .map_err(|_| BusError::Closed)?;
        self.blocking(move |inner| inner.archive_page(&query)).await
    }

    async fn expire_archive(&self, before_ms: i64) -> Result<usize, BusError> {
        self.blocking(move |inner| {
            let tx = inner.db.begin_write()?;
            let n = {
                let mut t = tx.open_table(EVENTS)?;
                let hi = (before_ms.max(0) as u64, 0u64);
                let mut n = 0;
                t.retain_in(..hi, |_, _| {
                    n += 1;
                    false
                })?;
                n
            };
            tx.commit()?;
            Ok(n)
        })
        .await
    }

    fn observe_commits(&self, observer: Arc<dyn CommitObserver>) {
        if self.inner.observer.set(observer).is_err() {
            tracing::warn!("a commit observer is already set; the new one is ignored");
        }
    }

    fn kv(&self) -> Arc<dyn crate::runtime::KvBackend> {
        self.inner.kv.clone()
    }

    fn close(&self) {
        self.inner.closed.store(true, Ordering::SeqCst);
        for q in self.inner.queues.iter() {
            q.notify.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{EventInput, EventLimits};
    use serde_json::json;
    use std::time::Duration;

    /// Routes every event whose source starts with "to-" to one target named after
    /// the rest (what `crate::publish` does with real rules, above the store).
    fn by_source(events: Vec<Event>) -> Vec<RoutedEvent> {
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
                    rules: routes.iter().map(|r| r.rule.clone()).collect(),
                    routes,
                }
            })
            .collect()
    }

    fn event(source: &str) -> Event {
        EventInput::from_json(json!({"source": source, "detail-type": "t", "detail": {"n": 1}}))
            .unwrap()
            .into_event(&EventLimits::default())
            .unwrap()
    }

    fn open(dir: &Path) -> Arc<EmbeddedBus> {
        EmbeddedBus::open(EmbeddedConfig::new(dir)).unwrap()
    }

    async fn take(bus: &EmbeddedBus, q: &str) -> Delivery {
        tokio::time::timeout(Duration::from_secs(5), bus.take(q))
            .await
            .expect("a delivery within 5 s")
            .expect("bus open")
    }

    #[test]
    fn a_delivery_record_reads_back_as_the_delivery() {
        let mut e = event("to-a");
        e.extensions
            .insert("traceparent".into(), json!("00-x-y-01"));
        let mut d = Delivery {
            id: "d-1".into(),
            seq: 7,
            queue: "default/r/a".into(),
            rule: "r".into(),
            target: "a".into(),
            plugin: "a \"quoted\"".into(),
            event: e.clone(),
            attempts: 2,
            created_ms: 1,
            due_ms: 3,
            last_error: None,
        };
        let json = serde_json::to_vec(&e).unwrap();
        for last_error in [None, Some("boom".to_string())] {
            d.last_error = last_error;
            let back: Delivery = serde_json::from_slice(&d.record(&json)).unwrap();
            assert_eq!(back, d);
        }
    }

    #[tokio::test]
    async fn publish_routes_durably_and_ack_removes() {
        let dir = tempfile::tempdir().unwrap();
        let bus = open(dir.path());
        let res = bus
            .publish(by_source(vec![event("to-a"), event("nowhere")]))
            .await
            .unwrap();
        assert_eq!(res, vec![Ok(()), Ok(())]);
        let d = take(&bus, "default/r/a").await;
        assert_eq!(d.plugin, "a");
        assert_eq!(bus.queue_stats()[0].in_flight, 1);
        let out = event("to-b");
        bus.settle(
            d,
            Settle::Ack {
                new_events: by_source(vec![out]),
                stopped: vec![],
            },
        )
        .await
        .unwrap();
        // The handler's output was routed in the ack's commit.
        let d2 = take(&bus, "default/r/b").await;
        assert_eq!(d2.event.source, "to-b");
        // Both published events and the handler's output are archived.
        let archived = bus.archive(ArchiveQuery::new(10, all())).await.unwrap();
        assert_eq!(archived.events.len(), 3);
        assert_eq!(archived.next, None);
    }

    #[tokio::test]
    async fn unsettled_deliveries_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let id = {
            let bus = open(dir.path());
            bus.publish(by_source(vec![event("to-a")])).await.unwrap();
            // Taken but never settled: as if the process died during the plugin call.
            take(&bus, "default/r/a").await.id
        };
        let bus = open(dir.path());
        let d = take(&bus, "default/r/a").await;
        assert_eq!(d.id, id, "the delivery id is stable across the restart");
        bus.settle(
            d,
            Settle::Ack {
                new_events: vec![],
                stopped: vec![],
            },
        )
        .await
        .unwrap();
        drop(bus);
        let bus = open(dir.path());
        assert!(bus.queue_stats().iter().all(|q| q.backlog == 0));
    }

    #[tokio::test]
    async fn retry_waits_until_due_and_keeps_the_error() {
        let dir = tempfile::tempdir().unwrap();
        let bus = open(dir.path());
        bus.publish(by_source(vec![event("to-a")])).await.unwrap();
        let mut d = take(&bus, "default/r/a").await;
        d.attempts = 1;
        let due = now_ms() + 300;
        bus.settle(
            d,
            Settle::Retry {
                due_ms: due,
                error: "boom".into(),
            },
        )
        .await
        .unwrap();
        let d = take(&bus, "default/r/a").await;
        assert!(now_ms() >= due);
        assert_eq!(d.attempts, 1);
        assert_eq!(d.last_error.as_deref(), Some("boom"));
    }

    #[tokio::test]
    async fn dead_letters_list_redrive_and_purge() {
        let dir = tempfile::tempdir().unwrap();
        let bus = open(dir.path());
        bus.publish(by_source(vec![event("to-a"), event("to-a")]))
            .await
            .unwrap();
        for _ in 0..2 {
            let mut d = take(&bus, "default/r/a").await;
            d.attempts = 3;
            bus.settle(
                d,
                Settle::DeadLetter {
                    reason: "rejected: bad".into(),
                    keep: true,
                },
            )
            .await
            .unwrap();
        }
        assert_eq!(bus.dead_letter_count(), 2);
        let dl = bus.dead_letters(0, 10).await.unwrap();
        assert_eq!(dl.len(), 2);
        assert_eq!(dl[0].attempts, 3);
        assert_eq!(dl[0].last_error, "rejected: bad");
        assert_eq!(bus.dead_letter(dl[0].id).await.unwrap().unwrap(), dl[0]);
        assert_eq!(bus.redrive(Some(&[dl[0].id])).await.unwrap(), 1);
        let d = take(&bus, "default/r/a").await;
        assert_eq!(d.id, dl[0].delivery_id);
        assert_eq!(d.attempts, 0);
        assert_eq!(bus.purge_dead_letters(None).await.unwrap(), 1);
        assert_eq!(bus.dead_letter_count(), 0);
        drop(bus);
        let bus = open(dir.path());
        assert_eq!(bus.dead_letter_count(), 0);
    }

    #[tokio::test]
    async fn full_queues_throttle_publishers() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = EmbeddedConfig::new(dir.path());
        cfg.max_queue_backlog = 2;
        let bus = EmbeddedBus::open(cfg).unwrap();
        let res = bus
            .publish(by_source(vec![
                event("to-a"),
                event("to-a"),
                event("to-a"),
                event("elsewhere"),
            ]))
            .await
            .unwrap();
        assert_eq!(res[0], Ok(()));
        assert_eq!(res[1], Ok(()));
        assert!(
            matches!(&res[2], Err(PublishError::Throttled(m)) if m.contains("limit is 2")),
            "{res:?}"
        );
        assert_eq!(res[3], Ok(()), "events for other queues still go through");
    }

    #[tokio::test]
    async fn concurrent_publishers_share_commits() {
        let dir = tempfile::tempdir().unwrap();
        let bus = open(dir.path());
        let mut tasks = Vec::new();
        for _ in 0..200 {
            let bus = bus.clone();
            tasks.push(tokio::spawn(async move {
                bus.publish(by_source(vec![event("to-a")])).await.unwrap()
            }));
        }
        for t in tasks {
            assert_eq!(t.await.unwrap(), vec![Ok(())]);
        }
        assert_eq!(bus.queue_stats()[0].backlog, 200);
    }

    #[tokio::test]
    async fn replayed_events_are_not_archived_and_archive_expires() {
        let dir = tempfile::tempdir().unwrap();
        let bus = open(dir.path());
        let mut replayed = event("to-a");
        replayed.replay_name = Some("r1".into());
        bus.publish(by_source(vec![event("x"), replayed]))
            .await
            .unwrap();
        let q = || ArchiveQuery::new(10, all());
        assert_eq!(bus.archive(q()).await.unwrap().events.len(), 1);
        assert_eq!(bus.expire_archive(now_ms() + 1).await.unwrap(), 1);
        assert!(bus.archive(q()).await.unwrap().events.is_empty());
    }

    fn all() -> ArchiveFilter {
        Arc::new(|_: &Event, _: &[u8]| true)
    }

    /// Pages through `q`: the events' sources and how many pages it took.
    async fn every_page(bus: &EmbeddedBus, q: ArchiveQuery) -> (Vec<String>, usize) {
        let (mut sources, mut pages, mut reader) = (Vec::new(), 0, ArchivePages::new(q));
        while let Some(events) = reader.next(bus).await.unwrap() {
            pages += 1;
            sources.extend(events.into_iter().map(|e| e.source));
        }
        (sources, pages)
    }

    #[tokio::test]
    async fn archive_pages_stop_at_the_budget_and_resume_at_the_cursor() {
        let dir = tempfile::tempdir().unwrap();
        let bus = open(dir.path());
        let sources: Vec<String> = (0..25).map(|i| format!("s{i}")).collect();
        let events = sources.iter().map(|s| event(s)).collect();
        bus.publish(by_source(events)).await.unwrap();

        // A filter that takes nothing still answers after `budget.events` reads.
        let none: ArchiveFilter = Arc::new(|_: &Event, _: &[u8]| false);
        let mut q = ArchiveQuery::new(10, none);
        q.budget.events = 4;
        let page = bus.archive(q.clone()).await.unwrap();
        assert!(page.events.is_empty());
        assert!(
            page.next.is_some(),
            "the budget ran out before the archive did"
        );
        assert_eq!(every_page(&bus, q).await, (vec![], 7));

        // Limit and budget together reach every event once, in order.
        let mut q = ArchiveQuery::new(3, all());
        q.budget.events = 5;
        let (got, pages) = every_page(&bus, q).await;
        assert_eq!(got, sources);
        assert!(pages >= 9, "{pages}");

        // The filter sees the stored bytes too.
        let odd: ArchiveFilter =
            Arc::new(|_: &Event, json: &[u8]| json.windows(4).any(|w| w == b"\"s1\""));
        let page = bus.archive(ArchiveQuery::new(10, odd)).await.unwrap();
        assert_eq!(page.events.len(), 1);
    }

    #[tokio::test]
    async fn archive_time_ranges_are_key_ranges() {
        let dir = tempfile::tempdir().unwrap();
        let bus = open(dir.path());
        bus.publish(by_source(vec![event("old")])).await.unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
        let since = now_ms();
        bus.publish(by_source(vec![event("new")])).await.unwrap();
        let until = now_ms();
        let mut q = ArchiveQuery::new(10, all());
        q.since_ms = Some(since);
        q.until_ms = Some(until);
        // A budget of one event is enough: the range starts at its first event.
        q.budget.events = 1;
        let page = bus.archive(q.clone()).await.unwrap();
        assert_eq!(page.events.len(), 1);
        assert_eq!(page.events[0].source, "new");
        // A cursor before `since` does not widen the range; one past its end empties it.
        q.after = Some(ArchiveCursor { time_ms: 0, seq: 0 });
        assert_eq!(bus.archive(q.clone()).await.unwrap().events.len(), 1);
        q.after = Some(ArchiveCursor {
            time_ms: until as u64,
            seq: u64::MAX,
        });
        let page = bus.archive(q).await.unwrap();
        assert!(page.events.is_empty() && page.next.is_none());
    }
}
