//! The bus: where events and deliveries are durable.
//!
//! [`Bus`] is the one seam between busbar's routing core and its storage. The
//! embedded backend ([`embedded::EmbeddedBus`], on redb) runs one node; the
//! JetStream backend lets several nodes share the work. Everything above this
//! trait (ingest, dispatch, the admin API) is the same for both.
//!
//! The contract every backend keeps:
//! - `publish` returns only once the events *and the deliveries they routed to*
//!   are durable, so an acknowledged event is never lost and never unrouted.
//! - `settle` with [`Settle::Ack`] removes the delivery and appends the
//!   handler's new events (and their deliveries) in one commit: both or neither.
//! - Deliveries are at least once: a crash between a plugin call and its
//!   settle redelivers, with the same delivery id.

pub mod embedded;
pub mod nats;

use crate::event::Event;
use crate::rules::{BusInfo, Rule};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Where a matched event goes: one (rule, target) and the plugin behind it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Route {
    pub rule: String,
    pub target: String,
    pub plugin: String,
}

impl Route {
    pub fn queue_key(&self, bus: &str) -> String {
        crate::rules::queue_key(bus, &self.rule, &self.target)
    }
}

/// Decides the routes of an event. The rule set implements it; the bus calls it
/// before the commit that stores the event and writes the deliveries in that same
/// commit, so routing is durable with the event.
pub trait Router: Send + Sync + 'static {
    /// `json` is the event as serialized for the store (`serde_json::to_vec(event)`):
    /// the matcher scans those bytes instead of building a JSON tree.
    fn route(&self, event: &Event, json: &[u8]) -> Vec<Route>;

    /// [`Router::route`], kept to the rules in `only` when given (a replay to named rules).
    fn route_only(&self, event: &Event, json: &[u8], only: Option<&[String]>) -> Vec<Route> {
        let mut routes = self.route(event, json);
        if let Some(only) = only {
            routes.retain(|r| only.iter().any(|n| n == &r.rule));
        }
        routes
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
    /// Done. `new_events` are the handler's output, appended and routed in the
    /// same commit; `stopped` are outputs refused (e.g. over the hop limit),
    /// dead-lettered with their reason in that commit too.
    Ack {
        new_events: Vec<Event>,
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

/// Options of one publish call.
#[derive(Debug, Clone, Default)]
pub struct PublishOptions {
    /// Replays set this: such events are not archived again.
    pub skip_archive: bool,
    /// Route only to these rules (a replay to named rules).
    pub only_rules: Option<Vec<String>>,
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

/// An archive query: a time range (on the time busbar received the event) and a filter.
pub struct ArchiveQuery<'a> {
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
    pub limit: usize,
    pub filter: &'a (dyn Fn(&Event) -> bool + Sync),
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
    /// Durably appends `events` with their deliveries; one result per event, in order.
    async fn publish(
        &self,
        events: Vec<Event>,
        options: PublishOptions,
    ) -> Result<Vec<Result<(), PublishError>>, BusError>;

    /// Waits until a delivery of `queue` is due and hands it out. `None` when the bus closes.
    async fn take(&self, queue: &str) -> Option<Delivery>;

    /// Ends the current attempt of a delivery taken with [`Bus::take`].
    async fn settle(&self, delivery: Delivery, outcome: Settle) -> Result<(), BusError>;

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

    async fn archive(&self, query: ArchiveQuery<'_>) -> Result<Vec<Event>, BusError>;
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
