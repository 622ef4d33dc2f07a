//! The committer thread: every publish and settle goes through one thread that
//! applies all the operations waiting in its channel in ONE write transaction,
//! fsyncs once, and only then changes memory and answers the callers.
//!
//! Callers turn their events into [`Prepared`] ones before they send them, so
//! a commit only checks bounds and inserts bytes; [`Writer`] applies one batch
//! to the tables and lists in [`After`] what memory learns once it is durable.

use super::*;
use tokio::sync::oneshot;

type PublishReply = oneshot::Sender<Result<Vec<Result<(), PublishError>>, BusError>>;

/// One request to the committer, answered once the commit holding it is durable
/// (or has failed).
pub(super) enum Op {
    Publish {
        events: Vec<Prepared>,
        reply: PublishReply,
    },
    /// A worker's batch of settles, committed together.
    Settle {
        settles: Vec<Settling>,
        reply: oneshot::Sender<Result<(), BusError>>,
    },
}

/// One delivery's outcome on its way to the committer.
pub(super) struct Settling {
    delivery: Delivery,
    /// With an `Ack`, its `new_events` are moved, prepared, into `outputs`.
    outcome: Settle,
    outputs: Vec<Prepared>,
}

/// An event made ready for its commit by the caller, off the committer thread:
/// serialized once, routed on those bytes, its delivery records written. The
/// committer is the one serial step of the store, so it only checks bounds and
/// inserts bytes.
pub(super) struct Prepared {
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

/// What a commit changes in memory once it is durable.
enum After {
    /// Reported before the event's deliveries are enqueued (see [`CommitObserver`]).
    Committed(Box<Committed>),
    Enqueue(Box<Delivery>),
    Release(String),
    DeadLettered,
}

/// Commits routed events; the answer arrives once they are durable.
pub(super) async fn publish(
    store: &EmbeddedBus,
    events: Vec<RoutedEvent>,
) -> Result<Vec<Result<(), PublishError>>, BusError> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    let events = events.into_iter().map(|e| store.inner.prepare(e)).collect();
    let (reply, rx) = oneshot::channel();
    store.send(Op::Publish { events, reply })?;
    rx.await
        .map_err(|_| BusError::Store("the commit failed; nothing was written".into()))?
}

/// Commits deliveries' outcomes, with the acks' new events, in one commit.
pub(super) async fn settle(
    store: &EmbeddedBus,
    settles: Vec<(Delivery, Settle)>,
) -> Result<(), BusError> {
    if settles.is_empty() {
        return Ok(());
    }
    let settles = settles
        .into_iter()
        .map(|(delivery, mut outcome)| {
            let mut outputs = Vec::new();
            if let Settle::Ack { new_events, .. } = &mut outcome {
                outputs = std::mem::take(new_events)
                    .into_iter()
                    .map(|e| store.inner.prepare(e))
                    .collect();
            }
            Settling {
                delivery,
                outcome,
                outputs,
            }
        })
        .collect();
    let (reply, rx) = oneshot::channel();
    store.send(Op::Settle { settles, reply })?;
    rx.await
        .map_err(|_| BusError::Store("the commit failed".into()))?
}

impl EmbeddedBus {
    fn send(&self, op: Op) -> Result<(), BusError> {
        match &self.ops {
            Some(ops) => ops.send(op).map_err(|_| BusError::Closed),
            None => Err(BusError::Closed),
        }
    }
}

impl Inner {
    pub(super) fn commit_loop(self: Arc<Self>, rx: mpsc::Receiver<Op>) {
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
                        Op::Settle { settles, reply } => {
                            for s in settles {
                                w.settle(s.delivery, s.outcome, s.outputs)?;
                            }
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
                        After::Release(key) => self.release(&key),
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
        let dl = DeadLetter::of(d, id, reason, self.now);
        let bytes = serde_json::to_vec(&dl).map_err(|e| BusError::Store(e.to_string()))?;
        self.dead.insert(id, bytes.as_slice())?;
        self.after.push(After::DeadLettered);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{all, by_source, event, open, take};
    use super::*;
    use serde_json::json;

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
}
