//! The scheduler on a real redb kv and the node clock, moved by hand: no test
//! waits for real minutes.

use super::*;
use crate::bus::embedded::RedbKv;
use std::time::Duration;

/// Records every fire: (job id, scheduled time, event id, node).
#[derive(Default)]
struct Recorder {
    fires: Mutex<Vec<(String, i64, String)>>,
    completed: Mutex<Vec<String>>,
}

#[async_trait]
impl Sink for Recorder {
    async fn fire(&self, job: &Job, scheduled_ms: i64, event_id: String) -> Result<(), String> {
        self.fires
            .lock()
            .push((job.id.clone(), scheduled_ms, event_id));
        Ok(())
    }
    async fn completed(&self, job: &Job) {
        self.completed.lock().push(job.id.clone());
    }
}

impl Recorder {
    fn count(&self) -> usize {
        self.fires.lock().len()
    }
}

fn kv() -> (tempfile::TempDir, Arc<dyn KvBackend>) {
    let dir = tempfile::tempdir().unwrap();
    let kv = RedbKv::open(&dir.path().join("kv.redb")).unwrap();
    (dir, Arc::new(kv))
}

fn job(id: &str, text: &str, anchor_ms: Option<i64>) -> Job {
    Job {
        id: id.into(),
        expression: Expression::parse(text, expr::Dialect::Scheduler).unwrap(),
        text: text.into(),
        zone: Tz::UTC,
        start_ms: None,
        end_ms: None,
        window_ms: 0,
        anchor_ms,
        action: Action::Schedule {
            group: "default".into(),
            name: id.into(),
        },
    }
}

/// Waits (real time, bounded) until `f` holds; the scheduler runs meanwhile.
async fn until(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..400 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("gave up waiting for {what}");
}

/// Lets the scheduler look at its table after the clock moved.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(100)).await;
}

const MIN: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_fires_once_per_tick_with_the_scheduled_time() {
    let (_d, kv) = kv();
    let clock = Arc::new(Clock::default());
    let rec = Arc::new(Recorder::default());
    let s = Scheduler::new(clock.clone(), kv, rec.clone());
    s.start();
    let anchor = clock.now_ms();
    s.replace(
        "schedule/",
        vec![job("schedule/g/a", "rate(5 minutes)", Some(anchor))],
    )
    .await;
    settle().await;
    assert_eq!(rec.count(), 0, "nothing is due before the first period");
    for n in 1..=3 {
        clock.advance(5 * MIN);
        until("a fire", || rec.count() == n).await;
    }
    settle().await;
    let fires = rec.fires.lock().clone();
    let times: Vec<i64> = fires.iter().map(|f| f.1).collect();
    assert_eq!(
        times,
        [anchor + 300_000, anchor + 600_000, anchor + 900_000],
        "each tick once, stamped with its scheduled time"
    );
    let ids: std::collections::HashSet<_> = fires.iter().map(|f| &f.2).collect();
    assert_eq!(ids.len(), 3);
    let view = s.view_of("schedule/g/a").await.unwrap();
    assert_eq!(view.fires, 3);
    assert_eq!(view.last_outcome.as_deref(), Some("ok"));
    assert_eq!(
        view.next_fire,
        Some(crate::bus::ms_to_rfc3339(anchor + 1_200_000))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_fires_missed_ticks_once_and_never_repeats_one() {
    let (_d, kv) = kv();
    let clock = Arc::new(Clock::default());
    let anchor = clock.now_ms();
    let jobs = || vec![job("schedule/g/r", "rate(1 minute)", Some(anchor))];
    let first = Arc::new(Recorder::default());
    {
        let s = Scheduler::new(clock.clone(), kv.clone(), first.clone());
        s.start();
        s.replace("schedule/", jobs()).await;
        clock.advance(MIN);
        until("the first fire", || first.count() == 1).await;
        // The node goes away.
        s.stop();
    }
    // A new scheduler on the same store: the restarted node. Nothing is due
    // yet, so it must not repeat the tick the old one fired.
    let second = Arc::new(Recorder::default());
    let s = Scheduler::new(clock.clone(), kv.clone(), second.clone());
    s.start();
    s.replace("schedule/", jobs()).await;
    settle().await;
    assert_eq!(second.count(), 0, "the fired tick is not repeated");
    s.stop();
    // Down for three and a half more periods: one fire, for the latest missed time.
    let third = Arc::new(Recorder::default());
    let s3 = Scheduler::new(clock.clone(), kv.clone(), third.clone());
    clock.advance(Duration::from_secs(210));
    s3.start();
    s3.replace("schedule/", jobs()).await;
    until("the catch-up fire", || third.count() >= 1).await;
    settle().await;
    let fires = third.fires.lock().clone();
    assert_eq!(
        fires.len(),
        1,
        "missed ticks fire once, not once each: {fires:?}"
    );
    let all: Vec<i64> = first
        .fires
        .lock()
        .iter()
        .chain(second.fires.lock().iter())
        .chain(fires.iter())
        .map(|f| f.1)
        .collect();
    assert_eq!(all, [anchor + 60_000, anchor + 240_000]);
    let view = s3.view_of("schedule/g/r").await.unwrap();
    assert_eq!(view.missed, 2);
    assert_eq!(
        view.next_fire,
        Some(crate::bus::ms_to_rfc3339(anchor + 300_000))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_on_one_store_fire_each_tick_once() {
    let (_d, kv) = kv();
    let clock = Arc::new(Clock::default());
    let anchor = clock.now_ms();
    let rec = Arc::new(Recorder::default());
    let nodes: Vec<Arc<Scheduler>> = (0..3)
        .map(|_| Scheduler::new(clock.clone(), kv.clone(), rec.clone()))
        .collect();
    for s in &nodes {
        s.start();
        s.replace(
            "schedule/",
            (0..20)
                .map(|i| job(&format!("schedule/g/{i}"), "rate(1 minute)", Some(anchor)))
                .collect(),
        )
        .await;
    }
    for round in 1..=3 {
        clock.advance(MIN);
        until("every job fired", || rec.count() == 20 * round).await;
        settle().await;
    }
    assert_eq!(rec.count(), 60, "each tick of each job fired by one node");
    let mut seen = std::collections::HashSet::new();
    for f in rec.fires.lock().iter() {
        assert!(seen.insert((f.0.clone(), f.1)), "fired twice: {f:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_left_by_a_dead_node_is_taken_over_with_the_same_event_id() {
    let (_d, kv) = kv();
    let clock = Arc::new(Clock::default());
    let anchor = clock.now_ms();
    let j = job("schedule/g/c", "rate(1 minute)", Some(anchor));
    // A node claimed the first tick, then died before advancing the state.
    let mut dead = j.fresh_state(anchor);
    dead.claim = Some(Claim {
        node: "dead".into(),
        until_ms: anchor + 60_000 + state::CLAIM_MS,
    });
    kv.set(state::NAMESPACE, &j.id, &serde_json::to_vec(&dead).unwrap())
        .unwrap();
    let rec = Arc::new(Recorder::default());
    let s = Scheduler::new(clock.clone(), kv.clone(), rec.clone());
    s.start();
    s.replace("schedule/", vec![j.clone()]).await;
    clock.advance(MIN);
    settle().await;
    assert_eq!(rec.count(), 0, "the claim holds while it lasts");
    clock.advance(Duration::from_millis(state::CLAIM_MS as u64));
    until("the takeover", || rec.count() == 1).await;
    let f = rec.fires.lock()[0].clone();
    assert_eq!(f.1, anchor + 60_000);
    assert_eq!(f.2, j.event_id(anchor + 60_000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_time_schedule_fires_once_and_completes() {
    let (_d, kv) = kv();
    let clock = Arc::new(Clock::default());
    let rec = Arc::new(Recorder::default());
    let s = Scheduler::new(clock.clone(), kv, rec.clone());
    s.start();
    let at = chrono::DateTime::from_timestamp_millis(clock.now_ms() + 3_600_000)
        .unwrap()
        .format("at(%Y-%m-%dT%H:%M:%S)")
        .to_string();
    s.replace(
        "schedule/",
        vec![job("schedule/g/once", &at, Some(clock.now_ms()))],
    )
    .await;
    clock.advance(Duration::from_secs(3601));
    until("the fire", || rec.count() == 1).await;
    until("completion", || rec.completed.lock().len() == 1).await;
    clock.advance(Duration::from_secs(7200));
    settle().await;
    assert_eq!(rec.count(), 1);
    assert_eq!(s.earliest_due(), None, "nothing left to wait for");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flexible_window_fires_within_it_and_a_change_restarts_the_clock() {
    let (_d, kv) = kv();
    let clock = Arc::new(Clock::default());
    let rec = Arc::new(Recorder::default());
    let s = Scheduler::new(clock.clone(), kv.clone(), rec.clone());
    s.start();
    let anchor = clock.now_ms();
    let mut j = job("rule/default/flex", "rate(10 minutes)", None);
    j.window_ms = 5 * 60_000;
    s.replace("rule/", vec![j.clone()]).await;
    settle().await;
    // The clock of a job without an anchor starts when the scheduler first sees it.
    let stored: FireState =
        serde_json::from_slice(&kv.get(state::NAMESPACE, &j.id).unwrap().unwrap()).unwrap();
    assert!(stored.anchor_ms >= anchor);
    let due = stored.due_ms.unwrap();
    let next = stored.next_ms.unwrap();
    assert!(
        (next..next + 5 * 60_000).contains(&due),
        "{due} in [{next}, +5 min)"
    );
    clock.advance(Duration::from_millis((due - clock.now_ms()).max(0) as u64));
    until("the fire", || rec.count() == 1).await;
    assert_eq!(
        rec.fires.lock()[0].1,
        next,
        "the event carries the scheduled time"
    );
    // A new expression: a new clock; removing the job forgets its state.
    let mut changed = j.clone();
    changed.text = "rate(1 hour)".into();
    changed.expression = Expression::parse("rate(1 hour)", expr::Dialect::Rule).unwrap();
    s.replace("rule/", vec![changed.clone()]).await;
    settle().await;
    let stored: FireState =
        serde_json::from_slice(&kv.get(state::NAMESPACE, &j.id).unwrap().unwrap()).unwrap();
    assert_eq!(stored.fingerprint, changed.fingerprint());
    assert_eq!(stored.fires, 0);
    s.replace("rule/", vec![]).await;
    assert_eq!(kv.get(state::NAMESPACE, &j.id).unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_schedules_share_one_timer() {
    let (_d, kv) = kv();
    let clock = Arc::new(Clock::default());
    let rec = Arc::new(Recorder::default());
    let s = Scheduler::new(clock.clone(), kv, rec.clone());
    let anchor = clock.now_ms();
    // Not started: the table alone, filed due at once for their first look.
    s.replace(
        "schedule/",
        (0..10_000)
            .map(|i| {
                job(
                    &format!("schedule/g/{i:05}"),
                    &format!("rate({} minutes)", 2 + i % 50),
                    Some(anchor),
                )
            })
            .collect(),
    )
    .await;
    assert_eq!(s.table.lock().due.len(), 10_000);
    assert!(s.earliest_due().unwrap() <= clock.now_ms());
    let listed = s.list("schedule/g/0", None, 5).await;
    assert_eq!(listed.len(), 5);
    assert_eq!(listed[0].id, "schedule/g/00000");
    assert_eq!(
        listed[0].next_fire,
        Some(crate::bus::ms_to_rfc3339(anchor + 120_000))
    );
}
