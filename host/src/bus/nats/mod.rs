//! The JetStream bus: several busbar nodes share one NATS server (or cluster).
//!
//! Where things live (see `host/CLUSTER.md` for the reasoning):
//! - `BUSBAR_DELIVERIES` (work-queue retention, subjects
//!   `busbar.q.<bus>.<rule>.<target>`): one message per delivery. The
//!   publishing node routes each event with its rule set, as the embedded
//!   store does inside its commit, and publishes one message per route, so a
//!   queue's durable pull consumer sees exactly its own deliveries. Every node
//!   pulls from the same consumer, which is how nodes split the work; an acked
//!   message is removed, so the stream holds only pending work.
//! - `BUSBAR_ARCHIVE` (limits retention, max age = archive retention,
//!   subjects `busbar.arc.<bus>`): one copy of every event that is archived.
//!   Replays publish deliveries only, which is why they are never archived twice.
//! - `BUSBAR_DLQ` (subjects `busbar.dlq.<bus>`): dead letters, the same JSON as
//!   the embedded store's; a dead letter's id is its stream sequence.
//! - KV `busbar-kv`: plugin state. KV `busbar-rules`: API rules and buses,
//!   watched by every node.
//!
//! Every message carries a `Nats-Msg-Id`, so a publish retried within the
//! server's duplicate window (two minutes) is stored once.

mod archive;
mod dead;
mod kv;
mod names;
mod queues;
mod rules;
mod scan;

pub use kv::NatsKv;

use super::*;
use crate::rules::BusInfo;
use async_nats::HeaderMap;
use async_nats::jetstream::{self, context::PublishAckFuture, stream};
use bytes::Bytes;
use dashmap::DashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

const DELIVERIES_STREAM: &str = "BUSBAR_DELIVERIES";
const ARCHIVE_STREAM: &str = "BUSBAR_ARCHIVE";
const DLQ_STREAM: &str = "BUSBAR_DLQ";
const KV_BUCKET: &str = "busbar-kv";
const RULES_BUCKET: &str = "busbar-rules";

/// Headers of a delivery message.
const H_DELIVERY: &str = "Busbar-Delivery";
const H_PLUGIN: &str = "Busbar-Plugin";

/// Settings of the JetStream bus. Query parameters of the URL override the
/// defaults: `nats://host:4222?ack_wait_ms=5000&batch=16`.
#[derive(Debug, Clone)]
pub struct NatsConfig {
    /// `nats://HOST:PORT` (several, comma-separated, for a NATS cluster).
    pub url: String,
    /// A delivery taken by a node that then goes silent for this long is handed
    /// to another node. Longer than any plugin's wall-clock timeout.
    pub ack_wait: Duration,
    /// Deliveries a node pulls ahead per queue.
    pub batch: usize,
    /// Bound on every request to the server (publish acks included), so a
    /// caller gets an error instead of waiting while NATS is away.
    pub request_timeout: Duration,
    /// Archived events older than this are removed by the server (0: kept).
    pub archive_retention: Duration,
    /// A publish that would push one queue past this many pending deliveries is
    /// throttled (checked against counts refreshed every second: approximate).
    pub max_queue_backlog: usize,
    /// The deliveries stream's message limit; past it the server refuses new
    /// deliveries and publishers are throttled.
    pub max_total_backlog: usize,
    /// Queue ages and retry delays are read on this clock (a test may advance it).
    pub clock: Arc<crate::clock::Clock>,
}

impl NatsConfig {
    /// Defaults for `url`, then the URL's query parameters applied.
    pub fn from_url(url: &str) -> Result<Self, BusError> {
        let (base, query) = url.split_once('?').unwrap_or((url, ""));
        let mut c = NatsConfig {
            url: base.to_string(),
            ack_wait: Duration::from_secs(30),
            batch: 32,
            request_timeout: Duration::from_secs(3),
            archive_retention: Duration::ZERO,
            max_queue_backlog: 100_000,
            max_total_backlog: 1_000_000,
            clock: Default::default(),
        };
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let n: u64 = v.parse().map_err(|_| {
                BusError::Invalid(format!("bus URL parameter {k}={v:?} must be a number"))
            })?;
            match k {
                "ack_wait_ms" => c.ack_wait = Duration::from_millis(n.max(1000)),
                "batch" => c.batch = (n as usize).clamp(1, 1024),
                "timeout_ms" => c.request_timeout = Duration::from_millis(n.max(100)),
                _ => {
                    return Err(BusError::Invalid(format!(
                        "unknown bus URL parameter {k:?} (known: ack_wait_ms, batch, timeout_ms)"
                    )));
                }
            }
        }
        Ok(c)
    }
}

pub(crate) struct Inner {
    config: NatsConfig,
    client: async_nats::Client,
    js: jetstream::Context,
    deliveries: stream::Stream,
    archive: stream::Stream,
    dlq: stream::Stream,
    rules_kv: jetstream::kv::Store,
    kv: Arc<NatsKv>,
    queues: queues::Queues,
    dead_count: AtomicUsize,
    closed: AtomicBool,
    close_tx: tokio::sync::watch::Sender<bool>,
    /// Archive scans running at once (see [`archive_scan_slots`]).
    archive_scans: tokio::sync::Semaphore,
    observer: std::sync::OnceLock<Arc<dyn CommitObserver>>,
}

/// The bus on NATS JetStream, shared by every node connected to the same server.
pub struct NatsBus {
    inner: Arc<Inner>,
    stats_task: tokio::task::JoinHandle<()>,
}

impl Drop for NatsBus {
    fn drop(&mut self) {
        self.close();
        self.stats_task.abort();
    }
}

fn store_err(what: &str, e: impl std::fmt::Display) -> BusError {
    BusError::Store(format!("{what}: {e}"))
}

impl NatsBus {
    /// Connects, creates the streams and buckets if they are missing, and starts
    /// the loop that keeps queue counts fresh.
    pub async fn connect(config: NatsConfig) -> Result<Arc<Self>, BusError> {
        let client = async_nats::ConnectOptions::new()
            .name("busbar")
            .connection_timeout(config.request_timeout)
            .request_timeout(Some(config.request_timeout))
            // Reconnect forever: a node outlives a NATS restart.
            .max_reconnects(None)
            .connect(config.url.as_str())
            .await
            .map_err(|e| store_err(&format!("cannot connect to NATS at {}", config.url), e))?;
        let js = jetstream::ContextBuilder::new()
            .timeout(config.request_timeout)
            .build(client.clone());
        let deliveries = js
            .get_or_create_stream(stream::Config {
                name: DELIVERIES_STREAM.into(),
                description: Some(
                    "busbar: pending deliveries, one subject per (bus, rule, target)".into(),
                ),
                subjects: vec![format!("{}.>", names::QUEUE_PREFIX)],
                retention: stream::RetentionPolicy::WorkQueue,
                discard: stream::DiscardPolicy::New,
                max_messages: config.max_total_backlog as i64,
                duplicate_window: Duration::from_secs(120),
                ..Default::default()
            })
            .await
            .map_err(|e| store_err(&format!("creating stream {DELIVERIES_STREAM}"), e))?;
        let archive = js
            .get_or_create_stream(stream::Config {
                name: ARCHIVE_STREAM.into(),
                description: Some("busbar: archived events by bus".into()),
                subjects: vec![format!("{}.>", names::ARCHIVE_PREFIX)],
                max_age: config.archive_retention,
                duplicate_window: Duration::from_secs(120),
                ..Default::default()
            })
            .await
            .map_err(|e| store_err(&format!("creating stream {ARCHIVE_STREAM}"), e))?;
        let dlq = js
            .get_or_create_stream(stream::Config {
                name: DLQ_STREAM.into(),
                description: Some("busbar: dead letters".into()),
                subjects: vec![format!("{}.>", names::DLQ_PREFIX)],
                duplicate_window: Duration::from_secs(120),
                ..Default::default()
            })
            .await
            .map_err(|e| store_err(&format!("creating stream {DLQ_STREAM}"), e))?;
        let kv_store = kv::open_bucket(&js, KV_BUCKET, "busbar: plugin state").await?;
        let rules_kv = kv::open_bucket(&js, RULES_BUCKET, "busbar: API rules and buses").await?;
        let (close_tx, _) = tokio::sync::watch::channel(false);
        let inner = Arc::new(Inner {
            kv: Arc::new(NatsKv::new(kv_store, tokio::runtime::Handle::current())),
            config,
            client,
            js,
            deliveries,
            archive,
            dlq,
            rules_kv,
            queues: Default::default(),
            dead_count: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
            close_tx,
            archive_scans: tokio::sync::Semaphore::new(archive_scan_slots()),
            observer: std::sync::OnceLock::new(),
        });
        inner.refresh_stats().await;
        let stats_task = tokio::spawn(queues::stats_loop(Arc::downgrade(&inner)));
        Ok(Arc::new(NatsBus { inner, stats_task }))
    }

    /// The plugin kv bucket (also through [`Bus::kv`]).
    pub fn nats_kv(&self) -> Arc<NatsKv> {
        self.inner.kv.clone()
    }
}

/// One message to publish and the event it belongs to.
struct Outgoing {
    event: usize,
    subject: String,
    msg_id: String,
    headers: HeaderMap,
    payload: Bytes,
}

impl Inner {
    fn connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    fn unreachable(&self) -> String {
        format!(
            "NATS at {} is unreachable; nothing was written, retry later",
            self.config.url
        )
    }

    /// Publishes routed `events`; `ids[i]` is the base of event i's message ids.
    /// `bounded`: apply the per-queue backlog bound (ingest, not handler output).
    async fn publish_routed(
        &self,
        events: Vec<RoutedEvent>,
        ids: &[String],
        bounded: bool,
    ) -> Vec<Result<(), PublishError>> {
        let mut results: Vec<Result<(), PublishError>> = vec![Ok(()); events.len()];
        if !self.connected() {
            let m = self.unreachable();
            return events
                .iter()
                .map(|_| Err(PublishError::Store(m.clone())))
                .collect();
        }
        let mut out = Vec::new();
        let mut added: std::collections::HashMap<String, usize> = Default::default();
        let mut committed: Vec<Option<Committed>> = vec![None; events.len()];
        for (i, (routed, base)) in events.into_iter().zip(ids).enumerate() {
            committed[i] = Committed::of(self.observer.get(), &routed);
            let RoutedEvent {
                event,
                json,
                routes,
                archive,
                ..
            } = routed;
            let payload = Bytes::from(json);
            let keys: Vec<String> = routes.iter().map(|r| r.queue_key(&event.bus)).collect();
            if bounded
                && let Some(msg) = keys.iter().find_map(|k| {
                    let n = self.queues.backlog(k) + added.get(k).copied().unwrap_or(0);
                    (n >= self.config.max_queue_backlog).then(|| {
                        format!(
                            "queue {k} holds about {n} deliveries, the limit is {}; retry later",
                            self.config.max_queue_backlog
                        )
                    })
                })
            {
                results[i] = Err(PublishError::Throttled(msg));
                continue;
            }
            if archive {
                out.push(Outgoing {
                    event: i,
                    subject: names::archive_subject(&event.bus),
                    msg_id: format!("a:{base}"),
                    headers: HeaderMap::new(),
                    payload: payload.clone(),
                });
            }
            for (route, key) in routes.into_iter().zip(keys) {
                let mut headers = HeaderMap::new();
                headers.insert(H_DELIVERY, uuid::Uuid::new_v4().to_string().as_str());
                headers.insert(H_PLUGIN, names::token(&route.plugin).as_str());
                out.push(Outgoing {
                    event: i,
                    subject: names::queue_subject(&event.bus, &route.rule, &route.target),
                    msg_id: format!("d:{base}:{}", names::short_hash(&key)),
                    headers,
                    payload: payload.clone(),
                });
                *added.entry(key).or_default() += 1;
            }
        }
        for (event, r) in self.send_all(out).await {
            if results[event].is_ok() {
                results[event] = r;
            }
        }
        for (k, n) in added {
            self.queues.add_backlog(&k, n);
        }
        // After the server's acks: another node may take a delivery a moment before
        // this report, so across nodes the order is best effort.
        if let Some(o) = self.observer.get() {
            for (c, r) in committed.into_iter().zip(&results) {
                if let (Some(c), Ok(())) = (c, r) {
                    o.committed(c);
                }
            }
        }
        results
    }

    /// Publishes every message at once and waits for all the acks: the server
    /// pipelines them, which is JetStream's group commit.
    async fn send_all(&self, out: Vec<Outgoing>) -> Vec<(usize, Result<(), PublishError>)> {
        let mut pending: Vec<(usize, Result<PublishAckFuture, PublishError>)> =
            Vec::with_capacity(out.len());
        for m in out {
            let publish = jetstream::message::PublishMessage::build()
                .payload(m.payload)
                .headers(m.headers)
                .message_id(m.msg_id);
            let sent = self
                .js
                .send_publish(m.subject, publish)
                .await
                .map_err(|e| self.publish_error(&e));
            pending.push((m.event, sent));
        }
        let acks = futures::future::join_all(pending.into_iter().map(|(i, sent)| async move {
            let r = match sent {
                Ok(ack) => ack.await.map(|_| ()).map_err(|e| self.publish_error(&e)),
                Err(e) => Err(e),
            };
            (i, r)
        }));
        acks.await
    }

    fn publish_error(&self, e: &jetstream::context::PublishError) -> PublishError {
        use jetstream::context::PublishErrorKind as K;
        let text = format!("{e}");
        match e.kind() {
            K::TimedOut | K::BrokenPipe => PublishError::Store(format!(
                "NATS at {} did not confirm the write within {:?} ({text}); it may or may not be stored, retry",
                self.config.url, self.config.request_timeout
            )),
            K::MaxAckPending => PublishError::Throttled(format!(
                "too many writes awaiting NATS acknowledgement ({text}); retry later"
            )),
            // The deliveries stream refuses new messages past its limits (discard new).
            _ if text.contains("maximum") || text.contains("resource limits") => {
                PublishError::Throttled(format!(
                    "the deliveries stream is full ({text}); retry later"
                ))
            }
            _ => PublishError::Store(format!("NATS refused the write: {text}")),
        }
    }

    fn first_error(results: Vec<Result<(), PublishError>>) -> Result<(), BusError> {
        match results.into_iter().find_map(|r| r.err()) {
            Some(e) => Err(BusError::Store(e.message().to_string())),
            None => Ok(()),
        }
    }
}

#[async_trait]
impl Bus for NatsBus {
    async fn publish(
        &self,
        events: Vec<RoutedEvent>,
    ) -> Result<Vec<Result<(), PublishError>>, BusError> {
        if self.inner.closed.load(Ordering::SeqCst) {
            return Err(BusError::Closed);
        }
        let ids: Vec<String> = events.iter().map(|e| e.event.id.clone()).collect();
        Ok(self.inner.publish_routed(events, &ids, true).await)
    }

    async fn take(&self, queue: &str) -> Option<Delivery> {
        queues::take(&self.inner, queue).await
    }

    async fn settle(&self, delivery: Delivery, outcome: Settle) -> Result<(), BusError> {
        queues::settle(&self.inner, delivery, outcome).await
    }

    fn queue_stats(&self) -> Vec<QueueStats> {
        self.inner.queues.stats()
    }

    async fn forget_queue(&self, queue: &str) {
        queues::forget(&self.inner, queue).await
    }

    async fn put_rule(&self, rule: &Rule) -> Result<(), BusError> {
        rules::put_rule(&self.inner.rules_kv, rule).await
    }

    async fn delete_rule(&self, bus: &str, name: &str) -> Result<bool, BusError> {
        rules::delete(&self.inner.rules_kv, &rules::rule_key(bus, name)).await
    }

    async fn rules(&self) -> Result<Vec<Rule>, BusError> {
        rules::list(&self.inner.rules_kv, "rule").await
    }

    async fn put_bus(&self, bus: &BusInfo) -> Result<(), BusError> {
        rules::put_bus(&self.inner.rules_kv, bus).await
    }

    async fn delete_bus(&self, name: &str) -> Result<bool, BusError> {
        rules::delete(&self.inner.rules_kv, &rules::bus_key(name)).await
    }

    async fn buses(&self) -> Result<Vec<BusInfo>, BusError> {
        rules::list(&self.inner.rules_kv, "bus").await
    }

    async fn watch_rules(
        &self,
    ) -> Result<Option<tokio::sync::mpsc::Receiver<StoredChange>>, BusError> {
        rules::watch(&self.inner.rules_kv, self.inner.close_tx.subscribe())
            .await
            .map(Some)
    }

    async fn dead_letters(&self, after: u64, limit: usize) -> Result<Vec<DeadLetter>, BusError> {
        dead::list(&self.inner, after, limit).await
    }

    async fn dead_letter(&self, id: u64) -> Result<Option<DeadLetter>, BusError> {
        dead::get(&self.inner, id).await
    }

    async fn redrive(&self, ids: Option<&[u64]>) -> Result<usize, BusError> {
        dead::redrive(&self.inner, ids).await
    }

    async fn purge_dead_letters(&self, ids: Option<&[u64]>) -> Result<usize, BusError> {
        dead::purge(&self.inner, ids).await
    }

    fn dead_letter_count(&self) -> usize {
        self.inner.dead_count.load(Ordering::Relaxed)
    }

    async fn archive(&self, query: ArchiveQuery) -> Result<ArchivePage, BusError> {
        archive::query(&self.inner, query).await
    }

    async fn expire_archive(&self, before_ms: i64) -> Result<usize, BusError> {
        archive::expire(&self.inner, before_ms).await
    }

    fn observe_commits(&self, observer: Arc<dyn CommitObserver>) {
        set_observer(&self.inner.observer, observer);
    }

    fn kv(&self) -> Arc<dyn crate::runtime::KvBackend> {
        self.inner.kv.clone()
    }

    fn close(&self) {
        self.inner.closed.store(true, Ordering::SeqCst);
        self.inner.close_tx.send_replace(true);
        if tokio::runtime::Handle::try_current().is_ok() {
            self.inner.queues.release_unclaimed();
        }
    }
}
