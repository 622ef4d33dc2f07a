//! The bus: where events and deliveries are durable.
//!
//! [`Bus`] is the one seam between busbar's routing core and its storage. The
//! embedded backend ([`embedded::EmbeddedBus`], on redb) runs one node; the
//! JetStream backend lets several nodes share the work. Everything above this
//! trait (ingest, dispatch, the admin API) is the same for both.
//!
//! The bus is a store only: events arrive already serialized and routed
//! ([`RoutedEvent`], made by `crate::publish`); it stores rules but never routes.
//!
//! The contract every backend keeps:
//! - `publish` returns only once the events *and the deliveries of their routes*
//!   are durable, so an acknowledged event is never lost and never unrouted.
//! - `settle` with [`Settle::Ack`] removes the delivery and appends the
//!   handler's new events (and their deliveries) in one commit: both or neither.
//! - Deliveries are at least once: a crash between a plugin call and its
//!   settle redelivers, with the same delivery id.

pub mod embedded;
pub mod nats;

use crate::event::Event;
use crate::rules::{BusInfo, Route, Rule};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// An event ready for the store: serialized once and routed once, above the
/// store (see `crate::publish`). The backend writes `json` to the archive (when
/// `archive`) and one delivery per route, in one commit; it never routes.
#[derive(Debug, Clone)]
pub struct RoutedEvent {
    pub event: Event,
    /// `serde_json::to_vec(&event)`: what the archive and every delivery record hold.
    pub json: Vec<u8>,
    pub routes: Vec<Route>,
    /// Every rule it matched, targets or not (reported to the [`CommitObserver`]).
    pub rules: Vec<Arc<str>>,
    pub archive: bool,
}

/// An event a backend has just made durable, with the rules it was routed to.
#[derive(Debug, Clone)]
pub struct Committed {
    pub event: Event,
    /// Each rule once, in route order.
    pub rules: Vec<Arc<str>>,
}

/// Told of every event the bus commits, whether a client published it or a
/// handler emitted it: on the embedded store in commit order and before any of
/// its deliveries can be taken, so a watcher sees an event before its deliveries.
pub trait CommitObserver: Send + Sync + 'static {
    /// Asked before each event is prepared: when false the backend skips the
    /// copy it would report (nobody is watching).
    fn wants(&self) -> bool;
    fn committed(&self, committed: Committed);
}

/// Sets a backend's one commit observer; a second one is refused with a warning.
fn set_observer(cell: &std::sync::OnceLock<Arc<dyn CommitObserver>>, o: Arc<dyn CommitObserver>) {
    if cell.set(o).is_err() {
        tracing::warn!("a commit observer is already set; the new one is ignored");
    }
}

impl Committed {
    /// The report of `routed`, when `observer` wants it.
    fn of(observer: Option<&Arc<dyn CommitObserver>>, routed: &RoutedEvent) -> Option<Committed> {
        let observer = observer?;
        if !observer.wants() {
            return None;
        }
        Some(Committed {
            event: routed.event.clone(),
            rules: routed.rules.clone(),
        })
    }
}

/// A delivery of one event to one (rule, target), as stored in its queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delivery {
    /// Stable across retries: the plugin's idempotency key.
    pub id: String,
    /// Position in the queue (the store's sequence number).
    pub seq: u64,
    pub queue: String,
    pub rule: String,
    pub target: String,
    pub plugin: String,
    pub event: Event,
    /// Attempts made so far (0 before the first).
    pub attempts: u32,
    /// Milliseconds since the epoch when the delivery was created.
    pub created_ms: i64,
    /// Not before this time (ms since the epoch).
    pub due_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// The fields of a stored delivery record besides the event, named as [`Delivery`]
/// names them, so a record written by [`Delivery::record`] reads back as a `Delivery`.
#[derive(Serialize)]
struct DeliveryHead<'a> {
    id: &'a str,
    seq: u64,
    queue: &'a str,
    rule: &'a str,
    target: &'a str,
    plugin: &'a str,
    attempts: u32,
    created_ms: i64,
    due_ms: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_error: Option<&'a str>,
}

impl Delivery {
    /// The stored JSON record of this delivery, given its event already serialized:
    /// an event routed to several targets is serialized once, not once per target.
    pub fn record(&self, event_json: &[u8]) -> Vec<u8> {
        let head = DeliveryHead {
            id: &self.id,
            seq: self.seq,
            queue: &self.queue,
            rule: &self.rule,
            target: &self.target,
            plugin: &self.plugin,
            attempts: self.attempts,
            created_ms: self.created_ms,
            due_ms: self.due_ms,
            last_error: self.last_error.as_deref(),
        };
        let mut out = Vec::with_capacity(event_json.len() + 256);
        // A struct serializes to `{...}` and cannot fail (strings and numbers only).
        serde_json::to_writer(&mut out, &head).expect("delivery head serializes");
        out.pop();
        out.extend_from_slice(b",\"event\":");
        out.extend_from_slice(event_json);
        out.push(b'}');
        out
    }
}

/// How a delivery ended this time.
#[derive(Debug, Clone)]
pub enum Settle {
    /// Done. `new_events` are the handler's output, routed above the store and
    /// appended in the same commit; `stopped` are outputs refused (e.g. over the hop limit),
    /// dead-lettered with their reason in that commit too.
    Ack {
        new_events: Vec<RoutedEvent>,
        stopped: Vec<(Event, String)>,
    },
    /// Try again at `due_ms`.
    Retry { due_ms: i64, error: String },
    /// Give up: to the dead-letter queue (when `keep`) with the reason.
    DeadLetter { reason: String, keep: bool },
}

/// A delivery that will not be retried any more.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub id: u64,
    pub delivery_id: String,
    pub bus: String,
    pub rule: String,
    pub target: String,
    pub plugin: String,
    pub event: Event,
    pub attempts: u32,
    pub last_error: String,
    /// RFC 3339: when the first delivery attempt was queued, and when it was dead-lettered.
    pub first_queued_at: String,
    pub dead_lettered_at: String,
}

impl DeadLetter {
    /// The dead letter of delivery `d`, given up on at `now_ms` for `reason`;
    /// `id` is the store's number for it (0 where the store assigns it on write).
    pub fn of(d: &Delivery, id: u64, reason: &str, now_ms: i64) -> DeadLetter {
        DeadLetter {
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
            dead_lettered_at: ms_to_rfc3339(now_ms),
        }
    }
}

/// A change to the stored (API) rules and buses, as a shared store reports it.
#[derive(Debug, Clone, PartialEq)]
pub enum StoredChange {
    Rule(Rule),
    RuleDeleted { bus: String, name: String },
    Bus(BusInfo),
    BusDeleted(String),
}

/// Per-event outcome of a publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublishError {
    /// Queues are over their bounds; the caller should back off and retry.
    Throttled(String),
    /// The named bus does not exist.
    NoSuchBus(String),
    /// The store failed; nothing of this event was written.
    Store(String),
}

impl PublishError {
    pub fn code(&self) -> &'static str {
        match self {
            PublishError::Throttled(_) => "ThrottlingException",
            PublishError::NoSuchBus(_) => "ResourceNotFoundException",
            PublishError::Store(_) => "InternalException",
        }
    }
    pub fn message(&self) -> &str {
        match self {
            PublishError::Throttled(m) | PublishError::NoSuchBus(m) | PublishError::Store(m) => m,
        }
    }
}

/// Size and age of one delivery queue.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct QueueStats {
    pub queue: String,
    /// Deliveries waiting (due now or later).
    pub backlog: usize,
    /// Deliveries taken and not yet settled.
    pub in_flight: usize,
    /// Age of the oldest waiting delivery, in ms (0 when empty).
    pub oldest_age_ms: u64,
}

/// Decides whether an archived event belongs in an answer. It gets the event and
/// the bytes it is stored as (what the pattern matcher scans), and runs on the
/// store's blocking threads, hence `Send + Sync + 'static`.
pub type ArchiveFilter = Arc<dyn Fn(&Event, &[u8]) -> bool + Send + Sync>;

/// An archive query: a time range (on the time busbar received the event), a
/// filter, and where a previous page stopped.
#[derive(Clone)]
pub struct ArchiveQuery {
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
    /// Resume strictly after this position (the `next` of the previous page).
    pub after: Option<ArchiveCursor>,
    /// At most this many events are returned.
    pub limit: usize,
    /// At most this much is read to answer.
    pub budget: ScanBudget,
    pub filter: ArchiveFilter,
}

impl ArchiveQuery {
    /// Every archived event, up to `limit`, under the default budget.
    pub fn new(limit: usize, filter: ArchiveFilter) -> ArchiveQuery {
        ArchiveQuery {
            since_ms: None,
            until_ms: None,
            after: None,
            limit,
            budget: ScanBudget::default(),
            filter,
        }
    }
}

/// One page of an archive query.
#[derive(Debug, Clone, Default)]
pub struct ArchivePage {
    /// Matching events, oldest first.
    pub events: Vec<Event>,
    /// Present when the query stopped before the end of its range (the limit was
    /// reached or the budget spent): the same query with `after` set to it goes on
    /// from there. Absent once the range is read to its end.
    pub next: Option<ArchiveCursor>,
}

/// Reads an archive query page after page, following each page's cursor, so a
/// caller reaches every event of the range with one page in memory.
pub struct ArchivePages {
    query: ArchiveQuery,
    done: bool,
}

impl ArchivePages {
    pub fn new(query: ArchiveQuery) -> ArchivePages {
        ArchivePages { query, done: false }
    }

    /// The next page's events (possibly none); `None` once the range is read to its end.
    pub async fn next(&mut self, bus: &dyn Bus) -> Result<Option<Vec<Event>>, BusError> {
        if self.done {
            return Ok(None);
        }
        let page = bus.archive(self.query.clone()).await?;
        match page.next {
            Some(next) => self.query.after = Some(next),
            None => self.done = true,
        }
        Ok(Some(page.events))
    }
}

/// A position in the archive: the last event a page read. Both backends order
/// their archive by it: the embedded store keys events by (time received,
/// sequence); JetStream by stream sequence, whose times only grow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ArchiveCursor {
    /// When busbar received the event (ms since the epoch).
    pub time_ms: u64,
    /// The store's sequence number of the event.
    pub seq: u64,
}

/// Marks the cursor's text format, so a later format can refuse this one clearly.
const CURSOR_PREFIX: &str = "a1.";

impl ArchiveCursor {
    /// The cursor as clients see it: opaque text, safe in a URL query.
    pub fn encode(&self) -> String {
        format!("{CURSOR_PREFIX}{:x}.{:x}", self.time_ms, self.seq)
    }

    /// Reads a cursor made by [`ArchiveCursor::encode`]; the error says what is wrong.
    pub fn decode(text: &str) -> Result<ArchiveCursor, String> {
        let bad = || {
            format!(
                "cursor {text:?} is not one busbar made: pass back the `next` of the \
                 previous page unchanged, or leave cursor out to start at the beginning"
            )
        };
        let rest = text.strip_prefix(CURSOR_PREFIX).ok_or_else(bad)?;
        let (time, seq) = rest.split_once('.').ok_or_else(bad)?;
        let hex = |t: &str| {
            (!t.is_empty() && t.len() <= 16 && t.bytes().all(|b| b.is_ascii_hexdigit()))
                .then(|| u64::from_str_radix(t, 16).ok())
                .flatten()
                .ok_or_else(bad)
        };
        Ok(ArchiveCursor {
            time_ms: hex(time)?,
            seq: hex(seq)?,
        })
    }
}

/// How much one archive query may read before it answers with a cursor: a query
/// that matches little over a large archive pages instead of holding a thread (and
/// a read snapshot) for as long as the whole archive takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScanBudget {
    /// Stored events read.
    pub events: usize,
    /// Bytes of stored events read.
    pub bytes: usize,
    /// Time spent reading.
    pub time: std::time::Duration,
}

impl Default for ScanBudget {
    fn default() -> Self {
        ScanBudget {
            events: 50_000,
            bytes: 64 << 20,
            time: std::time::Duration::from_millis(500),
        }
    }
}

/// Below this many events read, the byte and time bounds are not checked: a small
/// archive answers in one page however loaded the machine is, and every page
/// makes progress.
const SCAN_FLOOR: usize = 1024;

/// Counts one query's reading against its [`ScanBudget`].
pub(crate) struct ScanMeter {
    budget: ScanBudget,
    started: std::time::Instant,
    events: usize,
    bytes: usize,
}

impl ScanMeter {
    pub(crate) fn new(budget: ScanBudget) -> ScanMeter {
        ScanMeter {
            budget,
            started: std::time::Instant::now(),
            events: 0,
            bytes: 0,
        }
    }

    /// Counts one event of `bytes` read; false once the budget is spent.
    pub(crate) fn read(&mut self, bytes: usize) -> bool {
        self.events += 1;
        self.bytes += bytes;
        if self.events >= self.budget.events.max(1) {
            return false;
        }
        self.events < SCAN_FLOOR
            || (self.bytes < self.budget.bytes && self.started.elapsed() < self.budget.time)
    }
}

/// How many archive scans a node runs at once; more wait their turn. Scans are CPU
/// work on blocking threads: half the cores leaves the rest to ingest and delivery.
pub(crate) fn archive_scan_slots() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get() / 2)
        .unwrap_or(1)
        .max(1)
}

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("store error: {0}")]
    Store(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
    #[error("the bus is shutting down")]
    Closed,
}

impl From<redb::Error> for BusError {
    fn from(e: redb::Error) -> Self {
        BusError::Store(e.to_string())
    }
}

macro_rules! redb_errors {
    ($($t:ty),*) => {$(
        impl From<$t> for BusError {
            fn from(e: $t) -> Self { BusError::Store(e.to_string()) }
        }
    )*};
}
redb_errors!(
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::DatabaseError
);

/// The storage seam. See the module docs for the contract.
#[async_trait]
pub trait Bus: Send + Sync + 'static {
    /// Durably appends `events` with a delivery per route; one result per event, in order.
    async fn publish(
        &self,
        events: Vec<RoutedEvent>,
    ) -> Result<Vec<Result<(), PublishError>>, BusError>;

    /// Waits until a delivery of `queue` is due and hands it out. `None` when the bus closes.
    async fn take(&self, queue: &str) -> Option<Delivery>;

    /// Waits like [`Bus::take`], then hands out up to `max` deliveries of `queue`
    /// that are due now (at least one; empty when the bus closes). A worker
    /// whose handler is quick takes several at once, so the hand-off, the
    /// scheduling and the settle's commit are paid once per batch.
    async fn take_batch(&self, queue: &str, max: usize) -> Vec<Delivery> {
        let _ = max;
        self.take(queue).await.into_iter().collect()
    }

    /// Ends the current attempt of a delivery taken with [`Bus::take`].
    async fn settle(&self, delivery: Delivery, outcome: Settle) -> Result<(), BusError>;

    /// Settles many deliveries. A backend that commits them together does so in
    /// one commit (all or none); otherwise each is settled in turn, every one
    /// is tried, and the first error is returned. An unsettled delivery stays
    /// pending and is delivered again.
    async fn settle_batch(&self, settles: Vec<(Delivery, Settle)>) -> Result<(), BusError> {
        let mut first = Ok(());
        for (d, s) in settles {
            if let Err(e) = self.settle(d, s).await
                && first.is_ok()
            {
                first = Err(e);
            }
        }
        first
    }

    fn queue_stats(&self) -> Vec<QueueStats>;

    /// Drops what the backend keeps for a queue no rule feeds any more and that
    /// has been drained (in-memory state; on JetStream, the durable consumer).
    async fn forget_queue(&self, _queue: &str) {}

    async fn put_rule(&self, rule: &Rule) -> Result<(), BusError>;
    async fn delete_rule(&self, bus: &str, name: &str) -> Result<bool, BusError>;
    async fn rules(&self) -> Result<Vec<Rule>, BusError>;
    async fn put_bus(&self, bus: &BusInfo) -> Result<(), BusError>;
    async fn delete_bus(&self, name: &str) -> Result<bool, BusError>;
    async fn buses(&self) -> Result<Vec<BusInfo>, BusError>;

    async fn dead_letters(&self, after: u64, limit: usize) -> Result<Vec<DeadLetter>, BusError>;
    async fn dead_letter(&self, id: u64) -> Result<Option<DeadLetter>, BusError>;
    /// Puts dead letters back in their queues (all when `ids` is None); returns how many.
    async fn redrive(&self, ids: Option<&[u64]>) -> Result<usize, BusError>;
    /// Deletes dead letters (all when `ids` is None); returns how many.
    async fn purge_dead_letters(&self, ids: Option<&[u64]>) -> Result<usize, BusError>;
    fn dead_letter_count(&self) -> usize;

    /// One page of archived events, oldest first. The read runs off the async
    /// workers and stops at `query.limit` events or when `query.budget` is spent,
    /// whichever comes first; the page's `next` says where to go on.
    async fn archive(&self, query: ArchiveQuery) -> Result<ArchivePage, BusError>;
    /// Deletes archived events received before `before_ms`; returns how many.
    async fn expire_archive(&self, before_ms: i64) -> Result<usize, BusError>;

    /// Changes to the stored rules and buses made through any node: first the
    /// current entries, then each change as it happens. Backends shared by
    /// several nodes return a stream; the embedded store has one writer, this
    /// node, so it has nothing to report.
    async fn watch_rules(
        &self,
    ) -> Result<Option<tokio::sync::mpsc::Receiver<StoredChange>>, BusError> {
        Ok(None)
    }

    /// Sets the one observer told of every committed event (see [`CommitObserver`]).
    fn observe_commits(&self, observer: Arc<dyn CommitObserver>);

    /// The store plugins keep their state in.
    fn kv(&self) -> Arc<dyn crate::runtime::KvBackend>;

    /// Stops handing out deliveries; `take` returns None afterwards.
    fn close(&self);
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

pub fn ms_to_rfc3339(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// The bus as the rule set's store (see [`crate::rules::admin::RuleStore`]).
pub struct RuleStoreOf(pub Arc<dyn Bus>);

#[async_trait]
impl crate::rules::admin::RuleStore for RuleStoreOf {
    async fn put_rule(&self, rule: &Rule) -> Result<(), crate::rules::admin::StoreError> {
        self.0.put_rule(rule).await.map_err(store_error)
    }
    async fn delete_rule(
        &self,
        bus: &str,
        name: &str,
    ) -> Result<bool, crate::rules::admin::StoreError> {
        self.0.delete_rule(bus, name).await.map_err(store_error)
    }
    async fn put_bus(&self, bus: &BusInfo) -> Result<(), crate::rules::admin::StoreError> {
        self.0.put_bus(bus).await.map_err(store_error)
    }
    async fn delete_bus(&self, name: &str) -> Result<bool, crate::rules::admin::StoreError> {
        self.0.delete_bus(name).await.map_err(store_error)
    }
}

fn store_error(e: BusError) -> crate::rules::admin::StoreError {
    crate::rules::admin::StoreError(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_archive_cursor_reads_back_and_refuses_what_it_did_not_make() {
        let c = ArchiveCursor {
            time_ms: 1_700_000_000_123,
            seq: u64::MAX,
        };
        assert_eq!(ArchiveCursor::decode(&c.encode()), Ok(c));
        for bad in [
            "",
            "a1.",
            "a1.12",
            "a1.x.1",
            "a1.1.",
            "b1.1.1",
            "a1.1.1.1",
            "a1.11111111111111111.1",
        ] {
            let e = ArchiveCursor::decode(bad).unwrap_err();
            assert!(
                e.contains("next") && e.contains(&format!("{bad:?}")),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn the_scan_meter_stops_at_the_event_count_and_lets_small_scans_finish() {
        let mut m = ScanMeter::new(ScanBudget {
            events: 3,
            ..ScanBudget::default()
        });
        assert!(m.read(10) && m.read(10));
        assert!(!m.read(10), "the third event spends the budget");
        // Bytes and time are checked only past the floor.
        let mut m = ScanMeter::new(ScanBudget {
            events: usize::MAX,
            bytes: 1,
            time: std::time::Duration::ZERO,
        });
        assert!((1..SCAN_FLOOR).all(|_| m.read(1_000)));
        assert!(!m.read(1_000));
    }
}
