//! Greedy and broken plugins: instance slots, manifests through symlinks, plugin status.

use crate::harness::process::NodeDir;
use crate::harness::runtime::{Harness, delivery, event, install};
use crate::harness::server::TestServer;
use crate::harness::{built, eventually, eventually_async, plugin_cache, wasm};
use busbar::runtime::{CallError, FailureKind, NewEvent, PluginState, PluginStatus, Runtime};
use serde_json::{Value, json};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a wait here may take before the test gives up (a bound against
/// hanging, not a timing assertion).
const LIMIT: Duration = Duration::from_secs(30);

/// Lets a plugin keep the engine's whole share of instances for itself.
const GREEDY: &str = "[limits]\nmax_instances = 256\ntimeout_ms = 30000\ncpu_ms = 1000\n";

fn status(rt: &Runtime, name: &str) -> PluginStatus {
    rt.status()
        .into_iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("{name} is not in the plugin status"))
}

/// `calls` slow calls of `ms` each to `plugin`, each from a thread of its own
/// as delivery workers make them.
fn burst(
    rt: &Arc<Runtime>,
    plugin: &str,
    calls: usize,
    ms: u64,
) -> Vec<std::thread::JoinHandle<Result<Vec<NewEvent>, CallError>>> {
    (0..calls)
        .map(|_| {
            let (rt, plugin) = (rt.clone(), plugin.to_string());
            std::thread::Builder::new()
                .stack_size(256 << 10)
                .spawn(move || {
                    rt.call_blocking(
                        &plugin,
                        &event("t", "slow", json!({ "ms": ms })),
                        &delivery(),
                    )
                })
                .unwrap()
        })
        .collect()
}

/// Two plugins allowed 256 instances each take every slot of the engine
/// between them under a burst; a third plugin still gets its call through
/// while the burst runs, and once it is over, the idle warm instances they
/// keep are released for a third plugin that needs many.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn greedy_plugins_cannot_starve_another_of_instances() {
    let h = Harness::new(&[], false).await;
    for name in ["greedy-a", "greedy-b", "modest"] {
        install(h.plugins.path(), name, "testkit", Some(GREEDY));
    }
    h.rt.rescan().await.unwrap();

    let running: Vec<_> = ["greedy-a", "greedy-b"]
        .into_iter()
        .flat_map(|p| burst(&h.rt, p, 256, 8000))
        .collect();
    let rt = h.rt.clone();
    eventually_async("the burst to fill the engine", LIMIT, async || {
        (status(&rt, "greedy-a").instances + status(&rt, "greedy-b").instances >= 500).then_some(())
    })
    .await;
    let started = Instant::now();
    let modest = h.call("modest", "echo", json!({"n": 1})).await;
    let took = started.elapsed();
    assert!(modest.is_ok(), "{modest:?}");
    // Promptly: while the burst still holds its instances (each call sleeps 8 s).
    assert!(
        status(&h.rt, "greedy-a").instances > 0,
        "the call only went through after the burst"
    );
    assert!(took < Duration::from_secs(5), "took {took:?}");
    let mut refused = 0;
    for call in running {
        match call.join().unwrap() {
            Ok(_) => {}
            Err(e) if e.kind() == Some(FailureKind::TooManyInstances) => {
                assert!(
                    e.to_string().contains("instance slots of the engine"),
                    "{e}"
                );
                refused += 1;
            }
            Err(e) => panic!("{e}"),
        }
    }
    // modest's reserved slot was the only one the burst could not have.
    assert!(refused <= 2, "{refused} calls of the burst were refused");

    // The burst left hundreds of warm instances idle. A burst of modest
    // takes their slots instead of failing.
    let idle_before = status(&h.rt, "greedy-a").idle_instances;
    assert!(idle_before > 200, "{idle_before}");
    for call in burst(&h.rt, "modest", 200, 500) {
        let result = call.join().unwrap();
        assert!(result.is_ok(), "{result:?}");
    }
    let idle = status(&h.rt, "greedy-a").idle_instances + status(&h.rt, "greedy-b").idle_instances;
    assert!(idle < 2 * idle_before - 150, "{idle} still idle");
}

/// A plugin's `max_instances` must fit beside the slot every other loaded
/// plugin holds in reserve; one that cannot is refused with an error naming
/// the numbers, and the same plugin loads once it asks for what is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_whose_instances_cannot_fit_is_refused() {
    let h = Harness::new(&[], false).await;
    // 512 slots: with 257 plugins holding one each, 255 are left.
    for i in 0..257 {
        install(
            h.plugins.path(),
            &format!("small-{i:03}"),
            "testkit",
            Some("[limits]\nmax_instances = 1\n"),
        );
    }
    h.rt.rescan().await.unwrap();
    assert_eq!(h.rt.loaded_count(), 257);
    install(h.plugins.path(), "big", "testkit", Some(GREEDY));
    h.rt.rescan().await.unwrap();
    let big = status(&h.rt, "big");
    assert_eq!(big.state, PluginState::Failed);
    let error = big.last_error.unwrap();
    for part in [
        "big.toml",
        "limits.max_instances = 256",
        "512 instance slots",
        "257 are reserved",
        "at most 255",
    ] {
        assert!(error.contains(part), "{part:?} missing from: {error}");
    }
    std::fs::write(
        h.path("big.toml"),
        GREEDY.replace("max_instances = 256", "max_instances = 255"),
    )
    .unwrap();
    h.rt.rescan().await.unwrap();
    let big = status(&h.rt, "big");
    assert_eq!(big.state, PluginState::Loaded, "{:?}", big.last_error);
    assert_eq!(big.last_error, None);
    h.call("big", "echo", json!({})).await.unwrap();
}

/// A node over `plugins`, sharing the test run's compiled cache, with its
/// plugins loaded.
fn node_over(plugins: &Path) -> TestServer {
    let dir = plugins.to_path_buf();
    let server = TestServer::start_with(move |c| {
        c.server.plugins_dir = dir;
        c.server.cache_dir = Some(plugin_cache());
    });
    let client = server.client();
    eventually("the plugins to load", LIMIT, || {
        let r = client.get(format!("{}/readyz", server.url)).send().ok()?;
        r.status().is_success().then_some(())
    });
    server
}

/// `GET /v1/plugins`, by name.
fn listed(server: &TestServer) -> serde_json::Map<String, Value> {
    let reply = server.get("/v1/plugins");
    assert_eq!(reply.status, 200, "{}", reply.text);
    let all: Vec<Value> = serde_json::from_str(&reply.text).unwrap();
    all.into_iter()
        .map(|p| (p["name"].as_str().unwrap().to_string(), p))
        .collect()
}

const SECRET: &str = "root:x:0:0:hunter2:/root:/bin/bash";

/// Plugin files linked to files outside the plugins directory are not read,
/// and a manifest that does not parse is reported by line and column, never
/// with its text.
#[test]
fn manifest_errors_do_not_disclose_files() {
    let outside = tempfile::tempdir().unwrap();
    let plugins = tempfile::tempdir().unwrap();
    let p = plugins.path();
    let secret = outside.path().join("passwd");
    std::fs::write(&secret, format!("{SECRET}\n")).unwrap();
    std::fs::copy(wasm("testkit"), outside.path().join("elsewhere.wasm")).unwrap();

    install(p, "leak", "testkit", None);
    std::os::unix::fs::symlink(&secret, p.join("leak.toml")).unwrap();
    std::os::unix::fs::symlink(outside.path().join("elsewhere.wasm"), p.join("far.wasm")).unwrap();
    install(
        p,
        "plain",
        "testkit",
        Some(&format!("[config]\n{SECRET}\n")),
    );
    // A link that stays inside the directory is followed.
    std::fs::create_dir(p.join("builds")).unwrap();
    std::fs::copy(wasm("testkit"), p.join("builds/near.wasm")).unwrap();
    std::os::unix::fs::symlink(p.join("builds/near.wasm"), p.join("near.wasm")).unwrap();

    let server = node_over(p);
    let all = listed(&server);
    let text = serde_json::to_string(&all).unwrap();
    assert!(
        !text.contains("hunter2") && !text.contains("/bin/bash"),
        "{text}"
    );

    let leak = all["leak"]["last_error"].as_str().unwrap();
    assert!(
        leak.contains("leak.toml is a symbolic link")
            && leak.contains("outside the plugins directory"),
        "{leak}"
    );
    assert_eq!(all["leak"]["state"], "failed");
    let far = all["far"]["last_error"].as_str().unwrap();
    assert!(far.contains("far.wasm is a symbolic link"), "{far}");
    let plain = all["plain"]["last_error"].as_str().unwrap();
    assert!(plain.contains("plain.toml: line 2, column"), "{plain}");
    assert_eq!(all["near"]["state"], "loaded", "{}", all["near"]);
}

/// A good version back in place clears the error of the bad one; things
/// that are not components say so, and what to do about a core module.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_status_tells_the_truth_about_bad_files() {
    let h = Harness::new(&[], false).await;
    install(h.plugins.path(), "echo", "echo-v1", None);
    h.rt.rescan().await.unwrap();
    let good = std::fs::read(wasm("echo-v1")).unwrap();

    let cases: [(&[u8], &str); 3] = [
        (
            b"this is not wasm at all",
            "echo.wasm is not a WebAssembly component",
        ),
        (b"\0asm\x01\0\0\0", "wasm-tools component new echo.wasm"),
        (b"(component)", "echo.wasm is not a WebAssembly component"),
    ];
    for (bytes, expected) in cases {
        std::fs::write(h.path("echo.wasm"), bytes).unwrap();
        h.rt.rescan().await.unwrap();
        let error = status(&h.rt, "echo").last_error.unwrap();
        assert!(error.contains(expected), "{error}");
        assert!(!error.contains("utf-8"), "{error}");

        std::fs::write(h.path("echo.wasm"), &good).unwrap();
        h.rt.rescan().await.unwrap();
        let back = status(&h.rt, "echo");
        assert_eq!(back.last_error, None, "the good version serves again");
        assert_eq!(back.state, PluginState::Loaded);
    }
}

/// With RUST_BACKTRACE=1 in the server's environment, load errors shown by
/// `/v1/plugins` still carry no host backtrace.
#[test]
fn load_errors_carry_no_backtrace() {
    let node = NodeDir::new("");
    let echo = std::fs::read(built("plugins/fixtures/echo-v1.wasm")).unwrap();
    let plugins = node.plugins();
    std::fs::write(plugins.join("truncated.wasm"), &echo[..echo.len() / 2]).unwrap();
    // An empty component: valid, but it exports no `handle`.
    std::fs::write(plugins.join("empty.wasm"), b"\0asm\x0d\0\x01\0").unwrap();
    let server = node.start_with_env(&[("RUST_BACKTRACE", "1"), ("RUST_LIB_BACKTRACE", "1")]);
    let all: Vec<Value> = reqwest::blocking::get(format!("{}/v1/plugins", server.base))
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(all.len(), 2, "{all:?}");
    for plugin in &all {
        let error = plugin["last_error"].as_str().unwrap();
        assert!(!error.contains("backtrace"), "{error}");
        assert!(!error.contains('\n'), "{error}");
    }
    assert!(
        all[0]["last_error"]
            .as_str()
            .unwrap()
            .contains("empty.wasm does not fit"),
        "{all:?}"
    );
}

/// A manifest without its `.wasm` (the plugin sources' `Cargo.toml` in the
/// default plugins directory) is not a plugin; a manifest written before its
/// `.wasm` is applied when the `.wasm` arrives.
#[test]
fn a_manifest_alone_is_not_a_plugin() {
    let plugins = tempfile::tempdir().unwrap();
    let p = plugins.path();
    std::fs::write(
        p.join("Cargo.toml"),
        "[workspace]\nmembers = [\"payment-check\"]\n",
    )
    .unwrap();
    std::fs::write(p.join("late.toml"), "[config]\ncolour = \"blue\"\n").unwrap();
    install(p, "present", "testkit", None);
    let server = node_over(p);
    let names: Vec<String> = listed(&server).keys().cloned().collect();
    assert_eq!(names, ["present"]);
    let metrics = server.get("/metrics").text;
    assert!(!metrics.contains("plugin=\"Cargo\""), "{metrics}");
    assert!(!metrics.contains("plugin=\"late\""), "{metrics}");

    install(p, "late", "testkit", None);
    eventually("late.wasm to load", LIMIT, || {
        listed(&server)
            .get("late")
            .is_some_and(|l| l["state"] == "loaded")
            .then_some(())
    });
    let manifest = server.node.runtime.manifest("late").unwrap();
    assert_eq!(manifest.config["colour"], "blue");
    assert!(!listed(&server).contains_key("Cargo"));
}
