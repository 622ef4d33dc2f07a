//! Archive queries run off the async workers, bounded per page, indexed by time.
//!
//! A large archive is filled straight through the node's publish path (the
//! same one ingest uses), then queried over HTTP the way a client would.

use crate::harness::server::TestServer;
use busbar::event::{Event, EventInput, EventLimits};
use serde_json::{Value, json};
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Enough events that scanning them all at once keeps a thread busy for seconds.
const FILL: usize = 60_000;
/// The largest page `/v1/archive` returns.
const PAGE: usize = 10_000;
/// A pattern no archived event matches: the worst case, every event is read.
const NOTHING: &str = r#"{"source":["matches-nothing"]}"#;

fn events(n: usize, source: &str) -> Vec<Event> {
    // ~600 bytes each, about the size of a typical business event.
    let pad = "x".repeat(500);
    (0..n)
        .map(|i| {
            EventInput::from_json(json!({
                "source": source,
                "detail-type": "Filled",
                "detail": {"n": i, "pad": pad},
            }))
            .and_then(|e| e.into_event(&EventLimits::default()))
            .expect("a valid event")
        })
        .collect()
}

/// Publishes `events` through the node in commits of 1,000; returns their ids.
fn fill(s: &TestServer, events: Vec<Event>) -> Vec<String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let ids: Vec<String> = events.iter().map(|e| e.id.clone()).collect();
    let mut events = events;
    while !events.is_empty() {
        let rest = events.split_off(events.len().min(1_000));
        let results = rt.block_on(s.node.publish(events));
        assert!(results.iter().all(|r| r.is_ok()), "publish failed");
        events = rest;
    }
    ids
}

/// Query parameters of `/v1/archive`.
type Params = Vec<(&'static str, String)>;

/// One page of `/v1/archive` with `params`, resumed at `cursor`: its events and its `next`.
fn page(
    client: &reqwest::blocking::Client,
    base: &str,
    params: &Params,
    cursor: Option<&str>,
) -> (Vec<Value>, Option<String>) {
    let mut params = params.clone();
    if let Some(c) = cursor {
        params.push(("cursor", c.to_string()));
    }
    let r = client
        .get(format!("{base}/v1/archive"))
        .query(&params)
        .send()
        .expect("archive query");
    let status = r.status();
    let body: Value = r.json().expect("archive JSON");
    assert_eq!(status, 200, "{body}");
    let events = body["events"].as_array().cloned().expect("events array");
    let next = body.get("next").and_then(Value::as_str).map(str::to_string);
    (events, next)
}

/// Follows `next` until the archive says there is no more; returns every event
/// and the number of pages it took.
fn page_all(
    client: &reqwest::blocking::Client,
    base: &str,
    params: &Params,
) -> (Vec<Value>, usize) {
    let mut all = Vec::new();
    let mut pages = 0;
    let mut cursor: Option<String> = None;
    loop {
        let (events, next) = page(client, base, params, cursor.as_deref());
        pages += 1;
        all.extend(events);
        match next {
            Some(n) => {
                assert_ne!(
                    cursor.as_deref(),
                    Some(n.as_str()),
                    "the cursor did not move"
                );
                cursor = Some(n);
            }
            None => return (all, pages),
        }
    }
}

/// The ids of every event of a paged query.
fn all_ids(base: &str, params: Params) -> Vec<String> {
    ids_of(&page_all(&client(), base, &params).0)
}

fn at(ms: i64) -> String {
    busbar::bus::ms_to_rfc3339(ms)
}

fn ids_of(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["id"].as_str().expect("an id").to_string())
        .collect()
}

/// Asserts that `ids` holds each of `expected` exactly once and nothing else.
fn assert_exactly_once(ids: &[String], expected: &[String], what: &str) {
    let unique: HashSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "{what}: an event came back twice");
    let want: HashSet<&String> = expected.iter().collect();
    assert_eq!(
        unique.len(),
        want.len(),
        "{what}: {} events, {} expected",
        unique.len(),
        want.len()
    );
    assert!(unique == want, "{what}: not the expected events");
}

fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .expect("http client")
}

/// Sets the flag when dropped, so scanning threads stop even when an assertion fails.
struct StopOnDrop<'a>(&'a AtomicBool);
impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

#[test]
fn worst_case_queries_leave_health_and_ingest_fast_and_pages_reach_everything() {
    let s = TestServer::start();
    let ids = fill(&s, events(FILL, "filler"));

    // Three clients page through the whole archive with a pattern that matches
    // nothing, over and over, while health checks and ingest are timed.
    let stop = AtomicBool::new(false);
    let scans_done = AtomicUsize::new(0);
    let probed = AtomicUsize::new(0);
    let query: Params = vec![("pattern", NOTHING.into()), ("limit", PAGE.to_string())];
    std::thread::scope(|scope| {
        // Inside the scope: should an assertion fail, the scanners stop and the scope ends.
        let _stop = StopOnDrop(&stop);
        let scanners: Vec<_> = (0..3)
            .map(|_| {
                scope.spawn(|| {
                    let client = client();
                    let mut pages = Vec::new();
                    while !stop.load(Ordering::SeqCst) {
                        let (events, n) = page_all(&client, &s.url, &query);
                        assert!(
                            events.is_empty(),
                            "the pattern matched {} events",
                            events.len()
                        );
                        pages.push(n);
                        scans_done.fetch_add(1, Ordering::SeqCst);
                    }
                    pages
                })
            })
            .collect();
        let probes = probe_while_scanning(&s, &scans_done);
        stop.store(true, Ordering::SeqCst);
        for t in scanners {
            let pages = t.join().expect("scanner thread");
            // Each query's work is bounded: the whole archive takes more than one page.
            assert!(pages.iter().all(|&n| n > 1), "pages per scan: {pages:?}");
        }
        probed.store(probes, Ordering::SeqCst);
    });

    // Paging with the cursor reaches every event exactly once, in time order.
    let (all, pages) = page_all(&client(), &s.url, &vec![("limit", PAGE.to_string())]);
    assert!(pages > 1, "{pages} page(s)");
    let wanted: HashSet<&String> = ids.iter().collect();
    let filled: Vec<String> = ids_of(&all)
        .into_iter()
        .filter(|id| wanted.contains(id))
        .collect();
    assert_exactly_once(&filled, &ids, "paging through the archive");
    let probes_archived = all.iter().filter(|e| e["source"] == "probe").count();
    assert_eq!(
        probes_archived,
        probed.load(Ordering::SeqCst),
        "every probe event is archived once"
    );
}

/// Times `/healthz` and a `POST /events` over and over until each scanner has
/// finished at least one whole paged scan (and at least 20 times, so the probes
/// overlap the scans); asserts each answers within a generous bound. Returns
/// how many events it published.
fn probe_while_scanning(s: &TestServer, scans_done: &AtomicUsize) -> usize {
    // Give the scans a moment to be under way.
    std::thread::sleep(Duration::from_millis(300));
    let bound = Duration::from_secs(2);
    let probe = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("http client");
    let started = Instant::now();
    let mut probes = 0;
    while (probes < 20 || scans_done.load(Ordering::SeqCst) < 3)
        && started.elapsed() < Duration::from_secs(40)
    {
        let t = Instant::now();
        let r = probe
            .get(format!("{}/healthz", s.url))
            .send()
            .expect("healthz");
        assert_eq!(r.status(), 200);
        let took = t.elapsed();
        assert!(
            took < bound,
            "/healthz took {took:?} while archive queries ran"
        );
        let t = Instant::now();
        let r = probe
            .post(format!("{}/events", s.url))
            .json(&json!({"source": "probe", "detail-type": "Probe", "detail": {}}))
            .send()
            .expect("POST /events");
        assert_eq!(r.status(), 200);
        let took = t.elapsed();
        assert!(
            took < bound,
            "POST /events took {took:?} while archive queries ran"
        );
        probes += 1;
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        scans_done.load(Ordering::SeqCst) >= 3,
        "the scans did not finish within 40 s"
    );
    probes
}

#[test]
fn a_time_range_returns_only_that_range_page_by_page() {
    let s = TestServer::start();
    let before = fill(&s, events(2_000, "before"));
    // Received times are in ms: a pause keeps each batch on its own side of a bound.
    std::thread::sleep(Duration::from_millis(30));
    let since = busbar::bus::now_ms();
    let inside = fill(&s, events(1_000, "inside"));
    let until = busbar::bus::now_ms();
    std::thread::sleep(Duration::from_millis(30));
    let after = fill(&s, events(2_000, "after"));
    let range = |limit: usize| -> Params {
        vec![
            ("since", at(since)),
            ("until", at(until)),
            ("limit", limit.to_string()),
        ]
    };

    // Small pages: the cursor carries the position, the range stays as asked.
    let (got, pages) = page_all(&client(), &s.url, &range(150));
    assert!(
        pages >= 7,
        "1,000 events in pages of 150 took {pages} page(s)"
    );
    assert_exactly_once(&ids_of(&got), &inside, "the range paged by 150");
    assert!(got.iter().all(|e| e["source"] == "inside"));

    // The same range with a pattern and one large page.
    let mut matching = range(PAGE);
    matching.push((
        "pattern",
        r#"{"source":["inside","before","after"]}"#.into(),
    ));
    let (events, next) = page(&client(), &s.url, &matching, None);
    assert_eq!(next, None, "the whole range fits one page");
    assert_exactly_once(&ids_of(&events), &inside, "the range in one page");

    // Open-ended ranges on either side.
    let older = all_ids(
        &s.url,
        vec![("until", at(since - 1)), ("limit", PAGE.to_string())],
    );
    assert_exactly_once(&older, &before, "until only");
    let newer = all_ids(
        &s.url,
        vec![("since", at(until + 1)), ("limit", PAGE.to_string())],
    );
    assert_exactly_once(&newer, &after, "since only");
}

#[test]
fn a_cursor_that_is_not_one_is_refused_with_the_reason() {
    let s = TestServer::start();
    let r = s.get("/v1/archive?cursor=not-a-cursor");
    assert_eq!(r.status, 400, "{}", r.text);
    let message = r.error_message();
    assert!(
        message.contains("cursor") && message.contains("next"),
        "{message}"
    );
}

#[test]
fn a_replay_pages_through_its_whole_range() {
    let s = TestServer::start();
    let since = busbar::bus::now_ms();
    // More than two of the replay's pages (500 events each).
    fill(&s, events(1_234, "replayed"));
    let until = busbar::bus::now_ms();
    let r = s.post_json(
        "/v1/replays",
        &json!({"name": "whole-range", "since": at(since), "until": at(until)}),
    );
    assert_eq!(r.status, 202, "{}", r.text);
    let started = Instant::now();
    let status = loop {
        let status = s.get("/v1/replays/whole-range").json();
        if status["state"] != "running" || started.elapsed() > Duration::from_secs(30) {
            break status;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status["state"], "completed", "{status}");
    assert_eq!(status["replayed"], 1_234, "{status}");
    assert_eq!(status["failed"], 0, "{status}");
}
