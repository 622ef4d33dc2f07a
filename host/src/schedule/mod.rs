//! Schedules that fire: scheduled rules (`ScheduleExpression`) and the
//! EventBridge Scheduler API's schedules, run by one [`Scheduler`] per node.
//!
//! - [`expr`]: `rate()`, `cron()` and `at()`, and the next fire after a moment.
//! - [`state`]: the durable state of each schedule (next fire, last fire, claim).
//! - [`api`]: the Scheduler API's schedules and groups, kept in the kv store.
//! - [`fire`]: the events a tick publishes on a node.
//! - The [`Scheduler`] itself: every schedule of the node in one table ordered
//!   by due time, and ONE task that sleeps until the earliest is due (on the
//!   node's [`Clock`], so tests move time instead of waiting). Many schedules
//!   cost a table entry each, not a task or a timer each.
//!
//! Firing a tick is a claim, a publish, then an advance, each written to the
//! state by compare-and-swap: on JetStream every node races for the same
//! state and exactly one fires the tick; a node that dies holding a claim
//! loses it after [`state::CLAIM_MS`] and another node fires the tick with
//! the same event id. A node that was down finds its schedules' due times in
//! the past and fires each once, with the latest scheduled time it missed
//! (the others are counted as missed), then carries on from now.
//!
//! What a fire does is the [`Sink`]'s business: `node.rs` publishes the
//! scheduled event through the ordinary publish path.

pub mod api;
pub mod expr;
pub mod fire;
pub mod state;

use crate::clock::Clock;
use crate::runtime::KvBackend;
use async_trait::async_trait;
use chrono_tz::Tz;
use expr::Expression;
use parking_lot::Mutex;
use serde::Serialize;
use state::{Claim, FireState, LastFire, StateStore};
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use tokio::sync::Notify;

/// One schedule as the scheduler runs it.
#[derive(Debug, Clone)]
pub struct Job {
    /// Unique on the node: `rule/BUS/NAME` or `schedule/GROUP/NAME`; also the state's key.
    pub id: String,
    pub expression: Expression,
    /// The expression as written (listings, the fingerprint).
    pub text: String,
    pub zone: Tz,
    pub start_ms: Option<i64>,
    pub end_ms: Option<i64>,
    /// FlexibleTimeWindow in ms: each fire is due at its scheduled time plus
    /// an offset within the window (0: exactly on time).
    pub window_ms: i64,
    /// Where the clock starts (a schedule's creation time), or `None` to start
    /// it when the scheduler first sees the job and store that.
    pub anchor_ms: Option<i64>,
    /// What a fire does; the scheduler only carries it to the [`Sink`].
    pub action: Action,
}

/// What a tick publishes.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// A scheduled rule: EventBridge's `Scheduled Event`, routed to that rule alone.
    Rule {
        bus: String,
        name: String,
        arn: String,
        region: String,
    },
    /// A schedule of the Scheduler API.
    Schedule { group: String, name: String },
}

impl Job {
    /// The timing of the job as text: when it changes, the clock starts again.
    pub fn fingerprint(&self) -> String {
        use sha2::Digest;
        let text = format!(
            "{}|{}|{:?}|{:?}|{}|{:?}",
            self.text, self.zone, self.start_ms, self.end_ms, self.window_ms, self.anchor_ms
        );
        hex::encode(&sha2::Sha256::digest(text.as_bytes())[..8])
    }

    /// The first scheduled time strictly after `after_ms`, within the job's
    /// start and end dates.
    pub fn next_after(&self, after_ms: i64, anchor_ms: i64) -> Option<i64> {
        let from = match self.start_ms {
            Some(s) => after_ms.max(s - 1),
            None => after_ms,
        };
        let next = self.expression.next_after(from, anchor_ms, self.zone)?;
        match self.end_ms {
            Some(end) if next > end => None,
            _ => Some(next),
        }
    }

    /// When the tick scheduled at `scheduled_ms` is due: within the flexible
    /// window at an offset drawn from the job and the tick, so every node and
    /// every restart agrees on it without storing it first.
    pub fn due(&self, scheduled_ms: i64) -> i64 {
        if self.window_ms <= 0 {
            return scheduled_ms;
        }
        use sha2::Digest;
        let h = sha2::Sha256::digest(format!("{}|{scheduled_ms}", self.id).as_bytes());
        let n = u64::from_le_bytes(h[..8].try_into().expect("8 bytes"));
        scheduled_ms + (n % self.window_ms as u64) as i64
    }

    /// The state of a job nobody has fired yet, its clock started at `anchor_ms`.
    fn fresh_state(&self, anchor_ms: i64) -> FireState {
        let next = self.next_after(anchor_ms, anchor_ms);
        FireState {
            fingerprint: self.fingerprint(),
            anchor_ms,
            next_ms: next,
            due_ms: next.map(|n| self.due(n)),
            last: None,
            fires: 0,
            missed: 0,
            claim: None,
        }
    }

    /// The id of the event fired for the tick at `scheduled_ms`: the same on
    /// every node and after a restart, so a tick taken over from a dead node
    /// carries the id the dead node would have used (a v4-shaped UUID).
    pub fn event_id(&self, scheduled_ms: i64) -> String {
        use sha2::Digest;
        let h = sha2::Sha256::digest(
            format!("{}|{}|{scheduled_ms}", self.id, self.fingerprint()).as_bytes(),
        );
        let bytes: [u8; 16] = h[..16].try_into().expect("16 bytes");
        uuid::Builder::from_random_bytes(bytes)
            .into_uuid()
            .to_string()
    }
}

/// What a fire does, and what happens when a schedule is over.
#[async_trait]
pub trait Sink: Send + Sync + 'static {
    /// Publishes the tick scheduled at `scheduled_ms` as event `event_id`.
    async fn fire(&self, job: &Job, scheduled_ms: i64, event_id: String) -> Result<(), String>;
    /// The job has no further fire (its `at()` fired, its end date passed).
    async fn completed(&self, _job: &Job) {}
}

/// A schedule as listings show it.
#[derive(Debug, Clone, Serialize)]
pub struct ScheduleView {
    pub id: String,
    pub expression: String,
    pub timezone: String,
    /// RFC 3339 times; absent when unknown or none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_fire: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_fire: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_outcome: Option<String>,
    pub fires: u64,
    pub missed: u64,
}

struct Entry {
    job: Arc<Job>,
    fingerprint: String,
    /// The due time this entry is filed under in `Table::due`.
    due_ms: Option<i64>,
}

#[derive(Default)]
struct Table {
    jobs: HashMap<String, Entry>,
    /// (due time, id) of every job with a next fire: the earliest is first.
    due: BTreeSet<(i64, String)>,
}

impl Table {
    fn file(&mut self, id: &str, due_ms: Option<i64>) {
        if let Some(e) = self.jobs.get_mut(id) {
            if let Some(old) = e.due_ms.take() {
                self.due.remove(&(old, id.to_string()));
            }
            if let Some(d) = due_ms {
                self.due.insert((d, id.to_string()));
            }
            e.due_ms = due_ms;
        }
    }

    fn remove(&mut self, id: &str) -> Option<Entry> {
        let e = self.jobs.remove(id)?;
        if let Some(d) = e.due_ms {
            self.due.remove(&(d, id.to_string()));
        }
        Some(e)
    }
}

/// The most a sleep lasts before the table is looked at again: bounds how
/// stale this node's view of another node's fires can get.
const MAX_SLEEP_MS: i64 = 60_000;

/// Every schedule of one node and the one task that fires them.
pub struct Scheduler {
    table: Mutex<Table>,
    wake: Notify,
    clock: Arc<Clock>,
    store: StateStore,
    sink: Arc<dyn Sink>,
    /// Names this node in claims and last fires.
    node: String,
    stopped: std::sync::atomic::AtomicBool,
}

impl Scheduler {
    pub fn new(clock: Arc<Clock>, kv: Arc<dyn KvBackend>, sink: Arc<dyn Sink>) -> Arc<Scheduler> {
        Arc::new(Scheduler {
            table: Mutex::default(),
            wake: Notify::new(),
            clock,
            store: StateStore::new(kv),
            sink,
            node: uuid::Uuid::new_v4().to_string(),
            stopped: Default::default(),
        })
    }

    /// This node's name in claims and last fires.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Starts the one task that fires every schedule of this node.
    pub fn start(self: &Arc<Self>) {
        let me = self.clone();
        tokio::spawn(async move { me.run().await });
    }

    /// Ends the firing task (at shutdown; a tick being fired finishes first).
    pub fn stop(&self) {
        self.stopped
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.wake.notify_one();
    }

    /// Makes the jobs whose ids start with `prefix` exactly `jobs`: new ones
    /// are added, changed ones restart their clock, missing ones are dropped
    /// and their state forgotten (a disabled rule starts afresh when enabled).
    pub async fn replace(&self, prefix: &str, jobs: Vec<Job>) {
        let mut gone = Vec::new();
        let mut added = 0usize;
        {
            let mut t = self.table.lock();
            let wanted: HashMap<&str, &Job> = jobs.iter().map(|j| (j.id.as_str(), j)).collect();
            let stale: Vec<String> = t
                .jobs
                .keys()
                .filter(|id| id.starts_with(prefix) && !wanted.contains_key(id.as_str()))
                .cloned()
                .collect();
            for id in stale {
                t.remove(&id);
                gone.push(id);
            }
            for job in jobs {
                let fingerprint = job.fingerprint();
                if let Some(e) = t.jobs.get_mut(&job.id)
                    && e.fingerprint == fingerprint
                {
                    // Same timing: keep the clock, take the new action.
                    e.job = Arc::new(job);
                    continue;
                }
                let id = job.id.clone();
                t.remove(&id);
                // Due at once: the first look reads (or starts) the stored state.
                let now = self.clock.now_ms();
                t.jobs.insert(
                    id.clone(),
                    Entry {
                        job: Arc::new(job),
                        fingerprint,
                        due_ms: None,
                    },
                );
                t.file(&id, Some(now));
                added += 1;
            }
        }
        for id in gone {
            if let Err(e) = self.store.delete(&id).await {
                tracing::warn!(schedule = %id, error = %e, "cannot forget a removed schedule's state");
            }
        }
        if added > 0 {
            self.wake.notify_one();
        }
        metrics::gauge!("busbar_schedules").set(self.table.lock().jobs.len() as f64);
    }

    /// Every job of this node with its stored state, ordered by id, from `after`.
    pub async fn list(&self, prefix: &str, after: Option<&str>, limit: usize) -> Vec<ScheduleView> {
        let jobs: Vec<Arc<Job>> = {
            let t = self.table.lock();
            let mut v: Vec<Arc<Job>> = t
                .jobs
                .values()
                .filter(|e| e.job.id.starts_with(prefix))
                .filter(|e| after.is_none_or(|a| e.job.id.as_str() > a))
                .map(|e| e.job.clone())
                .collect();
            v.sort_by(|a, b| a.id.cmp(&b.id));
            v.truncate(limit);
            v
        };
        let mut out = Vec::with_capacity(jobs.len());
        for job in jobs {
            out.push(self.view(&job).await);
        }
        out
    }

    /// One job's listing, read from its stored state (another node may have fired it).
    pub async fn view_of(&self, id: &str) -> Option<ScheduleView> {
        let job = self.table.lock().jobs.get(id).map(|e| e.job.clone())?;
        Some(self.view(&job).await)
    }

    async fn view(&self, job: &Job) -> ScheduleView {
        let state = match self.store.read(&job.id).await {
            Ok(r) => r
                .state
                .filter(|s| s.fingerprint == job.fingerprint())
                .or_else(|| job.anchor_ms.map(|a| job.fresh_state(a))),
            Err(_) => None,
        };
        let text = |ms: Option<i64>| ms.map(crate::bus::ms_to_rfc3339);
        ScheduleView {
            id: job.id.clone(),
            expression: job.text.clone(),
            timezone: job.zone.name().to_string(),
            next_fire: text(state.as_ref().and_then(|s| s.next_ms)),
            last_fire: text(
                state
                    .as_ref()
                    .and_then(|s| s.last.as_ref())
                    .map(|l| l.scheduled_ms),
            ),
            last_outcome: state
                .as_ref()
                .and_then(|s| s.last.as_ref())
                .map(|l| l.outcome.clone()),
            fires: state.as_ref().map_or(0, |s| s.fires),
            missed: state.as_ref().map_or(0, |s| s.missed),
        }
    }

    /// The earliest due time in the table (what the one timer waits for).
    pub fn earliest_due(&self) -> Option<i64> {
        self.table.lock().due.first().map(|(d, _)| *d)
    }

    async fn run(self: Arc<Self>) {
        while !self.stopped.load(std::sync::atomic::Ordering::SeqCst) {
            let now = self.clock.now_ms();
            let due: Vec<String> = {
                let t = self.table.lock();
                t.due
                    .iter()
                    .take_while(|(d, _)| *d <= now)
                    .map(|(_, id)| id.clone())
                    .collect()
            };
            for id in &due {
                self.tick(id).await;
            }
            if !due.is_empty() {
                continue;
            }
            let wait = self
                .earliest_due()
                .map_or(MAX_SLEEP_MS, |d| (d - now).clamp(1, MAX_SLEEP_MS));
            tokio::select! {
                _ = self.clock.sleep_ms(wait as u64) => {}
                _ = self.wake.notified() => {}
            }
        }
    }

    /// Looks at one due job: fires it if its stored state says so and this
    /// node wins the claim, else files it under the time to look again.
    async fn tick(&self, id: &str) {
        let Some((job, fingerprint)) = self
            .table
            .lock()
            .jobs
            .get(id)
            .map(|e| (e.job.clone(), e.fingerprint.clone()))
        else {
            return;
        };
        let next_look = match self.try_fire(&job, &fingerprint).await {
            Ok(next) => next,
            Err(e) => {
                tracing::warn!(schedule = %id, error = %e, "schedule state unreadable; trying again in a second");
                Some(self.clock.now_ms() + 1_000)
            }
        };
        let mut t = self.table.lock();
        // The job may have been replaced while it fired; only file the same one.
        if t.jobs.get(id).is_some_and(|e| e.fingerprint == fingerprint) {
            t.file(id, next_look);
        }
    }

    /// One attempt at the job's current tick; returns when to look again.
    async fn try_fire(
        &self,
        job: &Job,
        fingerprint: &str,
    ) -> Result<Option<i64>, crate::runtime::KvError> {
        for _ in 0..16 {
            let now = self.clock.now_ms();
            let read = self.store.read(&job.id).await?;
            let state = match read.state.filter(|s| s.fingerprint == fingerprint) {
                Some(s) => s,
                None => {
                    let anchor = job.anchor_ms.unwrap_or(now);
                    let fresh = job.fresh_state(anchor);
                    if job.anchor_ms.is_none() || read.raw.is_some() {
                        // Start the clock durably before anything fires from it.
                        if self.store.swap(&job.id, read.raw, &fresh).await?.is_none() {
                            continue;
                        }
                        if fresh.due_ms.is_some_and(|d| d > now) {
                            return Ok(fresh.due_ms);
                        }
                        continue;
                    }
                    fresh
                }
            };
            let Some(due) = state.due_ms else {
                self.sink.completed(job).await;
                return Ok(None);
            };
            if due > now {
                return Ok(Some(due));
            }
            if let Some(c) = &state.claim
                && c.until_ms > now
                && c.node != self.node
            {
                return Ok(Some(c.until_ms));
            }
            // The latest scheduled time that has passed: missed ones fold into it.
            let mut tick = state.next_ms.unwrap_or(due);
            let mut skipped = 0u64;
            while let Some(n) = job.next_after(tick, state.anchor_ms) {
                if n > now || skipped >= 1_000_000 {
                    break;
                }
                tick = n;
                skipped += 1;
            }
            let claimed = FireState {
                claim: Some(Claim {
                    node: self.node.clone(),
                    until_ms: now + state::CLAIM_MS,
                }),
                ..state.clone()
            };
            let Some(claimed_raw) = self.store.swap(&job.id, read.raw, &claimed).await? else {
                continue;
            };
            let outcome = match self.sink.fire(job, tick, job.event_id(tick)).await {
                Ok(()) => "ok".to_string(),
                Err(e) => e,
            };
            let fired_ms = self.clock.now_ms();
            let next = job.next_after(tick.max(fired_ms), state.anchor_ms);
            metrics::counter!(
                "busbar_schedule_fires_total",
                "outcome" => if outcome == "ok" { "ok" } else { "failed" }
            )
            .increment(1);
            if skipped > 0 {
                metrics::counter!("busbar_schedule_misses_total").increment(skipped);
                tracing::info!(schedule = %job.id, missed = skipped, "fired once for scheduled times missed while no node ran them");
            }
            if outcome != "ok" {
                tracing::warn!(schedule = %job.id, error = %outcome, "scheduled event not published");
            }
            let advanced = FireState {
                next_ms: next,
                due_ms: next.map(|n| job.due(n)),
                last: Some(LastFire {
                    scheduled_ms: tick,
                    fired_ms,
                    outcome,
                    node: self.node.clone(),
                }),
                fires: state.fires + 1,
                missed: state.missed + skipped,
                claim: None,
                ..state
            };
            // Losing this swap means the claim ran out and another node took the
            // tick over; it advances the state itself.
            self.store
                .swap(&job.id, Some(claimed_raw), &advanced)
                .await?;
            if advanced.due_ms.is_none() {
                self.sink.completed(job).await;
            }
            return Ok(advanced.due_ms);
        }
        // Sixteen lost races in a row: others are busy with this job; look again soon.
        Ok(Some(self.clock.now_ms() + 1_000))
    }
}

#[cfg(test)]
mod tests;
