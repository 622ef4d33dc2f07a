//! Taking and settling deliveries: one durable pull consumer per queue,
//! shared by every node, and the counts behind `queue_stats`.
//!
//! Each queue a node works on has one pull loop feeding a channel of capacity
//! one; the node's workers for that queue take from it. The loop pulls at most
//! `batch` messages ahead, so a node holds few deliveries it is not working on,
//! and the ones it holds when it dies come back to the other nodes after
//! `ack_wait`.

use super::*;
use async_nats::jetstream::consumer::{self, pull};
use async_nats::jetstream::{AckKind, Message};
use futures::StreamExt;
use parking_lot::Mutex;
use std::sync::Weak;
use tokio::sync::mpsc;

/// Errors remembered between attempts are node-local; past this many, the
/// oldest are forgotten (they only enrich dead-letter reasons).
const MAX_REMEMBERED_ERRORS: usize = 100_000;

/// A pulled delivery no worker of this node has taken for this long, while none
/// waits, goes back to the server for another node's workers. A fetch outlives
/// the worker that asked for it (a `take` cancelled by a concurrency change, a
/// worker that found other work), so without this a delivery could sit on a busy
/// node until `ack_wait` while other nodes idle.
const UNCLAIMED_AFTER: Duration = Duration::from_millis(500);

struct Feed {
    rx: tokio::sync::Mutex<mpsc::UnboundedReceiver<(std::time::Instant, Message)>>,
    /// Workers of this node waiting in `take` for this queue.
    waiting: AtomicUsize,
    /// Pulled messages in the channel that no worker has taken yet.
    buffered: Arc<AtomicUsize>,
    wake: tokio::sync::Notify,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
    sweep: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Drop for Feed {
    fn drop(&mut self) {
        for t in [self.task.lock().take(), self.sweep.lock().take()]
            .into_iter()
            .flatten()
        {
            t.abort();
        }
    }
}

/// Counts a worker as waiting for as long as its `take` runs.
struct Waiting<'a>(&'a Feed);

impl<'a> Waiting<'a> {
    fn new(feed: &'a Feed) -> Self {
        feed.waiting.fetch_add(1, Ordering::SeqCst);
        feed.wake.notify_one();
        Waiting(feed)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::SeqCst);
    }
}

#[derive(Default)]
pub(crate) struct Queues {
    feeds: DashMap<String, Arc<Feed>>,
    /// Messages taken and not yet settled, by (queue, stream sequence).
    in_flight: DashMap<(String, u64), Message>,
    /// Counts from the last refresh, plus what this node published since.
    stats: Mutex<std::collections::BTreeMap<String, QueueStats>>,
    /// Queues this node has published to or taken from: the ones it reports.
    known: DashMap<String, ()>,
    last_errors: DashMap<String, String>,
}

impl Queues {
    pub(crate) fn backlog(&self, key: &str) -> usize {
        self.stats.lock().get(key).map(|s| s.backlog).unwrap_or(0)
    }

    pub(crate) fn add_backlog(&self, key: &str, n: usize) {
        self.known.insert(key.to_string(), ());
        let mut stats = self.stats.lock();
        let s = stats.entry(key.to_string()).or_insert_with(|| QueueStats {
            queue: key.to_string(),
            ..Default::default()
        });
        s.backlog += n;
    }

    pub(crate) fn stats(&self) -> Vec<QueueStats> {
        self.stats.lock().values().cloned().collect()
    }
}

impl Inner {
    /// Refreshes the queue counts and the dead-letter count from the server.
    pub(crate) async fn refresh_stats(&self) {
        if !self.connected() {
            return;
        }
        let mut dlq = self.dlq.clone();
        if let Ok(info) = dlq.info().await {
            self.dead_count
                .store(info.state.messages as usize, Ordering::Relaxed);
        }
        let deliveries = self.deliveries.clone();
        let counts = match deliveries
            .info_with_subjects(format!("{}.>", names::QUEUE_PREFIX))
            .await
        {
            Ok(mut info) => {
                let mut counts = std::collections::HashMap::new();
                while let Some(Ok((subject, n))) = info.next().await {
                    counts.insert(subject, n);
                }
                counts
            }
            Err(e) => {
                tracing::debug!(error = %e, "queue counts not refreshed");
                return;
            }
        };
        let now = self.config.clock.now_ms();
        let mut fresh = std::collections::BTreeMap::new();
        let keys: Vec<String> = self.queues.known.iter().map(|k| k.key().clone()).collect();
        for key in keys {
            let mut parts = key.splitn(3, '/');
            let (Some(b), Some(r), Some(t)) = (parts.next(), parts.next(), parts.next()) else {
                continue;
            };
            let subject = names::queue_subject(b, r, t);
            let total = counts.get(&subject).copied().unwrap_or(0);
            let mut s = QueueStats {
                queue: key.clone(),
                ..Default::default()
            };
            if total > 0 {
                let in_flight = match self
                    .deliveries
                    .consumer_info(names::durable_name(&key))
                    .await
                {
                    Ok(info) => info.num_ack_pending,
                    Err(_) => 0,
                };
                s.in_flight = in_flight;
                s.backlog = (total as usize).saturating_sub(in_flight);
                // Work-queue retention drops acked messages, so the subject's first
                // message is the oldest delivery not yet done.
                if let Ok(m) = self
                    .deliveries
                    .get_first_raw_message_by_subject(&subject, 1)
                    .await
                {
                    let at = (m.time.unix_timestamp_nanos() / 1_000_000) as i64;
                    s.oldest_age_ms = (now - at).max(0) as u64;
                }
            }
            fresh.insert(key, s);
        }
        *self.queues.stats.lock() = fresh;
    }

    fn consumer_config(&self, key: &str, subject: &str) -> pull::Config {
        pull::Config {
            durable_name: Some(names::durable_name(key)),
            description: Some(format!("busbar queue {key}")),
            filter_subject: subject.to_string(),
            deliver_policy: consumer::DeliverPolicy::All,
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait: self.config.ack_wait,
            // Unlimited: the dispatcher's retry policy decides when to give up and
            // dead-letters with the reason; a server-side cap would strand the
            // message in the stream with no dead letter.
            max_deliver: -1,
            max_ack_pending: 100_000,
            ..Default::default()
        }
    }

    fn feed(self: &Arc<Self>, key: &str) -> Arc<Feed> {
        if let Some(f) = self.queues.feeds.get(key) {
            return f.clone();
        }
        self.queues
            .feeds
            .entry(key.to_string())
            .or_insert_with(|| {
                let (tx, rx) = mpsc::unbounded_channel();
                let feed = Arc::new(Feed {
                    rx: tokio::sync::Mutex::new(rx),
                    waiting: AtomicUsize::new(0),
                    buffered: Default::default(),
                    wake: tokio::sync::Notify::new(),
                    task: Mutex::new(None),
                    sweep: Mutex::new(None),
                });
                let task = tokio::spawn(pull_loop(
                    Arc::downgrade(self),
                    Arc::downgrade(&feed),
                    key.to_string(),
                    tx.clone(),
                ));
                let sweep = tokio::spawn(return_unclaimed(Arc::downgrade(&feed), tx));
                *feed.task.lock() = Some(task);
                *feed.sweep.lock() = Some(sweep);
                feed
            })
            .clone()
    }
}

/// Pulls for one queue only as many messages as this node has workers
/// waiting for it, so a node never sits on deliveries another node's idle
/// workers could run. Each pull request is a fetch of its own; several can be
/// outstanding. Errors (server restart, consumer lost) are retried with
/// backoff, so pulling resumes by itself.
async fn pull_loop(
    inner: Weak<Inner>,
    feed: Weak<Feed>,
    key: String,
    tx: mpsc::UnboundedSender<(std::time::Instant, Message)>,
) {
    let mut parts = key.splitn(3, '/');
    let (Some(b), Some(r), Some(t)) = (parts.next(), parts.next(), parts.next()) else {
        tracing::error!(queue = %key, "not a queue key");
        return;
    };
    let subject = names::queue_subject(b, r, t);
    let requested = Arc::new(AtomicUsize::new(0));
    let fetched = Arc::new(tokio::sync::Notify::new());
    let mut consumer: Option<async_nats::jetstream::consumer::Consumer<pull::Config>> = None;
    let mut backoff = Duration::from_millis(100);
    loop {
        let (Some(me), Some(f)) = (inner.upgrade(), feed.upgrade()) else {
            return;
        };
        if me.closed.load(Ordering::SeqCst) {
            return;
        }
        let want = f
            .waiting
            .load(Ordering::SeqCst)
            .min(me.config.batch)
            .saturating_sub(requested.load(Ordering::SeqCst) + f.buffered.load(Ordering::SeqCst));
        if want == 0 {
            let mut closed = me.close_tx.subscribe();
            drop(me);
            // Holding the feed here is fine: the wait ends when the bus closes or
            // goes away (its close sender drops), and the loop then returns.
            tokio::select! {
                _ = f.wake.notified() => {}
                _ = fetched.notified() => {}
                _ = closed.changed() => {}
            }
            continue;
        }
        if consumer.is_none() {
            match me
                .deliveries
                .get_or_create_consumer(
                    &names::durable_name(&key),
                    me.consumer_config(&key, &subject),
                )
                .await
            {
                Ok(c) => consumer = Some(c),
                Err(e) => {
                    tracing::warn!(queue = %key, error = %e, "cannot pull deliveries yet; retrying");
                    drop((me, f));
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            }
        }
        let c = consumer.clone().expect("set above");
        requested.fetch_add(want, Ordering::SeqCst);
        let batch = c
            .fetch()
            .max_messages(want)
            .expires(Duration::from_secs(5))
            .messages()
            .await;
        match batch {
            Ok(mut messages) => {
                backoff = Duration::from_millis(100);
                let (tx, requested, fetched, key) =
                    (tx.clone(), requested.clone(), fetched.clone(), key.clone());
                let buffered = f.buffered.clone();
                let mut closed = me.close_tx.subscribe();
                tokio::spawn(async move {
                    let mut failed = false;
                    loop {
                        // A closing node stops pulling at once: whatever it still
                        // received would sit unworked until ack_wait.
                        let m = tokio::select! {
                            m = messages.next() => m,
                            _ = closed.changed() => break,
                        };
                        let Some(m) = m else { break };
                        match m {
                            Ok(m) => {
                                buffered.fetch_add(1, Ordering::SeqCst);
                                if tx.send((std::time::Instant::now(), m)).is_err() {
                                    break;
                                }
                            }
                            Err(e) => {
                                tracing::debug!(queue = %key, error = %e, "pull request ended");
                                failed = true;
                                break;
                            }
                        }
                    }
                    if failed {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    requested.fetch_sub(want, Ordering::SeqCst);
                    fetched.notify_one();
                });
            }
            Err(e) => {
                requested.fetch_sub(want, Ordering::SeqCst);
                tracing::warn!(queue = %key, error = %e, "pulling deliveries failed; retrying");
                consumer = None;
                drop((me, f));
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Naks what this node pulled for a queue but no worker took within
/// [`UNCLAIMED_AFTER`], so the server hands it to a node that has a free worker.
/// Newer unclaimed messages go back into the channel, behind any that arrived
/// meanwhile (delivery order across a queue is not promised).
async fn return_unclaimed(
    feed: Weak<Feed>,
    tx: mpsc::UnboundedSender<(std::time::Instant, Message)>,
) {
    let mut tick = tokio::time::interval(UNCLAIMED_AFTER / 2);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(f) = feed.upgrade() else { return };
        if f.waiting.load(Ordering::SeqCst) > 0 || f.buffered.load(Ordering::SeqCst) == 0 {
            continue;
        }
        // A worker waiting in `take` holds the lock: then it takes the messages itself.
        let Ok(mut rx) = f.rx.try_lock() else {
            continue;
        };
        let mut keep = Vec::new();
        while let Ok((arrived, m)) = rx.try_recv() {
            if arrived.elapsed() >= UNCLAIMED_AFTER {
                f.buffered.fetch_sub(1, Ordering::SeqCst);
                tokio::spawn(async move { m.ack_with(AckKind::Nak(None)).await });
            } else {
                keep.push((arrived, m));
            }
        }
        drop(rx);
        for m in keep {
            if tx.send(m).is_err() {
                return;
            }
        }
    }
}

impl Queues {
    /// Hands back what this node pulled but no worker took, for immediate
    /// redelivery elsewhere.
    pub(crate) fn release_unclaimed(&self) {
        for feed in self.feeds.iter() {
            if let Ok(mut rx) = feed.rx.try_lock() {
                while let Ok((_, m)) = rx.try_recv() {
                    feed.buffered.fetch_sub(1, Ordering::SeqCst);
                    tokio::spawn(async move { m.ack_with(AckKind::Nak(None)).await });
                }
            }
        }
    }
}

/// Stops pulling for a queue no rule feeds and deletes its durable consumer, so
/// removed rules leave nothing behind on the server. Messages still in the
/// stream (another node's, published meanwhile) make a node that sees the
/// queue again create the consumer afresh.
pub(super) async fn forget(inner: &Inner, key: &str) {
    inner.queues.feeds.remove(key);
    inner.queues.known.remove(key);
    inner.queues.stats.lock().remove(key);
    match inner
        .deliveries
        .delete_consumer(&names::durable_name(key))
        .await
    {
        Ok(_) => tracing::info!(queue = %key, "deleted the consumer of a removed rule's queue"),
        Err(e) => tracing::debug!(queue = %key, error = %e, "consumer not deleted"),
    }
}

pub(super) async fn stats_loop(inner: Weak<Inner>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(me) = inner.upgrade() else { return };
        if me.closed.load(Ordering::SeqCst) {
            return;
        }
        me.refresh_stats().await;
    }
}

/// Waits for the next delivery of `key` on this node. Cancel-safe: a message
/// leaves the channel only in the poll that returns it.
pub(super) async fn take(inner: &Arc<Inner>, key: &str) -> Option<Delivery> {
    let mut closed = inner.close_tx.subscribe();
    if *closed.borrow() {
        return None;
    }
    inner.queues.known.insert(key.to_string(), ());
    let feed = inner.feed(key);
    let _waiting = Waiting::new(&feed);
    loop {
        let (arrived, msg) = tokio::select! {
            m = async { feed.rx.lock().await.recv().await } => m?,
            _ = closed.changed() => return None,
        };
        feed.buffered.fetch_sub(1, Ordering::SeqCst);
        match delivery_of(inner, key, &msg) {
            Ok(d) => {
                if arrived.elapsed() > inner.config.ack_wait / 4 {
                    touch(&msg);
                }
                inner.queues.in_flight.insert((key.to_string(), d.seq), msg);
                return Some(d);
            }
            Err(reason) => {
                // Not a delivery busbar wrote: keeping it would block nothing but
                // would be redelivered forever, so it is terminated with a log line.
                tracing::error!(queue = %key, %reason, "dropping an unreadable delivery message");
                tokio::spawn(async move { msg.ack_with(AckKind::Term).await });
            }
        }
    }
}

fn delivery_of(inner: &Inner, key: &str, msg: &Message) -> Result<Delivery, String> {
    let info = msg.info().map_err(|e| e.to_string())?;
    let (_, rule, target) =
        names::parse_queue_subject(&msg.subject).ok_or("subject is not a queue subject")?;
    let headers = msg.headers.as_ref().ok_or("no headers")?;
    let id = headers
        .get(H_DELIVERY)
        .ok_or("no delivery id header")?
        .to_string();
    let plugin = headers
        .get(H_PLUGIN)
        .and_then(|p| names::untoken(p.as_str()))
        .ok_or("no plugin header")?;
    let event: Event = serde_json::from_slice(&msg.payload).map_err(|e| e.to_string())?;
    let created_ms = (info.published.unix_timestamp_nanos() / 1_000_000) as i64;
    let now = inner.config.clock.now_ms();
    // The server counts every hand-out, including those to a node that died
    // mid-call: a delivery that keeps killing nodes still runs out of attempts.
    let attempts = (info.delivered.max(1) - 1) as u32;
    let seq = info.stream_sequence;
    Ok(Delivery {
        last_error: inner.queues.last_errors.get(&id).map(|e| e.clone()),
        id,
        seq,
        queue: key.to_string(),
        rule,
        target,
        plugin,
        event,
        attempts,
        created_ms,
        due_ms: now,
    })
}

pub(super) async fn settle(
    inner: &Arc<Inner>,
    d: Delivery,
    outcome: Settle,
) -> Result<(), BusError> {
    let Some((_, msg)) = inner.queues.in_flight.remove(&(d.queue.clone(), d.seq)) else {
        return Err(BusError::NotFound(format!(
            "delivery {} of queue {} is not in flight on this node",
            d.id, d.queue
        )));
    };
    let result = settle_message(inner, &d, &msg, outcome).await;
    if result.is_err() {
        // Not acknowledged: the server hands the message out again after ack_wait.
        tracing::warn!(queue = %d.queue, delivery = %d.id, "settle failed; the delivery will be redelivered");
    }
    result
}

async fn settle_message(
    inner: &Arc<Inner>,
    d: &Delivery,
    msg: &Message,
    outcome: Settle,
) -> Result<(), BusError> {
    match outcome {
        Settle::Ack {
            new_events,
            stopped,
        } => {
            // Outputs first, each with an id derived from the delivery, so a
            // redelivery after a crash between these writes and the ack stores
            // them once (within the duplicate window).
            let ids: Vec<String> = (0..new_events.len())
                .map(|i| format!("{}:{i}", d.id))
                .collect();
            let results = inner.publish_routed(new_events, &ids, false).await;
            Inner::first_error(results)?;
            for (i, (event, reason)) in stopped.into_iter().enumerate() {
                let mut stop = d.clone();
                stop.event = event;
                inner
                    .write_dead_letter(&stop, &reason, &format!("x:{}:{i}", d.id))
                    .await?;
            }
            inner.queues.last_errors.remove(&d.id);
            msg.double_ack()
                .await
                .map_err(|e| store_err(&format!("acknowledging delivery {}", d.id), e))
        }
        Settle::Retry { due_ms, error } => {
            if inner.queues.last_errors.len() >= MAX_REMEMBERED_ERRORS {
                inner.queues.last_errors.clear();
            }
            inner.queues.last_errors.insert(d.id.clone(), error);
            let delay = Duration::from_millis((due_ms - inner.config.clock.now_ms()).max(0) as u64);
            msg.ack_with(AckKind::Nak(Some(delay)))
                .await
                .map_err(|e| store_err(&format!("scheduling the retry of delivery {}", d.id), e))
        }
        Settle::DeadLetter { reason, keep } => {
            if keep {
                inner
                    .write_dead_letter(d, &reason, &format!("dl:{}:{}", d.id, d.attempts))
                    .await?;
            } else {
                tracing::warn!(rule = %d.rule, target = %d.target, event = %d.event.id, %reason,
                    "delivery dropped: the target's dead-letter queue is off");
            }
            inner.queues.last_errors.remove(&d.id);
            // A plain ack: under work-queue retention it removes the message, and
            // the dead letter (written first) is now the record.
            msg.double_ack()
                .await
                .map_err(|e| store_err(&format!("acknowledging delivery {}", d.id), e))
        }
    }
}

/// Sends the "still working" signal for messages that waited in this node's
/// buffer: their ack_wait started when they reached the node, not the worker.
fn touch(msg: &Message) {
    let m = msg.clone();
    tokio::spawn(async move { m.ack_with(AckKind::Progress).await });
}
