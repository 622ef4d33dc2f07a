//! End-to-end load: a real `busbar serve` child process on loopback, durable as
//! shipped, with payment-check's manifest as shipped, one rule routing every
//! event to the payment-check plugin.
//!
//! Measures, and prints as a table:
//! - events/s accepted with PutEvents batches of 10 (AWS JSON 1.1), and
//!   delivered (answered by the plugin) over the same interval, read from
//!   `busbar_deliveries_total{outcome="ok"}` on `/metrics`, with how long the
//!   backlog took to drain after the phase;
//! - single-event `POST /events` requests/s, accepted and delivered likewise;
//! - a baseline in the same run: the same generator against an HTTP server that
//!   does no work (axum answering `200 {}` after reading the body, on its own
//!   two-thread runtime in this process, sharing the cores), and busbar's
//!   figures as ratios of it;
//! - p50/p99 from ingest to the plugin's answer at a fixed offered rate
//!   (observed through `/v1/tail`, keyed by event id);
//! - resident memory of the server sampled over a soak.
//!
//! `cargo bench -p busbar --bench load` (after `plugins/build.sh`). Knobs:
//! BUSBAR_LOAD_SECS (per phase, default 10), BUSBAR_LOAD_RATE (default 10000),
//! BUSBAR_LOAD_SOAK_SECS (default 60), BUSBAR_LOAD_CLIENTS (default 64),
//! BUSBAR_LOAD_OBS=off to run the server without metrics and tracing (the
//! observability-overhead comparison: run once with, once without).

use futures::StreamExt;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Server {
    child: Child,
    base: String,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// BUSBAR_LOAD_OBS=off runs the server without Prometheus metrics and tracing.
fn observability_off() -> bool {
    std::env::var("BUSBAR_LOAD_OBS").is_ok_and(|v| v == "off")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start_server() -> Server {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let wasm = root.join("plugins/payment-check.wasm");
    assert!(
        wasm.exists(),
        "{} is missing: run plugins/build.sh first",
        wasm.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    std::fs::copy(&wasm, plugins.join("payment-check.wasm")).unwrap();
    // The manifest as shipped: no bench-tuned concurrency.
    std::fs::copy(
        root.join("plugins/payment-check.toml"),
        plugins.join("payment-check.toml"),
    )
    .unwrap();
    let port = free_port();
    let config = dir.path().join("busbar.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[server]
listen = "127.0.0.1:{port}"
plugins_dir = "{}"
data_dir = "{}"
[limits]
max_entries_per_request = 100
[delivery]
max_queue_backlog = 2000000
max_total_backlog = 4000000
[metrics]
interval_secs = 0
prometheus = {prometheus}
[[rules]]
name = "orders"
pattern = '{{"source": ["order-service"]}}'
[[rules.targets]]
id = "payment-check"
plugin = "payment-check"
"#,
            plugins.display(),
            dir.path().join("data").display(),
            prometheus = !observability_off(),
        ),
    )
    .unwrap();
    // As shipped, busbar logs at info with a span per delivery; "off" drops both.
    let log = if observability_off() { "off" } else { "info" };
    let child = Command::new(env!("CARGO_BIN_EXE_busbar"))
        .args(["serve", "--config"])
        .arg(&config)
        .env("BUSBAR_LOG", log)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start busbar serve");
    let base = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Ok(r) = reqwest::blocking::get(format!("{base}/v1/plugins"))
            && r.status().is_success()
            && r.text().unwrap_or_default().contains("payment-check")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "busbar did not come up on {base}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    Server {
        child,
        base,
        _dir: dir,
    }
}

fn order(i: u64) -> Value {
    json!({"id": format!("order-{i}"), "amount": (i % 1000) as f64, "customer": "load@example.com",
           "items": [{"sku": "BOOK-1", "qty": 1}], "note": "x".repeat(700)})
}

/// Runs `clients` loops for `secs`, each sending what `body` builds; returns accepted events/s.
async fn closed_loop(base: &str, secs: u64, clients: u64, batch: bool) -> (f64, u64) {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()
        .unwrap();
    let accepted = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let stop = Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for c in 0..clients {
        let client = client.clone();
        let base = base.to_string();
        let accepted = accepted.clone();
        let errors = errors.clone();
        tasks.push(tokio::spawn(async move {
            let mut i = c * 1_000_000_000;
            while Instant::now() < stop {
                let resp = if batch {
                    let entries: Vec<Value> = (0..10)
                        .map(|k| json!({"Source": "order-service", "DetailType": "OrderCreated",
                                        "Detail": order(i + k).to_string()}))
                        .collect();
                    i += 10;
                    client
                        .post(format!("{base}/"))
                        .header("x-amz-target", "AWSEvents.PutEvents")
                        .header("content-type", "application/x-amz-json-1.1")
                        .body(json!({"Entries": entries}).to_string())
                        .send()
                        .await
                } else {
                    i += 1;
                    client
                        .post(format!("{base}/events"))
                        .header("content-type", "application/json")
                        .body(json!({"source": "order-service", "detail-type": "OrderCreated", "detail": order(i)}).to_string())
                        .send()
                        .await
                };
                match resp {
                    Ok(r) if r.status().is_success() => {
                        let v: Value = r.json().await.unwrap_or(Value::Null);
                        let failed = v.get("FailedEntryCount").or_else(|| v.get("failed")).and_then(Value::as_u64).unwrap_or(0);
                        let n = if batch { 10 } else { 1 };
                        accepted.fetch_add(n - failed.min(n), Ordering::Relaxed);
                        errors.fetch_add(failed, Ordering::Relaxed);
                    }
                    _ => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    (
        accepted.load(Ordering::Relaxed) as f64 / secs as f64,
        errors.load(Ordering::Relaxed),
    )
}

/// What a closed-loop phase measured: accepted by the server and, where it
/// reports them, delivered (answered by the plugin) over the same interval.
struct Throughput {
    /// Events (or requests) per second acknowledged to the generator.
    accepted: f64,
    refused: u64,
    /// Deliveries with outcome `ok` per second over the same interval
    /// (`busbar_deliveries_total` diffed); `None` without `/metrics`.
    delivered: Option<f64>,
    /// Seconds after the phase until every accepted event was delivered;
    /// `None` if it had not drained within the wait.
    drained_after: Option<f64>,
}

/// `busbar_deliveries_total{outcome="ok"}` from the server's `/metrics`.
async fn delivered_total(client: &reqwest::Client, base: &str) -> Option<u64> {
    let r = client.get(format!("{base}/metrics")).send().await.ok()?;
    if !r.status().is_success() {
        return None;
    }
    let text = r.text().await.ok()?;
    // Absent until the first delivery settles.
    Some(
        text.lines()
            .find(|l| l.starts_with("busbar_deliveries_total{") && l.contains("outcome=\"ok\""))
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .map_or(0, |v| v as u64),
    )
}

/// A closed-loop phase against `base`; `deliveries` reads busbar's counters
/// before and after it, then waits (at most `drain_wait`) for the backlog.
async fn throughput(
    base: &str,
    secs: u64,
    clients: u64,
    batch: bool,
    deliveries: bool,
    drain_wait: Duration,
) -> Throughput {
    let client = reqwest::Client::new();
    let before = if deliveries {
        delivered_total(&client, base).await
    } else {
        None
    };
    let (accepted, refused) = closed_loop(base, secs, clients, batch).await;
    let Some(before) = before else {
        return Throughput {
            accepted,
            refused,
            delivered: None,
            drained_after: None,
        };
    };
    let ended = Instant::now();
    let after = delivered_total(&client, base).await.unwrap_or(before);
    let delivered = Some((after - before) as f64 / secs as f64);
    let owed = before + (accepted * secs as f64).round() as u64;
    let mut drained_after = None;
    while ended.elapsed() < drain_wait {
        if delivered_total(&client, base).await.unwrap_or(0) >= owed {
            drained_after = Some(ended.elapsed().as_secs_f64());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Throughput {
        accepted,
        refused,
        delivered,
        drained_after,
    }
}

/// The baseline: an HTTP server that does no work, answering every request
/// `200 {}` after reading its body, on its own runtime in this process (two
/// worker threads, like busbar's on 2 cores), so it shares the cores with
/// the generator as busbar does.
struct Baseline {
    base: String,
    _rt: tokio::runtime::Runtime,
}

fn start_baseline() -> Baseline {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let app = axum::Router::new().fallback(|_body: bytes::Bytes| async {
        (
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            "{}",
        )
    });
    rt.spawn(async move { axum::serve(listener, app).await });
    Baseline { base, _rt: rt }
}

fn ratio(busbar: f64, baseline: f64) -> String {
    if baseline > 0.0 {
        format!("{:.2}x", busbar / baseline)
    } else {
        "n/a".to_string()
    }
}

fn print_throughput(label: &str, unit: &str, t: &Throughput, baseline: &Throughput) {
    println!(
        "{:<48} {:>10.0} {unit} ({} refused)",
        label, t.accepted, t.refused
    );
    match t.delivered {
        Some(d) => println!(
            "{:<48} {:>10.0} {unit} ({})",
            "  delivered (plugin answered), same interval",
            d,
            match t.drained_after {
                Some(s) => format!("all accepted delivered {s:.1} s after the phase"),
                None => "backlog not drained within the wait".to_string(),
            }
        ),
        None => println!(
            "{:<48} {:>10} {unit} (no /metrics: BUSBAR_LOAD_OBS=off)",
            "  delivered (plugin answered), same interval", "n/a"
        ),
    }
    println!(
        "{:<48} {:>10.0} {unit} ({} refused)",
        "  baseline: no-op HTTP server, same generator", baseline.accepted, baseline.refused
    );
    println!(
        "{:<48} accepted {}, delivered {}",
        "  busbar / baseline",
        ratio(t.accepted, baseline.accepted),
        t.delivered
            .map_or("n/a".to_string(), |d| ratio(d, baseline.accepted)),
    );
}

/// Offers `rate` events/s (batches of 10 every 1/rate*10 s) and measures ingest→plugin latency.
async fn open_loop_latency(base: &str, secs: u64, rate: u64) -> (f64, f64, u64, u64) {
    let client = reqwest::Client::new();
    let sent: Arc<parking_lot::Mutex<HashMap<String, Instant>>> = Default::default();
    let latencies: Arc<parking_lot::Mutex<Vec<f64>>> = Default::default();
    let done = Arc::new(AtomicBool::new(false));
    // The tail stream reports every settled delivery with its event id.
    let tail = {
        let resp = client
            .get(format!("{base}/v1/tail"))
            .send()
            .await
            .expect("tail");
        let sent = sent.clone();
        let latencies = latencies.clone();
        let done = done.clone();
        tokio::spawn(async move {
            let mut stream = resp.bytes_stream();
            let mut buf = Vec::new();
            while let Some(Ok(chunk)) = stream.next().await {
                buf.extend_from_slice(&chunk);
                while let Some(pos) = buf.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = buf.drain(..=pos).collect();
                    let Some(data) = line.strip_prefix(b"data:") else {
                        continue;
                    };
                    let Ok(v) = serde_json::from_slice::<Value>(data) else {
                        continue;
                    };
                    if v["kind"] == "delivery"
                        && let Some(id) = v["event_id"].as_str()
                        && let Some(t0) = sent.lock().remove(id)
                    {
                        latencies.lock().push(t0.elapsed().as_secs_f64() * 1000.0);
                    }
                }
                if done.load(Ordering::Relaxed) && sent.lock().is_empty() {
                    break;
                }
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let batches_per_sec = (rate / 10).max(1);
    let interval = Duration::from_secs_f64(1.0 / batches_per_sec as f64);
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let stop = Instant::now() + Duration::from_secs(secs);
    let mut n = 0u64;
    let mut inflight = Vec::new();
    while Instant::now() < stop {
        tick.tick().await;
        let ids: Vec<String> = (0..10).map(|k| format!("lat-{n}-{k}")).collect();
        n += 1;
        let events: Vec<Value> = ids
            .iter()
            .map(|id| json!({"id": id, "source": "order-service", "detail-type": "OrderCreated", "detail": order(n)}))
            .collect();
        {
            let mut s = sent.lock();
            let now = Instant::now();
            for id in &ids {
                s.insert(id.clone(), now);
            }
        }
        let client = client.clone();
        let url = format!("{base}/events");
        inflight.push(tokio::spawn(async move {
            let _ = client.post(url).json(&events).send().await;
        }));
        if inflight.len() > 512 {
            for t in inflight.drain(..256) {
                let _ = t.await;
            }
        }
    }
    for t in inflight {
        let _ = t.await;
    }
    done.store(true, Ordering::Relaxed);
    let _ = tokio::time::timeout(Duration::from_secs(20), tail).await;
    let lost = sent.lock().len() as u64;
    let mut l = latencies.lock().clone();
    l.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| {
        if l.is_empty() {
            f64::NAN
        } else {
            l[((l.len() - 1) as f64 * p) as usize]
        }
    };
    (pct(0.5), pct(0.99), l.len() as u64, lost)
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn main() {
    // `cargo bench` passes --bench; nothing to parse.
    let secs = env_u64("BUSBAR_LOAD_SECS", 10);
    let rate = env_u64("BUSBAR_LOAD_RATE", 10_000);
    let soak = env_u64("BUSBAR_LOAD_SOAK_SECS", 60);
    let clients = env_u64("BUSBAR_LOAD_CLIENTS", 64);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();

    // The baseline first, alone on the cores, then stopped.
    let baseline = start_baseline();
    let base_batched = rt.block_on(throughput(
        &baseline.base,
        secs,
        clients,
        true,
        false,
        Duration::ZERO,
    ));
    let base_single = rt.block_on(throughput(
        &baseline.base,
        secs,
        clients,
        false,
        false,
        Duration::ZERO,
    ));
    drop(baseline);

    // Long enough for a backlog several times the phase to drain.
    let drain_wait = Duration::from_secs((secs * 12).max(60));
    let server = start_server();
    println!(
        "busbar end-to-end load (server pid {}, {} s per phase, {clients} clients)",
        server.child.id(),
        secs
    );
    println!("{:<48} {:>14}", "phase", "result");
    let batched = rt.block_on(throughput(
        &server.base,
        secs,
        clients,
        true,
        true,
        drain_wait,
    ));
    print_throughput("PutEvents, batches of 10", "ev/s ", &batched, &base_batched);
    // A fresh server, so the single-event phase starts with no backlog.
    drop(server);
    let server = start_server();
    let single = rt.block_on(throughput(
        &server.base,
        secs,
        clients,
        false,
        true,
        drain_wait,
    ));
    print_throughput(
        "POST /events, one event per request",
        "req/s",
        &single,
        &base_single,
    );
    drop(server);

    let server = start_server();
    let (p50, p99, seen, lost) = rt.block_on(open_loop_latency(&server.base, secs, rate));
    println!(
        "{:<48} p50 {p50:.2} ms, p99 {p99:.2} ms ({seen} observed, {lost} not seen in time)",
        format!("ingest -> plugin at {rate} ev/s offered"),
    );

    let pid = server.child.id();
    let start_rss = rss_kib(pid);
    let stop_sampler = Arc::new(AtomicBool::new(false));
    let sampler = {
        let stop = stop_sampler.clone();
        std::thread::spawn(move || {
            let mut samples = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                samples.push(rss_kib(pid));
                std::thread::sleep(Duration::from_secs(5));
            }
            samples
        })
    };
    let (soak_rate, _) = rt.block_on(open_loop_soak(&server.base, soak, rate / 4));
    stop_sampler.store(true, Ordering::Relaxed);
    let samples = sampler.join().unwrap();
    let max = samples.iter().copied().max().unwrap_or(0);
    let end = *samples.last().unwrap_or(&0);
    println!(
        "{:<48} start {} MiB, max {} MiB, end {} MiB ({:.0} ev/s over {soak} s)",
        "resident memory during soak",
        start_rss / 1024,
        max / 1024,
        end / 1024,
        soak_rate
    );
    // The curve, at each tenth of the soak: flat means it levels off, not that it never moves.
    let curve: Vec<String> = (1..=10)
        .filter_map(|k| samples.get((samples.len() * k / 10).saturating_sub(1)))
        .map(|kib| (kib / 1024).to_string())
        .collect();
    println!("{:<48} {} MiB", "  by tenths of the soak", curve.join(", "));
}

/// A steady offered load for the memory soak.
async fn open_loop_soak(base: &str, secs: u64, rate: u64) -> (f64, u64) {
    let client = reqwest::Client::new();
    let batches_per_sec = (rate / 10).max(1);
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / batches_per_sec as f64));
    let stop = Instant::now() + Duration::from_secs(secs);
    let mut sent = 0u64;
    let mut errors = 0u64;
    while Instant::now() < stop {
        tick.tick().await;
        let events: Vec<Value> = (0..10)
            .map(|k| json!({"source": "order-service", "detail-type": "OrderCreated", "detail": order(sent + k)}))
            .collect();
        match client
            .post(format!("{base}/events"))
            .json(&events)
            .send()
            .await
        {
            Ok(r) if r.status().is_success() => sent += 10,
            _ => errors += 1,
        }
    }
    (sent as f64 / secs as f64, errors)
}
