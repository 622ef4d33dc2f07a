//! The plugin runtime with real components: the example plugins, hot reload,
//! and hostile guests (testkit) contained by the sandbox and the limits.
//! Needs the plugins built first: `plugins/build.sh`.

mod common;

use busbar::runtime::{CallError, FailureKind, PluginState, Policy, RegistryChange};
use common::*;
use serde_json::{Value, json};

const TESTKIT_LIMITS: &str = r#"
[limits]
memory_mib = 32
cpu_ms = 200
timeout_ms = 1000
"#;

fn failed_kind(r: &Result<Vec<busbar::runtime::NewEvent>, CallError>) -> Option<FailureKind> {
    r.as_ref().err().and_then(CallError::kind)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payment_check_decides_by_amount() {
    let h = Harness::new(
        &[("payment-check", Some(&shipped_manifest("payment-check")))],
        false,
    )
    .await;
    let ok = h
        .call(
            "payment-check",
            "OrderCreated",
            json!({"id": 7, "amount": 100}),
        )
        .await
        .unwrap();
    assert_eq!(ok.len(), 1);
    assert_eq!(ok[0].detail_type, "PaymentSucceeded");
    assert_eq!(ok[0].source, "payment-service");
    assert_eq!(ok[0].detail, json!({"id": 7, "amount": 100}));

    let failed = h
        .call(
            "payment-check",
            "OrderCreated",
            json!({"id": 8, "amount": 600}),
        )
        .await
        .unwrap();
    assert_eq!(failed[0].detail_type, "PaymentFailed");

    let err = h
        .call("payment-check", "OrderCreated", json!({"id": 9}))
        .await
        .unwrap_err();
    match &err {
        CallError::Reject { plugin, message } => {
            assert_eq!(plugin, "payment-check");
            assert!(message.contains("amount"), "{message}");
        }
        other => panic!("expected a reject, got {other}"),
    }
    assert!(!err.is_retryable());
    let status = h.rt.status();
    assert_eq!(status.len(), 1);
    assert_eq!(status[0].calls, 3);
    assert_eq!(status[0].errors, 1);
    assert_eq!(status[0].state, PluginState::Loaded);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn testkit_well_behaved_modes() {
    let manifest = r#"
[config]
greeting = "hello"
mode = "test"
"#;
    let h = Harness::new(&[("testkit", Some(manifest))], false).await;
    let echoed = h
        .call("testkit", "echo", json!({"a": [1, 2, 3]}))
        .await
        .unwrap();
    assert_eq!(echoed[0].detail, json!({"a": [1, 2, 3]}));

    let config = h.call("testkit", "config", json!({})).await.unwrap();
    assert_eq!(
        config[0].detail,
        json!({"greeting": "hello", "mode": "test"})
    );

    let first = h.call("testkit", "kv", json!({"key": "n"})).await.unwrap();
    let second = h.call("testkit", "kv", json!({"key": "n"})).await.unwrap();
    assert_eq!(first[0].detail["value"], 1);
    assert_eq!(second[0].detail["value"], 2);

    let retry = h
        .call("testkit", "fail-retry", json!({}))
        .await
        .unwrap_err();
    assert!(
        matches!(&retry, CallError::Retry { message, .. } if message == "asked to retry"),
        "{retry}"
    );
    assert!(retry.is_retryable());
    let reject = h
        .call("testkit", "fail-reject", json!({}))
        .await
        .unwrap_err();
    assert!(
        matches!(&reject, CallError::Reject { message, .. } if message == "asked to reject"),
        "{reject}"
    );

    assert!(
        h.call("testkit", "stdout", json!({}))
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_plugin_is_not_loaded() {
    let h = Harness::new(&[], false).await;
    let err = h.call("nope", "echo", json!({})).await.unwrap_err();
    assert_eq!(
        err,
        CallError::NotLoaded {
            plugin: "nope".into()
        }
    );
    assert!(err.to_string().contains("\"nope\""));
}

/// Each hostile mode fails with its own kind, names the plugin and the export,
/// and leaves the host serving (the next call on the same plugin works).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hostile_guests_are_contained() {
    // Building 100,000 events needs more than 32 MiB: a roomier copy of testkit.
    let roomy = "[limits]\nmemory_mib = 200\n";
    let plugins = [
        ("testkit", Some(TESTKIT_LIMITS)),
        ("roomy", Some(roomy)),
        ("payment-check", None),
    ];
    let dir = tempfile::tempdir().unwrap();
    for (name, manifest) in plugins {
        install(
            dir.path(),
            name,
            if name == "roomy" { "testkit" } else { name },
            manifest,
        );
    }
    let data = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path(), &data.path().join("kv.redb"), false);
    rt.start().await.unwrap();
    let cases: &[(&str, &str, Value, &[FailureKind])] = &[
        (
            "testkit",
            "loop",
            json!({}),
            &[FailureKind::CpuBudget, FailureKind::Timeout],
        ),
        ("testkit", "memory", json!({}), &[FailureKind::OutOfMemory]),
        (
            "testkit",
            "recursion",
            json!({}),
            &[FailureKind::StackOverflow],
        ),
        (
            "roomy",
            "huge-output",
            json!({}),
            &[FailureKind::OutputTooLarge],
        ),
        (
            "roomy",
            "huge-output",
            json!({"kind": "big-detail", "mib": 9}),
            &[FailureKind::OutputTooLarge],
        ),
        ("testkit", "panic", json!({}), &[FailureKind::Panic]),
        (
            "testkit",
            "slow",
            json!({"ms": 5000}),
            &[FailureKind::Timeout],
        ),
    ];
    // Another plugin keeps serving while the hostile calls run.
    let bystander_rt = rt.clone();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let bystander = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut served = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let out = bystander_rt
                    .call(
                        "payment-check",
                        event("t", "OrderCreated", json!({"amount": 5})),
                        delivery(),
                    )
                    .await
                    .expect("the bystander plugin must keep serving");
                assert_eq!(out[0].detail_type, "PaymentSucceeded");
                served += 1;
            }
            served
        })
    };
    for (plugin, mode, detail, kinds) in cases {
        let result = rt
            .call(plugin, event("t", mode, detail.clone()), delivery())
            .await;
        let kind = failed_kind(&result);
        assert!(
            kind.is_some_and(|k| kinds.contains(&k)),
            "{mode}: expected one of {kinds:?}, got {result:?}"
        );
        let text = result.unwrap_err().to_string();
        assert!(
            text.contains(&format!("\"{plugin}\"")) && text.contains("`handle`"),
            "{mode}: {text}"
        );
        // The broken instance is gone; a fresh one answers.
        let echo = rt
            .call(
                plugin,
                event("t", "echo", json!({"after": mode})),
                delivery(),
            )
            .await
            .unwrap();
        assert_eq!(echo[0].detail["after"], json!(mode));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(bystander.await.unwrap() > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failure_messages_say_what_happened() {
    let h = Harness::new(&[("testkit", Some(TESTKIT_LIMITS))], false).await;
    let panic = h
        .call("testkit", "panic", json!({}))
        .await
        .unwrap_err()
        .to_string();
    assert!(panic.contains("testkit was asked to panic"), "{panic}");
    let oom = h
        .call("testkit", "memory", json!({}))
        .await
        .unwrap_err()
        .to_string();
    assert!(oom.contains("the limit is 32 MiB"), "{oom}");
    let stack = h
        .call("testkit", "recursion", json!({}))
        .await
        .unwrap_err()
        .to_string();
    // The wasm backtrace names the guest's frames.
    assert!(stack.contains("recurse"), "{stack}");
    let many = h
        .call("testkit", "huge-output", json!({"count": 1001}))
        .await
        .unwrap_err()
        .to_string();
    assert!(many.contains("1001 events; the limit is 1000"), "{many}");
    // Just under the limits passes.
    assert_eq!(
        h.call("testkit", "huge-output", json!({"count": 1000}))
            .await
            .unwrap()
            .len(),
        1000
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandbox_denies_files_env_sockets_and_unlisted_http() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let h = Harness::new(&[("testkit", Some(TESTKIT_LIMITS))], false).await;

    let file = h.call("testkit", "open-file", json!({})).await.unwrap_err();
    assert!(
        matches!(&file, CallError::Reject { message, .. } if message.starts_with("open /etc/passwd")),
        "{file}"
    );

    let env = h.call("testkit", "env", json!({})).await.unwrap();
    assert_eq!(env[0].detail, json!({"vars": 0, "args": []}));

    let socket = h
        .call("testkit", "socket", json!({"addr": addr}))
        .await
        .unwrap_err();
    assert!(
        matches!(&socket, CallError::Reject { message, .. } if message.starts_with("connect ")),
        "{socket}"
    );

    let url = format!("http://{addr}/x");
    let http = h
        .call("testkit", "http", json!({"url": url}))
        .await
        .unwrap_err();
    assert!(
        matches!(&http, CallError::Reject { message, .. } if message.starts_with("denied:") && message.contains(&addr)),
        "{http}"
    );
    // Nothing ever reached the listener.
    listener.set_nonblocking(true).unwrap();
    assert!(listener.accept().is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fresh_and_reuse_policies_differ() {
    let fresh = "[instances]\npolicy = \"fresh\"\n";
    let reuse = "[instances]\npolicy = \"reuse\"\nrecycle_after_calls = 3\n";
    let dir = tempfile::tempdir().unwrap();
    install(dir.path(), "fresh", "testkit", Some(fresh));
    install(dir.path(), "reuse", "testkit", Some(reuse));
    let data = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path(), &data.path().join("kv.redb"), false);
    rt.start().await.unwrap();
    assert_eq!(
        rt.manifest("fresh").unwrap().instances.policy,
        Policy::Fresh
    );
    for _ in 0..7 {
        for name in ["fresh", "reuse"] {
            rt.call(name, event("t", "echo", json!({})), delivery())
                .await
                .unwrap();
        }
    }
    // fresh: one instance per call, none kept; reuse: one per 3 calls, one kept warm.
    assert_eq!(rt.instances_created("fresh"), Some(7));
    assert_eq!(rt.instances_created("reuse"), Some(3));
    let status = rt.status();
    let by_name = |n: &str| status.iter().find(|s| s.name == n).unwrap().clone();
    assert_eq!(by_name("fresh").instances, 0);
    assert_eq!(by_name("reuse").instances, 1);
    assert_eq!(by_name("reuse").policy, Some("reuse"));
    assert_eq!(by_name("fresh").policy, Some("fresh"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_are_broadcast() {
    let h = Harness::new(&[], false).await;
    let mut changes = h.rt.subscribe();
    install(h.plugins.path(), "echo", "echo-v1", None);
    h.rt.rescan().await.unwrap();
    match changes.recv().await.unwrap() {
        RegistryChange::Loaded { name, hash } => {
            assert_eq!(name, "echo");
            assert_eq!(hash.len(), 64);
        }
        other => panic!("expected Loaded, got {other:?}"),
    }
    std::fs::write(h.path("echo.wasm"), b"garbage").unwrap();
    h.rt.rescan().await.unwrap();
    assert!(
        matches!(changes.recv().await.unwrap(), RegistryChange::Failed { name, .. } if name == "echo")
    );
    std::fs::remove_file(h.path("echo.wasm")).unwrap();
    h.rt.rescan().await.unwrap();
    assert_eq!(
        changes.recv().await.unwrap(),
        RegistryChange::Unloaded {
            name: "echo".into()
        }
    );
}
