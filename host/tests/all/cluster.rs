//! The JetStream bus against a real nats-server: several `NatsBus` instances
//! (as several nodes would hold) on one server share queues, dead letters,
//! the archive, plugin kv and the rules bucket.

use crate::harness::eventually_async;
use crate::harness::nats::NatsServer;
use busbar::bus::nats::{NatsBus, NatsConfig};
use busbar::bus::{
    ArchiveFilter, ArchivePages, ArchiveQuery, Bus, Delivery, PublishError, RoutedEvent, Settle,
    StoredChange, now_ms,
};
use busbar::event::{Event, EventInput, EventLimits};
use busbar::publish::PublishOptions;
use busbar::rules::{BusInfo, Route, Rule, RuleOrigin, RuleState};
use busbar::runtime::KvBackend;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

/// Routes events whose source is "to-X" to target X of rule "r" (plugin X; "to-X+Y"
/// to both), as `busbar::publish` does with real rules above the store.
fn routed(events: Vec<Event>, options: PublishOptions) -> Vec<RoutedEvent> {
    events
        .into_iter()
        .map(|e| {
            let routes: Vec<Route> = match e.source.strip_prefix("to-") {
                Some(t) => t
                    .split('+')
                    .map(|t| Route {
                        rule: "r".into(),
                        target: t.into(),
                        plugin: t.into(),
                    })
                    .filter(|r| {
                        options
                            .only_rules
                            .as_ref()
                            .is_none_or(|o| o.contains(&r.rule))
                    })
                    .collect(),
                None => vec![],
            };
            RoutedEvent {
                json: serde_json::to_vec(&e).unwrap(),
                archive: !options.skip_archive && e.replay_name.is_none(),
                rules: routes
                    .iter()
                    .map(|r| r.rule.as_str().into())
                    .take(1)
                    .collect(),
                event: e,
                routes,
            }
        })
        .collect()
}

/// [`routed`] with the default options.
fn by_source(events: Vec<Event>) -> Vec<RoutedEvent> {
    routed(events, PublishOptions::default())
}

fn event(source: &str) -> Event {
    EventInput::from_json(json!({"source": source, "detail-type": "t", "detail": {"n": 1}}))
        .unwrap()
        .into_event(&EventLimits::default())
        .unwrap()
}

async fn node_with(url: &str, f: impl FnOnce(&mut NatsConfig)) -> Arc<NatsBus> {
    let mut c = NatsConfig::from_url(url).unwrap();
    f(&mut c);
    NatsBus::connect(c).await.unwrap()
}

async fn node(url: &str) -> Arc<NatsBus> {
    node_with(url, |_| {}).await
}

async fn take(bus: &NatsBus, q: &str) -> Delivery {
    tokio::time::timeout(Duration::from_secs(10), bus.take(q))
        .await
        .expect("a delivery within 10 s")
        .expect("bus open")
}

fn ack() -> Settle {
    Settle::Ack {
        new_events: by_source(vec![]),
        stopped: vec![],
    }
}

/// How long a wait on the shared server may take (the queue counts refresh
/// every second); a bound against hanging, not a timing assertion.
const LIMIT: Duration = Duration::from_secs(10);

fn all() -> ArchiveFilter {
    Arc::new(|_: &Event, _: &[u8]| true)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_share_a_queue_and_outputs_are_routed_with_the_ack() {
    let nats = NatsServer::start();
    let (a, b) = (node(&nats.url()).await, node(&nats.url()).await);
    let res = a
        .publish(by_source(vec![event("to-x"), event("nowhere")]))
        .await
        .unwrap();
    assert_eq!(res, vec![Ok(()), Ok(())]);
    // Node b takes what node a published.
    let d = take(&b, "default/r/x").await;
    assert_eq!((d.rule.as_str(), d.target.as_str()), ("r", "x"));
    assert_eq!(d.plugin, "x");
    assert_eq!(d.attempts, 0);
    b.settle(
        d,
        Settle::Ack {
            new_events: by_source(vec![event("to-y")]),
            stopped: vec![],
        },
    )
    .await
    .unwrap();
    let d2 = take(&a, "default/r/y").await;
    assert_eq!(d2.event.source, "to-y");
    a.settle(d2, ack()).await.unwrap();
    // Both published events and the handler's output are archived, readable from any node.
    let archived = b
        .archive(ArchiveQuery::new(10, all()))
        .await
        .unwrap()
        .events;
    let sources: Vec<_> = archived.iter().map(|e| e.source.as_str()).collect();
    assert_eq!(sources, ["to-x", "nowhere", "to-y"]);
    // A settled delivery cannot be settled twice.
    let again = a.publish(by_source(vec![event("to-x")])).await;
    assert_eq!(again.unwrap(), vec![Ok(())]);
    let d3 = take(&a, "default/r/x").await;
    a.settle(d3.clone(), ack()).await.unwrap();
    assert!(a.settle(d3, ack()).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_matching_target_gets_the_event_and_work_is_split() {
    let nats = NatsServer::start();
    let (a, b) = (node(&nats.url()).await, node(&nats.url()).await);
    let events: Vec<Event> = (0..40).map(|_| event("to-p+q")).collect();
    let ids: std::collections::BTreeSet<String> = events.iter().map(|e| e.id.clone()).collect();
    a.publish(by_source(events)).await.unwrap();
    for q in ["default/r/p", "default/r/q"] {
        // Two nodes take concurrently; together they see every event once.
        let mut seen = std::collections::BTreeSet::new();
        let mut per_node = [0usize; 2];
        while seen.len() < ids.len() {
            let (i, d) = tokio::select! {
                d = take(&a, q) => (0, d),
                d = take(&b, q) => (1, d),
            };
            per_node[i] += 1;
            assert!(
                seen.insert(d.event.id.clone()),
                "event delivered twice to {q}"
            );
            let bus = if i == 0 { &a } else { &b };
            bus.settle(d, ack()).await.unwrap();
        }
        assert_eq!(seen, ids);
        assert!(per_node.iter().all(|&n| n > 0), "{q}: {per_node:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_waits_until_due_and_counts_attempts() {
    let nats = NatsServer::start();
    let a = node(&nats.url()).await;
    a.publish(by_source(vec![event("to-x")])).await.unwrap();
    let d = take(&a, "default/r/x").await;
    let id = d.id.clone();
    let due = now_ms() + 400;
    a.settle(
        d,
        Settle::Retry {
            due_ms: due,
            error: "boom".into(),
        },
    )
    .await
    .unwrap();
    let d = take(&a, "default/r/x").await;
    assert!(now_ms() >= due, "redelivered before it was due");
    assert_eq!(d.id, id, "the delivery id is stable across attempts");
    assert_eq!(d.attempts, 1);
    assert_eq!(d.last_error.as_deref(), Some("boom"));
    a.settle(d, ack()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_node_s_delivery_goes_to_another_node() {
    let nats = NatsServer::start();
    let url = format!("{}?ack_wait_ms=1000", nats.url());
    let (a, b) = (node(&url).await, node(&url).await);
    a.publish(by_source(vec![event("to-x")])).await.unwrap();
    let taken = take(&a, "default/r/x").await;
    // Node a dies mid-call: it never settles.
    a.close();
    drop(a);
    let d = take(&b, "default/r/x").await;
    assert_eq!(d.id, taken.id);
    assert_eq!(d.event.id, taken.event.id);
    assert_eq!(d.attempts, 1, "the lost attempt counts");
    b.settle(d, ack()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_no_worker_claims_goes_to_another_node() {
    let nats = NatsServer::start();
    let (a, b) = (node(&nats.url()).await, node(&nats.url()).await);
    // A worker of node a asks for work and gives up (its take is cancelled, as a
    // concurrency change cancels it); the fetch it started stays open on the server.
    let gave_up = tokio::time::timeout(Duration::from_millis(300), a.take("default/r/u")).await;
    assert!(gave_up.is_err(), "nothing to take yet");
    a.publish(by_source(vec![event("to-u")])).await.unwrap();
    // The open fetch receives the delivery; no worker of a will take it.
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Node b's worker gets it within `take`'s 10 s, before ack_wait (30 s) would free it.
    let d = take(&b, "default/r/u").await;
    assert_eq!(d.event.source, "to-u");
    b.settle(d, ack()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forgotten_queue_leaves_no_consumer_on_the_server() {
    use futures::StreamExt;
    let nats = NatsServer::start();
    let a = node(&nats.url()).await;
    a.publish(by_source(vec![event("to-gone")])).await.unwrap();
    let d = take(&a, "default/r/gone").await;
    a.settle(d, ack()).await.unwrap();
    let js = async_nats::jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    let stream = js.get_stream("BUSBAR_DELIVERIES").await.unwrap();
    let names = |stream: async_nats::jetstream::stream::Stream| async move {
        stream
            .consumer_names()
            .filter_map(|n| async move { n.ok() })
            .collect::<Vec<String>>()
            .await
    };
    assert_eq!(
        names(stream.clone()).await.len(),
        1,
        "the queue's consumer exists"
    );
    a.forget_queue("default/r/gone").await;
    assert_eq!(names(stream).await, Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_shared_and_redriven_by_any_node() {
    let nats = NatsServer::start();
    let (a, b) = (node(&nats.url()).await, node(&nats.url()).await);
    a.publish(by_source(vec![event("to-x"), event("to-x")]))
        .await
        .unwrap();
    for _ in 0..2 {
        let mut d = take(&a, "default/r/x").await;
        d.attempts = 3;
        a.settle(
            d,
            Settle::DeadLetter {
                reason: "rejected: bad".into(),
                keep: true,
            },
        )
        .await
        .unwrap();
    }
    let dl = b.dead_letters(0, 10).await.unwrap();
    assert_eq!(dl.len(), 2);
    assert_eq!(dl[0].attempts, 3);
    assert_eq!(dl[0].last_error, "rejected: bad");
    assert_eq!((dl[0].rule.as_str(), dl[0].target.as_str()), ("r", "x"));
    assert!(dl[0].id < dl[1].id);
    assert_eq!(b.dead_letters(dl[0].id, 10).await.unwrap(), dl[1..]);
    assert_eq!(
        b.dead_letter(dl[0].id).await.unwrap().as_ref(),
        Some(&dl[0])
    );
    assert_eq!(b.dead_letter(9999).await.unwrap(), None);
    eventually_async("the dead-letter count", LIMIT, async || {
        (b.dead_letter_count() == 2).then_some(())
    })
    .await;

    assert_eq!(b.redrive(Some(&[dl[0].id])).await.unwrap(), 1);
    // The redriven delivery goes to whichever node pulls it: a fetch node `a` left
    // open may receive it, so take from both, as every node's workers would.
    let (d, by) = tokio::select! {
        d = take(&a, "default/r/x") => (d, &a),
        d = take(&b, "default/r/x") => (d, &b),
    };
    assert_eq!(d.id, dl[0].delivery_id, "redrive keeps the delivery id");
    assert_eq!(d.attempts, 0);
    assert_eq!(d.event, dl[0].event);
    by.settle(d, ack()).await.unwrap();
    assert_eq!(a.purge_dead_letters(None).await.unwrap(), 1);
    assert!(a.dead_letters(0, 10).await.unwrap().is_empty());
    eventually_async("the dead-letter count", LIMIT, async || {
        (b.dead_letter_count() == 0).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_event_id_is_stored_once() {
    let nats = NatsServer::start();
    let (a, b) = (node(&nats.url()).await, node(&nats.url()).await);
    let e = event("to-x");
    a.publish(by_source(vec![e.clone()])).await.unwrap();
    // A client retrying through another node within the duplicate window.
    b.publish(by_source(vec![e.clone()])).await.unwrap();
    let d = take(&a, "default/r/x").await;
    assert_eq!(d.event.id, e.id);
    // Take registers the queue; once counts refresh, nothing else is waiting.
    eventually_async("one delivery in the queue", LIMIT, async || {
        a.queue_stats()
            .iter()
            .any(|s| s.queue == "default/r/x" && s.backlog == 0 && s.in_flight == 1)
            .then_some(())
    })
    .await;
    a.settle(d, ack()).await.unwrap();
    let archived = a
        .archive(ArchiveQuery::new(10, all()))
        .await
        .unwrap()
        .events;
    assert_eq!(archived.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replays_are_not_archived_and_the_archive_expires() {
    let nats = NatsServer::start();
    let a = node(&nats.url()).await;
    let mut replayed = event("to-x");
    replayed.replay_name = Some("r1".into());
    a.publish(by_source(vec![event("x"), replayed]))
        .await
        .unwrap();
    // A replay to named rules routes only to them.
    let res = a
        .publish(routed(
            vec![event("to-y")],
            PublishOptions {
                skip_archive: true,
                only_rules: Some(vec!["other".into()]),
                ..Default::default()
            },
        ))
        .await
        .unwrap();
    assert_eq!(res, vec![Ok(())]);
    let q = || ArchiveQuery::new(10, all());
    let archived = a.archive(q()).await.unwrap().events;
    assert_eq!(archived.len(), 1);
    assert_eq!(archived[0].source, "x");
    // The replayed event still reached its target.
    let d = take(&a, "default/r/x").await;
    assert_eq!(d.event.replay_name.as_deref(), Some("r1"));
    a.settle(d, ack()).await.unwrap();
    // A time range after everything selects nothing.
    let later = ArchiveQuery {
        since_ms: Some(now_ms() + 60_000),
        ..q()
    };
    assert!(a.archive(later).await.unwrap().events.is_empty());
    assert_eq!(a.expire_archive(now_ms() + 1).await.unwrap(), 1);
    assert!(a.archive(q()).await.unwrap().events.is_empty());
}

/// Pages through `q`: the events' sources and how many pages it took.
async fn every_page(bus: &NatsBus, q: ArchiveQuery) -> (Vec<String>, usize) {
    let (mut sources, mut pages, mut reader) = (Vec::new(), 0, ArchivePages::new(q));
    while let Some(events) = reader.next(bus).await.unwrap() {
        pages += 1;
        sources.extend(events.into_iter().map(|e| e.source));
    }
    (sources, pages)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_archive_pages_with_a_cursor_and_seeks_by_time() {
    let nats = NatsServer::start();
    let a = node(&nats.url()).await;
    let early: Vec<String> = (0..25).map(|i| format!("early-{i}")).collect();
    a.publish(by_source(early.iter().map(|s| event(s)).collect()))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let since = now_ms();
    a.publish(by_source(vec![event("late")])).await.unwrap();

    // A filter that takes nothing still answers after the budget, with a cursor.
    let none: ArchiveFilter = Arc::new(|_: &Event, _: &[u8]| false);
    let mut q = ArchiveQuery::new(10, none);
    q.budget.events = 4;
    let (got, pages) = every_page(&a, q).await;
    assert!(got.is_empty());
    assert_eq!(pages, 7, "26 events read 4 a page");

    // Limit and budget together reach every event once, in order.
    let mut q = ArchiveQuery::new(3, all());
    q.budget.events = 5;
    let (got, _) = every_page(&a, q).await;
    let mut want = early.clone();
    want.push("late".into());
    assert_eq!(got, want);

    // `since` starts at its first event, and a cursor before it does not widen the range.
    let mut q = ArchiveQuery::new(10, all());
    q.since_ms = Some(since);
    q.budget.events = 1;
    // One event read is enough: JetStream starts the scan at `since`.
    let page = a.archive(q.clone()).await.unwrap();
    assert_eq!(page.events.len(), 1);
    assert_eq!(page.events[0].source, "late");
    let first = a.archive(ArchiveQuery::new(1, all())).await.unwrap();
    q.after = first.next;
    assert_eq!(every_page(&a, q).await.0, vec!["late".to_string()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_queues_throttle_publishers() {
    let nats = NatsServer::start();
    let a = node_with(&nats.url(), |c| c.max_queue_backlog = 2).await;
    let res = a
        .publish(by_source(vec![
            event("to-x"),
            event("to-x"),
            event("to-x"),
            event("elsewhere"),
        ]))
        .await
        .unwrap();
    assert_eq!(res[..2], [Ok(()), Ok(())]);
    assert!(
        matches!(&res[2], Err(PublishError::Throttled(m)) if m.contains("limit is 2")),
        "{res:?}"
    );
    assert_eq!(res[3], Ok(()), "events for other queues still go through");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_kv_is_shared_and_updates_never_lost() {
    let nats = NatsServer::start();
    let (a, b) = (node(&nats.url()).await, node(&nats.url()).await);
    let (ka, kb) = (a.kv(), b.kv());
    // The sync backend runs on blocking threads, as plugin calls do.
    let blocking = |kv: Arc<dyn KvBackend>, f: fn(&dyn KvBackend)| {
        tokio::task::spawn_blocking(move || f(&*kv))
    };
    blocking(ka.clone(), |kv| {
        kv.set("p", "user:1", b"ann").unwrap();
        kv.set("p", "user:2", b"bob").unwrap();
        kv.set("p", "order.1", b"x").unwrap();
        kv.set("q", "user:3", b"other plugin").unwrap();
        kv.set("p", "spaces and * > ~", b"odd").unwrap();
    })
    .await
    .unwrap();
    blocking(kb.clone(), |kv| {
        assert_eq!(kv.get("p", "user:1").unwrap().as_deref(), Some(&b"ann"[..]));
        assert_eq!(kv.get("q", "user:1").unwrap(), None);
        assert_eq!(
            kv.list_keys("p", "user:", 10).unwrap(),
            ["user:1", "user:2"]
        );
        assert_eq!(kv.list_keys("p", "user:", 1).unwrap(), ["user:1"]);
        assert_eq!(kv.list_keys("p", "", 10).unwrap().len(), 4);
        assert_eq!(
            kv.get("p", "spaces and * > ~").unwrap().as_deref(),
            Some(&b"odd"[..])
        );
        assert!(kv.delete("p", "user:2").unwrap());
        assert!(!kv.delete("p", "user:2").unwrap());
        assert_eq!(kv.list_keys("p", "user:", 10).unwrap(), ["user:1"]);
        assert!(kv.compare_and_swap("p", "c", None, b"1").unwrap());
        assert!(!kv.compare_and_swap("p", "c", None, b"2").unwrap());
        assert!(!kv.compare_and_swap("p", "c", Some(b"0"), b"2").unwrap());
        assert!(kv.compare_and_swap("p", "c", Some(b"1"), b"2").unwrap());
        assert!(matches!(
            kv.increment("p", "user:1", 1),
            Err(busbar::runtime::KvError::NotANumber(_))
        ));
    })
    .await
    .unwrap();
    // Two nodes incrementing one counter at once: every increment counts.
    let mut tasks = Vec::new();
    for kv in [ka.clone(), kb.clone(), ka.clone(), kb.clone()] {
        tasks.push(tokio::task::spawn_blocking(move || {
            for _ in 0..25 {
                kv.increment("p", "n", 1).unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let n = blocking(ka, |kv| {
        assert_eq!(kv.get("p", "n").unwrap().as_deref(), Some(&b"100"[..]));
    });
    n.await.unwrap();
}

fn rule(name: &str) -> Rule {
    Rule {
        name: name.into(),
        bus: "orders".into(),
        pattern: r#"{"source":["shop"]}"#.into(),
        schedule: None,
        region: None,
        state: RuleState::Enabled,
        description: None,
        targets: vec![],
        origin: RuleOrigin::Api,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_changes_reach_every_node() {
    let nats = NatsServer::start();
    let (a, b) = (node(&nats.url()).await, node(&nats.url()).await);
    let bus = BusInfo {
        name: "orders".into(),
        description: None,
        created: "2024-01-01T00:00:00Z".into(),
        tags: Default::default(),
    };
    a.put_bus(&bus).await.unwrap();
    a.put_rule(&rule("first.rule")).await.unwrap();
    let mut changes = b
        .watch_rules()
        .await
        .unwrap()
        .expect("a shared store watches");
    let mut next = async || {
        tokio::time::timeout(Duration::from_secs(5), changes.recv())
            .await
            .expect("a change within 5 s")
            .unwrap()
    };
    // What was stored before the watch began comes first, in order.
    assert_eq!(next().await, StoredChange::Bus(bus.clone()));
    assert_eq!(next().await, StoredChange::Rule(rule("first.rule")));
    a.put_rule(&rule("second")).await.unwrap();
    assert_eq!(next().await, StoredChange::Rule(rule("second")));
    assert!(a.delete_rule("orders", "first.rule").await.unwrap());
    assert!(!a.delete_rule("orders", "first.rule").await.unwrap());
    assert_eq!(
        next().await,
        StoredChange::RuleDeleted {
            bus: "orders".into(),
            name: "first.rule".into()
        }
    );
    assert_eq!(b.rules().await.unwrap(), vec![rule("second")]);
    assert_eq!(b.buses().await.unwrap(), vec![bus]);
    assert!(a.delete_bus("orders").await.unwrap());
    assert_eq!(next().await, StoredChange::BusDeleted("orders".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_restart_fails_publishes_loudly_then_work_resumes() {
    let mut nats = NatsServer::start();
    let (a, b) = (node(&nats.url()).await, node(&nats.url()).await);
    a.publish(by_source(vec![event("to-x")])).await.unwrap();
    let d = take(&b, "default/r/x").await;
    b.settle(d, ack()).await.unwrap();
    nats.stop();
    // While the server is down every event gets an error, never a silent Ok.
    let mut refused = 0;
    for _ in 0..3 {
        let res = a.publish(by_source(vec![event("to-x")])).await.unwrap();
        assert!(matches!(res[0], Err(PublishError::Store(_))), "{res:?}");
        refused += 1;
    }
    assert_eq!(refused, 3);
    nats.restart();
    // The client reconnects by itself; publishing works again once it has.
    let mut published = None;
    for _ in 0..100 {
        let res = a.publish(by_source(vec![event("to-x")])).await.unwrap();
        if res[0].is_ok() {
            published = Some(());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        published.is_some(),
        "no publish succeeded after the restart"
    );
    // The other node's pull loop resumed on its own.
    let d = take(&b, "default/r/x").await;
    b.settle(d, ack()).await.unwrap();
}

// ---------------------------------------------------------------------------
// Three `busbar serve --bus nats://...` processes on one nats-server.

use crate::harness::process::{NodeDir, Server};
use crate::harness::{built, eventually, http, poll_until};
use std::collections::{BTreeMap, BTreeSet};

/// Every node runs the same config: events from `cluster-test` go to testkit,
/// whose `kv` mode increments a counter named by the event in the shared kv.
fn cluster_rules(url: &str) -> String {
    format!(
        r#"bus = "{url}?ack_wait_ms=3000"
[[rules]]
name = "count"
pattern = '{{"source": ["cluster-test"]}}'
[[rules.targets]]
id = "t"
plugin = "testkit"
retry = {{ max_retry_attempts = 100, max_event_age_secs = 3600, base_backoff_ms = 10, max_backoff_ms = 200 }}
"#
    )
}

fn cluster_node(url: &str) -> NodeDir {
    let node = NodeDir::new(&cluster_rules(url));
    node.add_plugin(
        &built("plugins/fixtures/testkit.wasm"),
        "testkit",
        Some("[scaling]\nconcurrency = 4\nmax_concurrency = 4\n"),
    );
    node
}

/// For the bus-level reads the process tests make (the shared kv counters).
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Posts `keys` as kv events to `base`; returns the keys the node acknowledged.
fn post(
    client: &reqwest::blocking::Client,
    base: &str,
    source: &str,
    keys: &[String],
) -> Vec<String> {
    let body: Vec<serde_json::Value> = keys
        .iter()
        .map(|k| json!({"source": source, "detail-type": "kv", "detail": {"key": k}}))
        .collect();
    let Ok(resp) = client.post(format!("{base}/events")).json(&body).send() else {
        return vec![];
    };
    let Ok(v) = resp.json::<serde_json::Value>() else {
        return vec![];
    };
    let entries = v["entries"].as_array().cloned().unwrap_or_default();
    keys.iter()
        .zip(entries)
        .filter(|(_, e)| e.get("id").is_some())
        .map(|(k, _)| k.clone())
        .collect()
}

/// Successful deliveries a node reports in its metrics.
fn delivered_ok(client: &reqwest::blocking::Client, base: &str) -> f64 {
    let text = client
        .get(format!("{base}/metrics"))
        .send()
        .and_then(|r| r.text())
        .unwrap_or_default();
    text.lines()
        .filter(|l| l.starts_with("busbar_deliveries_total") && l.contains("outcome=\"ok\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The counters testkit keeps, read straight from the shared kv bucket.
fn counters(
    rt: &tokio::runtime::Runtime,
    url: &str,
    keys: &BTreeSet<String>,
) -> BTreeMap<String, i64> {
    rt.block_on(async {
        let bus = node(url).await;
        let kv = bus.nats_kv();
        let mut out = BTreeMap::new();
        for k in keys {
            if let Some(v) = kv.get_async("testkit", k).await.unwrap() {
                out.insert(k.clone(), String::from_utf8(v).unwrap().parse().unwrap());
            }
        }
        out
    })
}

fn wait_counted(
    rt: &tokio::runtime::Runtime,
    url: &str,
    keys: &BTreeSet<String>,
    servers: &[&Server],
) -> BTreeMap<String, i64> {
    let mut seen = BTreeMap::new();
    let counted = poll_until(Duration::from_secs(90), || {
        seen = counters(rt, url, keys);
        (seen.len() == keys.len()).then(|| seen.clone())
    });
    counted.unwrap_or_else(|| {
        let missing: Vec<_> = keys
            .iter()
            .filter(|k| !seen.contains_key(*k))
            .take(10)
            .collect();
        for s in servers {
            eprintln!("--- {}:\n{}", s.base, s.log_text());
        }
        panic!(
            "{} of {} acknowledged events never counted, e.g. {missing:?}",
            keys.len() - seen.len(),
            keys.len()
        );
    })
}

#[test]
fn three_nodes_share_the_work_and_survive_a_kill_9() {
    let nats = NatsServer::start();
    let rt = runtime();
    let dirs: Vec<NodeDir> = (0..3).map(|_| cluster_node(&nats.url())).collect();
    let mut servers: Vec<Option<Server>> = dirs.iter().map(|d| Some(d.start())).collect();
    let client = http();
    let mut acked = BTreeSet::new();
    let mut n = 0;
    for round in 0..30 {
        // Round robin over the nodes still alive; node 2 dies a third of the way in.
        if round == 10 {
            servers[2].take().unwrap().kill9();
        }
        for (i, d) in dirs.iter().enumerate() {
            if servers[i].is_none() {
                continue;
            }
            let keys: Vec<String> = (n..n + 10).map(|k| format!("e{k}")).collect();
            n += 10;
            acked.extend(post(&client, &d.base(), "cluster-test", &keys));
        }
    }
    assert!(
        acked.len() >= 200,
        "only {} events were acknowledged",
        acked.len()
    );
    let alive: Vec<&Server> = servers.iter().flatten().collect();
    let counted = wait_counted(&rt, &nats.url(), &acked, &alive);
    let duplicates: i64 = counted.values().map(|c| c - 1).sum();
    let shares: Vec<f64> = alive
        .iter()
        .map(|s| delivered_ok(&client, &s.base))
        .collect();
    println!(
        "{} acknowledged events all counted; {duplicates} redelivered twice; deliveries per surviving node: {shares:?}",
        acked.len()
    );
    assert!(
        shares.iter().all(|&s| s > 0.0),
        "a node took no work: {shares:?}"
    );
}

#[test]
fn a_rule_put_on_one_node_routes_on_another() {
    let nats = NatsServer::start();
    let rt = runtime();
    let (da, db) = (cluster_node(&nats.url()), cluster_node(&nats.url()));
    let (a, b) = (da.start(), db.start());
    let client = http();
    let rule = json!({
        "pattern": {"source": ["dynamic-test"]},
        "targets": [{"id": "t", "plugin": "testkit"}]
    });
    let put_at = std::time::Instant::now();
    let resp = client
        .put(format!("{}/v1/rules/default/dynamic", a.base))
        .json(&rule)
        .send()
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.text().unwrap());
    // Node b learns the rule from the rules bucket, not from its own API.
    eventually("node b to see the rule", Duration::from_secs(10), || {
        let r = client
            .get(format!("{}/v1/rules/default/dynamic", b.base))
            .send()
            .ok()?;
        r.status().is_success().then_some(())
    });
    println!(
        "rule visible on the other node after {:?}",
        put_at.elapsed()
    );
    let keys = vec!["dyn1".to_string()];
    assert_eq!(post(&client, &b.base, "dynamic-test", &keys), keys);
    let counted = wait_counted(&rt, &nats.url(), &keys.into_iter().collect(), &[&a, &b]);
    assert_eq!(counted["dyn1"], 1);
}

/// The whole process against a nats-server that restarts: two `busbar serve`
/// nodes keep serving HTTP while the server is down (publishes are refused with
/// an error naming NATS, never acknowledged), and once it is back every event
/// acknowledged before and after the outage is counted, without restarting busbar.
#[test]
fn serving_nodes_ride_out_a_nats_server_restart() {
    let mut nats = NatsServer::start();
    let rt = runtime();
    let (da, db) = (cluster_node(&nats.url()), cluster_node(&nats.url()));
    let (a, b) = (da.start(), db.start());
    let client = http();
    let before: Vec<String> = (0..20).map(|k| format!("before{k}")).collect();
    assert_eq!(post(&client, &a.base, "cluster-test", &before), before);
    let mut acked: BTreeSet<String> = before.into_iter().collect();
    wait_counted(&rt, &nats.url(), &acked, &[&a, &b]);

    nats.stop();
    let refused = client
        .post(format!("{}/events", b.base))
        .json(&json!({"source": "cluster-test", "detail-type": "kv", "detail": {"key": "down"}}))
        .send()
        .expect("busbar still answers HTTP while NATS is down");
    let body: serde_json::Value = refused.json().unwrap();
    assert_eq!(body["failed"], 1, "{body}");
    let message = body["entries"][0]["error_message"]
        .as_str()
        .unwrap_or_default();
    assert!(message.contains("NATS"), "{body}");

    nats.restart();
    // Both nodes reconnect on their own; publish on each until it is accepted.
    for (server, prefix) in [(&a, "after-a"), (&b, "after-b")] {
        let mut n = 0;
        let key = poll_until(Duration::from_secs(30), || {
            let key = format!("{prefix}{n}");
            n += 1;
            let accepted = post(
                &client,
                &server.base,
                "cluster-test",
                std::slice::from_ref(&key),
            );
            (!accepted.is_empty()).then_some(key)
        })
        .unwrap_or_else(|| {
            panic!(
                "{} accepted nothing within 30 s of the restart:\n{}",
                server.base,
                server.log_text()
            )
        });
        acked.insert(key);
    }
    let more: Vec<String> = (0..20).map(|k| format!("later{k}")).collect();
    acked.extend(post(&client, &a.base, "cluster-test", &more));
    wait_counted(&rt, &nats.url(), &acked, &[&a, &b]);
    let down = counters(&rt, &nats.url(), &BTreeSet::from(["down".to_string()]));
    assert!(down.is_empty(), "a refused event was delivered: {down:?}");
}
