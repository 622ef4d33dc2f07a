//! What a plugin call costs: warm and fresh instances of a Rust plugin, warm
//! JavaScript and Python plugins, hot-reload latency, and resident memory per
//! warm instance. Prints a table.
//!
//! Run: `cargo bench -p busbar --bench plugin_call` (needs `plugins/build.sh` first).
//! Calls are made with `Runtime::call_blocking` from the bench's own thread,
//! the way a dedicated delivery worker makes them.

use busbar::bus::embedded::RedbKv;
use busbar::event::{Event, EventInput, EventLimits};
use busbar::runtime::{Delivery, Runtime, RuntimeConfig};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn wasm(name: &str) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins");
    [
        root.join(format!("{name}.wasm")),
        root.join("fixtures").join(format!("{name}.wasm")),
    ]
    .into_iter()
    .find(|p| p.exists())
    .unwrap_or_else(|| {
        panic!(
            "{name}.wasm not found under {}: run plugins/build.sh first",
            root.display()
        )
    })
}

fn event(source: &str, detail_type: &str, detail: serde_json::Value) -> Event {
    EventInput::from_json(json!({"source": source, "detail-type": detail_type, "detail": detail}))
        .unwrap()
        .into_event(&EventLimits::default())
        .unwrap()
}

fn delivery(i: u64) -> Delivery {
    Delivery {
        rule: "bench".into(),
        target: "t".into(),
        attempt: 1,
        id: format!("d-{i}"),
    }
}

struct Row {
    what: String,
    figure: String,
    goal: &'static str,
}

/// Mean and p99 per call over `n` calls after `n / 10` warm-up calls.
fn per_call(rt: &Runtime, plugin: &str, ev: &Event, n: u64) -> (Duration, Duration) {
    for i in 0..n / 10 {
        rt.call_blocking(plugin, ev, &delivery(i)).unwrap();
    }
    let mut samples = Vec::with_capacity(n as usize);
    // Distinct delivery ids, so plugins that deduplicate on them do the full work.
    let deliveries: Vec<Delivery> = (0..n).map(|i| delivery(n + i)).collect();
    let start = Instant::now();
    for d in &deliveries {
        let t = Instant::now();
        let out = rt.call_blocking(plugin, ev, d).unwrap();
        samples.push(t.elapsed());
        std::hint::black_box(out);
    }
    let mean = start.elapsed() / n as u32;
    samples.sort();
    (mean, samples[samples.len() * 99 / 100])
}

fn us(d: Duration) -> String {
    format!("{:.2} µs", d.as_secs_f64() * 1e6)
}

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// Appends a custom section so the bytes (and hash) differ but the component
/// stays the same: forces a real compile instead of a cache hit.
fn with_custom_section(bytes: &[u8], tag: u64) -> Vec<u8> {
    let name = b"busbar-bench";
    let payload = tag.to_le_bytes();
    let mut out = bytes.to_vec();
    out.push(0);
    let len = 1 + name.len() + payload.len();
    assert!(len < 128);
    out.push(len as u8);
    out.push(name.len() as u8);
    out.extend_from_slice(name);
    out.extend_from_slice(&payload);
    out
}

/// Writes `bytes` as `echo.wasm` and returns the time until a call is served by
/// a version answering `expect`.
fn reload(rt: &Runtime, dir: &Path, bytes: &[u8], expect: i64) -> Duration {
    let ev = event("bench", "e", json!({}));
    let start = Instant::now();
    std::fs::write(dir.join("echo.wasm"), bytes).unwrap();
    loop {
        if let Ok(out) = rt.call_blocking("echo", &ev, &delivery(0))
            && out[0].detail["version"] == expect
        {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "reload never happened"
        );
        std::thread::sleep(Duration::from_micros(200));
    }
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument is not supported.
    let io = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let plugins = dir.path();
    let copy = |name: &str, built: &str, manifest: &str| {
        std::fs::copy(wasm(built), plugins.join(format!("{name}.wasm"))).unwrap();
        std::fs::write(plugins.join(format!("{name}.toml")), manifest).unwrap();
    };
    copy("payment-check", "payment-check", "");
    copy("testkit", "testkit", "[limits]\nmax_instances = 64\n");
    copy(
        "testkit-fresh",
        "testkit",
        "[instances]\npolicy = \"fresh\"\n",
    );
    copy(
        "payment-fresh",
        "payment-check",
        "[instances]\npolicy = \"fresh\"\n",
    );
    copy("rewards", "rewards", "");
    copy("notification", "notification", "");
    copy("echo", "echo-v1", "");

    let kv = Arc::new(RedbKv::open(&data.path().join("kv.redb")).unwrap());
    let config = RuntimeConfig {
        plugins_dir: plugins.to_path_buf(),
        cache_dir: Path::new(env!("CARGO_TARGET_TMPDIR")).join("busbar-plugin-cache"),
        watch: true,
    };
    let rt = Runtime::new(config, kv).unwrap();
    let started = Instant::now();
    io.block_on(rt.start()).unwrap();
    eprintln!(
        "loaded {} plugins in {:?}",
        rt.status().len(),
        started.elapsed()
    );

    let mut rows = Vec::new();
    // A ~1 KB event in, one event out.
    let kilobyte = event(
        "bench",
        "echo",
        json!({"order_id": 42, "items": (0..36).map(|i| json!({"sku": format!("sku-{i:04}"), "qty": i})).collect::<Vec<_>>()}),
    );
    let size = kilobyte.detail.to_string().len();

    let (mean, p99) = per_call(&rt, "testkit", &kilobyte, 50_000);
    rows.push(Row {
        what: format!("Rust warm (testkit echo, {size} B detail in, 1 event out)"),
        figure: format!("{} (p99 {})", us(mean), us(p99)),
        goal: "≤ 5 µs",
    });
    let order = event(
        "order-service",
        "OrderCreated",
        json!({"id": 7, "amount": 100}),
    );
    let (mean, p99) = per_call(&rt, "payment-check", &order, 50_000);
    rows.push(Row {
        what: "Rust warm (payment-check, 1 event out)".into(),
        figure: format!("{} (p99 {})", us(mean), us(p99)),
        goal: "≤ 5 µs",
    });
    let (mean, p99) = per_call(&rt, "testkit-fresh", &kilobyte, 10_000);
    rows.push(Row {
        what: format!("Rust fresh instance per call (testkit echo, {size} B detail)"),
        figure: format!("{} (p99 {})", us(mean), us(p99)),
        goal: "≤ 15 µs",
    });
    let (mean, p99) = per_call(&rt, "payment-fresh", &order, 10_000);
    rows.push(Row {
        what: "Rust fresh instance per call (payment-check)".into(),
        figure: format!("{} (p99 {})", us(mean), us(p99)),
        goal: "≤ 15 µs",
    });
    let ignored = event("bench", "Something Else", json!({"k": "v"}));
    let (mean, p99) = per_call(&rt, "rewards", &ignored, 20_000);
    rows.push(Row {
        what: "JavaScript warm (rewards, event it ignores: call overhead)".into(),
        figure: format!("{} (p99 {})", us(mean), us(p99)),
        goal: "≤ 100 µs",
    });
    let payment = event(
        "payment-service",
        "Payment Processed",
        json!({"customer_id": "c1", "total_cost": 250.5}),
    );
    // Each call does a kv increment and a set: two durable redb commits.
    let (mean, p99) = per_call(&rt, "rewards", &payment, 500);
    rows.push(Row {
        what: "JavaScript warm (rewards, full: 2 kv writes + 1 event out)".into(),
        figure: format!("{} (p99 {})", us(mean), us(p99)),
        goal: "(kv-bound)",
    });
    let notify = event(
        "order-service",
        "OrderCreated",
        json!({"order_id": 42, "amount": 600, "customer_id": "c9"}),
    );
    let (mean, p99) = per_call(&rt, "notification", &notify, 20_000);
    rows.push(Row {
        what: "Python warm (notification, no webhook: compose + log)".into(),
        figure: format!("{} (p99 {})", us(mean), us(p99)),
        goal: "≤ 100 µs",
    });

    // Hot reload: write-to-first-served, alternating versions.
    let v1 = std::fs::read(wasm("echo-v1")).unwrap();
    let v2 = std::fs::read(wasm("echo-v2")).unwrap();
    let seed = std::process::id() as u64 * 1000;
    let mut compiled = Vec::new();
    let mut cached = Vec::new();
    for i in 0..6u64 {
        let (bytes, version) = if i % 2 == 0 { (&v2, 2) } else { (&v1, 1) };
        compiled.push(reload(
            &rt,
            plugins,
            &with_custom_section(bytes, seed + i),
            version,
        ));
    }
    for i in 0..6u64 {
        let (bytes, version) = if i % 2 == 0 { (&v2, 2) } else { (&v1, 1) };
        // Same bytes as an earlier round: served from the compiled cache.
        cached.push(reload(
            &rt,
            plugins,
            &with_custom_section(bytes, seed + i),
            version,
        ));
    }
    let median = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let ms = |d: Duration| format!("{:.1} ms", d.as_secs_f64() * 1e3);
    rows.push(Row {
        what: "Reload, new bytes (compile), write → first call served".into(),
        figure: format!(
            "{} median, {} max",
            ms(median(&mut compiled)),
            ms(*compiled.iter().max().unwrap())
        ),
        goal: "≤ 200 ms",
    });
    rows.push(Row {
        what: "Reload, bytes seen before (compiled cache)".into(),
        figure: format!(
            "{} median, {} max",
            ms(median(&mut cached)),
            ms(*cached.iter().max().unwrap())
        ),
        goal: "≤ 200 ms",
    });

    // Resident memory per warm instance: hold N instances busy at once so the
    // pool grows to N, then compare RSS.
    let n = 48;
    let before = rss_bytes();
    let slow = event("bench", "slow", json!({"ms": 200}));
    std::thread::scope(|s| {
        for i in 0..n {
            let (rt, slow) = (&rt, &slow);
            s.spawn(move || rt.call_blocking("testkit", slow, &delivery(i)).unwrap());
        }
    });
    let after = rss_bytes();
    let live = rt
        .status()
        .into_iter()
        .find(|p| p.name == "testkit")
        .map_or(0, |p| p.instances);
    rows.push(Row {
        what: format!("RSS per warm Rust instance ({live} instances)"),
        figure: format!(
            "{:.0} KiB",
            after.saturating_sub(before) as f64 / live.max(1) as f64 / 1024.0
        ),
        goal: "",
    });

    let width = rows
        .iter()
        .map(|r| r.what.chars().count())
        .max()
        .unwrap_or(0);
    let fig = rows
        .iter()
        .map(|r| r.figure.chars().count())
        .max()
        .unwrap_or(0);
    println!("\n{:<width$}  {:<fig$}  goal", "plugin_call", "figure");
    println!("{}", "-".repeat(width + fig + 12));
    for r in rows {
        println!("{:<width$}  {:<fig$}  {}", r.what, r.figure, r.goal);
    }
}
