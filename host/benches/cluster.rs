//! Events per second through the JetStream bus with one, two and three nodes,
//! against the embedded bus, on this machine.
//!
//! Each "node" is a `NatsBus` in this process with 16 workers per queue doing
//! what the dispatcher does around a plugin call: take, then settle with an
//! ack. No plugin runs, so the figures are the bus's own cost per event
//! (publish with its acks, pull, double ack). Events are published in batches
//! of 100 by 4 concurrent publishers, each routed to one target.
//!
//! Run: `cargo bench --bench cluster` (needs nats-server; host/tests/tools.sh
//! installs it). The nodes and the server share the machine's cores, so on a
//! small machine the numbers are CPU-bound, not network-bound.

use busbar::bus::embedded::{EmbeddedBus, EmbeddedConfig};
use busbar::bus::nats::{NatsBus, NatsConfig};
use busbar::bus::{Bus, RoutedEvent, Settle};
use busbar::event::{Event, EventInput, EventLimits};
use busbar::rules::Route;
use serde_json::json;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const EVENTS: usize = 20_000;
const BATCH: usize = 100;
const PUBLISHERS: usize = 4;
const WORKERS: usize = 16;
const QUEUE: &str = "default/bench/t";

/// A `nats-server -js` on a free loopback port with its own store, killed on drop.
struct NatsServer {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl NatsServer {
    fn start() -> NatsServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = tempfile::tempdir().unwrap();
        let child = Command::new("nats-server")
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server must be installed (host/tests/tools.sh installs it)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "nats-server did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        NatsServer {
            child,
            port,
            _dir: dir,
        }
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every event goes to the one bench target (what publishing does above the store).
fn routed(event: Event) -> RoutedEvent {
    RoutedEvent {
        json: serde_json::to_vec(&event).unwrap(),
        routes: vec![Route {
            rule: "bench".into(),
            target: "t".into(),
            plugin: "p".into(),
        }],
        rules: vec!["bench".into()],
        archive: true,
        event,
    }
}

fn event(i: usize) -> Event {
    EventInput::from_json(json!({"source": "bench", "detail-type": "t", "detail": {"n": i}}))
        .unwrap()
        .into_event(&EventLimits::default())
        .unwrap()
}

/// Publishes EVENTS and waits until every one was taken and acked; returns events/s.
async fn run(nodes: Vec<Arc<dyn Bus>>) -> f64 {
    let done = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for bus in &nodes {
        for _ in 0..WORKERS {
            let (bus, done) = (bus.clone(), done.clone());
            workers.push(tokio::spawn(async move {
                while let Some(d) = bus.take(QUEUE).await {
                    let ack = Settle::Ack {
                        new_events: vec![],
                        stopped: vec![],
                    };
                    if bus.settle(d, ack).await.is_ok() {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }));
        }
    }
    let started = Instant::now();
    let mut publishers = Vec::new();
    for p in 0..PUBLISHERS {
        let bus = nodes[p % nodes.len()].clone();
        publishers.push(tokio::spawn(async move {
            for chunk in (p..EVENTS)
                .step_by(PUBLISHERS)
                .collect::<Vec<_>>()
                .chunks(BATCH)
            {
                let events = chunk.iter().map(|&i| routed(event(i))).collect();
                let res = bus.publish(events).await.unwrap();
                assert!(
                    res.iter().all(|r| r.is_ok()),
                    "{:?}",
                    res.iter().find(|r| r.is_err())
                );
            }
        }));
    }
    for p in publishers {
        p.await.unwrap();
    }
    while done.load(Ordering::Relaxed) < EVENTS {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let rate = EVENTS as f64 / started.elapsed().as_secs_f64();
    for n in &nodes {
        n.close();
    }
    for w in workers {
        w.abort();
    }
    rate
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    println!(
        "busbar bus throughput: {EVENTS} events, batches of {BATCH}, {PUBLISHERS} publishers, {WORKERS} workers per node, no plugin"
    );
    println!(
        "machine: {} cores shared by the nodes and nats-server",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );
    println!(
        "{:<28} {:>12} {:>16}",
        "backend", "events/s", "µs per event"
    );
    let embedded = rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let bus = EmbeddedBus::open(EmbeddedConfig::new(dir.path())).unwrap();
        run(vec![bus as Arc<dyn Bus>]).await
    });
    println!(
        "{:<28} {:>12.0} {:>16.1}",
        "embedded (redb)",
        embedded,
        1e6 / embedded
    );
    for n in 1..=3 {
        let nats = NatsServer::start();
        let rate = rt.block_on(async {
            let mut nodes: Vec<Arc<dyn Bus>> = Vec::new();
            for _ in 0..n {
                let c = NatsConfig::from_url(&nats.url()).unwrap();
                nodes.push(NatsBus::connect(c).await.unwrap());
            }
            run(nodes).await
        });
        println!(
            "{:<28} {:>12.0} {:>16.1}",
            format!("jetstream, {n} node(s)"),
            rate,
            1e6 / rate
        );
    }
}
