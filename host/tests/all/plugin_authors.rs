//! What a plugin author runs without a node: `busbar call` (one call through
//! the server's runtime, on the real built plugins) and `busbar wit`.

use crate::harness::{busbar_bin, plugin_cache, repo_root, stderr, stdout, wasm};
use serde_json::{Value, json};
use std::path::Path;
use std::process::{Command, Output};

fn busbar(args: &[&str]) -> Output {
    Command::new(busbar_bin())
        .args(args)
        .output()
        .expect("the busbar binary runs")
}

fn code(out: &Output) -> i32 {
    out.status.code().expect("exited normally")
}

/// `busbar call PLUGIN --event EVENT --json ...`: the exit code and the report.
fn call(plugin: &Path, event: &Value, extra: &[&str]) -> (i32, Value) {
    let cache = plugin_cache();
    let event = event.to_string();
    let mut args = vec![
        "call",
        plugin.to_str().unwrap(),
        "--event",
        &event,
        "--json",
        "--cache",
        cache.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let out = busbar(&args);
    let report: Value = serde_json::from_str(stdout(&out).trim()).unwrap_or_else(|e| {
        panic!(
            "busbar call printed no JSON report ({e}):\n{}\n{}",
            stdout(&out),
            stderr(&out)
        )
    });
    (code(&out), report)
}

fn testkit(detail_type: &str, detail: Value) -> Value {
    json!({"source": "test", "detail-type": detail_type, "detail": detail})
}

#[test]
fn call_prints_the_returned_events_time_and_memory() {
    let order = json!({"source": "order-service", "detail-type": "OrderCreated",
                       "detail": {"id": 42, "amount": 600}});
    let (code, report) = call(&wasm("payment-check"), &order, &[]);
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["outcome"], "ok");
    assert_eq!(
        report["events"],
        json!([{"source": "payment-service", "detail-type": "PaymentFailed",
                "detail": {"id": 42, "amount": 600}}])
    );
    assert!(report["elapsed_ms"].as_f64().unwrap() > 0.0, "{report}");
    // A Rust guest holds at least its stack and data in linear memory.
    assert!(
        report["memory_bytes"].as_u64().unwrap() >= 64 << 10,
        "{report}"
    );

    // The text form says the same for a person.
    let out = busbar(&[
        "call",
        wasm("payment-check").to_str().unwrap(),
        "--event",
        &order.to_string(),
        "--cache",
        plugin_cache().to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.starts_with("ok: 1 event(s) returned ("), "{text}");
    assert!(text.contains("MiB linear memory"), "{text}");
    assert!(text.contains(r#""detail-type":"PaymentFailed""#), "{text}");
}

#[test]
fn call_reports_handler_errors_traps_and_guest_output_with_their_exit_codes() {
    let testkit = wasm("testkit");
    let (code, report) = call(&testkit, &self::testkit("fail-reject", json!({})), &[]);
    assert_eq!(
        (code, &report["outcome"]),
        (1, &json!("reject")),
        "{report}"
    );
    assert_eq!(report["error"], "asked to reject");
    assert_eq!(report["retryable"], false);

    let (code, report) = call(&testkit, &self::testkit("fail-retry", json!({})), &[]);
    assert_eq!((code, &report["outcome"]), (1, &json!("retry")), "{report}");

    let (code, report) = call(&testkit, &self::testkit("panic", json!({})), &[]);
    assert_eq!((code, &report["outcome"]), (4, &json!("panic")), "{report}");
    assert!(
        report["error"]
            .as_str()
            .unwrap()
            .contains("testkit was asked to panic"),
        "{report}"
    );

    // The manifest's limits apply as on the server.
    let (code, report) = call(
        &testkit,
        &self::testkit("loop", json!({})),
        &["--manifest", &manifest_file("[limits]\ncpu_ms = 50\n")],
    );
    assert_eq!(
        (code, &report["outcome"]),
        (4, &json!("cpu_budget")),
        "{report}"
    );

    let (code, report) = call(&testkit, &self::testkit("stdout", json!({})), &[]);
    assert_eq!(code, 0, "{report}");
    assert_eq!(
        report["logs"],
        json!([
            {"level": "info", "stream": "stdout", "message": "testkit line on stdout"},
            {"level": "warn", "stream": "stderr", "message": "testkit line on stderr"},
        ])
    );
}

/// A manifest in a file of its own (kept for the life of the test run).
fn manifest_file(text: &str) -> String {
    let dir = tempfile::tempdir().unwrap().keep();
    let path = dir.join("manifest.toml");
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

#[test]
fn call_takes_config_kv_and_recorded_http_from_the_command_line() {
    let testkit = wasm("testkit");
    let (code, report) = call(
        &testkit,
        &self::testkit("config", json!({})),
        &[
            "--manifest",
            &manifest_file("[config]\ncolour = \"blue\"\nsize = \"s\"\n"),
            "--config",
            "size=xl",
        ],
    );
    assert_eq!(code, 0, "{report}");
    assert_eq!(
        report["events"][0]["detail"],
        json!({"colour": "blue", "size": "xl"})
    );

    // kv lives in --kv-dir between runs; without it every run starts empty.
    let kv = tempfile::tempdir().unwrap();
    let kv_dir = kv.path().to_str().unwrap();
    let counter = self::testkit("kv", json!({"key": "n"}));
    for expected in [1, 2] {
        let (code, report) = call(&testkit, &counter, &["--kv-dir", kv_dir]);
        assert_eq!(code, 0, "{report}");
        assert_eq!(report["events"][0]["detail"]["value"], expected);
    }
    let (_, report) = call(&testkit, &counter, &[]);
    assert_eq!(report["events"][0]["detail"]["value"], 1);

    // Recorded HTTP: the allow-list decides, nothing is sent, the request is listed.
    let get = self::testkit("http", json!({"url": "http://hooks.example.com/ping"}));
    let (code, report) = call(&testkit, &get, &["--http-record"]);
    assert_eq!(code, 1, "{report}");
    assert!(
        report["error"]
            .as_str()
            .unwrap()
            .contains("not in http.allowed_hosts"),
        "{report}"
    );
    let (code, report) = call(
        &testkit,
        &get,
        &["--http-record", "--http-allow", "hooks.example.com"],
    );
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["events"][0]["detail"]["status"], 200);
    assert_eq!(report["http"][0]["method"], "GET");
    assert_eq!(report["http"][0]["url"], "http://hooks.example.com/ping");
}

/// `busbar call PLUGIN --check`.
fn check(plugin: &Path) -> Output {
    let cache = plugin_cache();
    busbar(&[
        "call",
        plugin.to_str().unwrap(),
        "--check",
        "--cache",
        cache.to_str().unwrap(),
    ])
}

#[test]
fn call_check_loads_without_calling_and_refuses_what_the_server_refuses() {
    let out = check(&wasm("testkit"));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("busbar:plugin/kv@0.1.0"), "{text}");
    assert!(text.contains("wasi:"), "{text}");

    // A core module: exit 3, and the message says how to make a component of it.
    let dir = tempfile::tempdir().unwrap();
    let core = dir.path().join("core.wasm");
    std::fs::write(&core, b"\0asm\x01\0\0\0").unwrap();
    let out = check(&core);
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("core.wasm is a core WebAssembly module"),
        "{err}"
    );
    assert!(
        err.contains(
            "wasm-tools component new core.wasm --adapt wasi_snapshot_preview1.reactor.wasm"
        ),
        "{err}"
    );

    // Another world: every problem at once, in the contract's words.
    let out = check(&wasm("wrong-world"));
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("it imports `acme:wrong/clock@0.1.0`, which busbar does not provide"),
        "{err}"
    );
    assert!(
        err.contains("the world expects `handle: func(event: event, delivery: delivery) -> result<list<new-event>, handler-error>`"),
        "{err}"
    );
    assert!(
        err.contains(
            "the component exports `handle: func(detail: string) -> result<list<string>, string>`"
        ),
        "{err}"
    );

    // A bad event is the command line's fault, found before any compiling.
    let out = busbar(&[
        "call",
        wasm("testkit").to_str().unwrap(),
        "--event",
        "{not json",
    ]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(stderr(&out).contains("not valid JSON"), "{}", stderr(&out));

    // A plugin name that no rule could name.
    let odd = dir.path().join("fraud score.wasm");
    std::fs::copy(wasm("testkit"), &odd).unwrap();
    let out = check(&odd);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(stderr(&out).contains("file's stem"), "{}", stderr(&out));
}

#[test]
fn wit_prints_the_contract_the_host_is_built_with() {
    let out = busbar(&["wit"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let shipped = std::fs::read_to_string(repo_root().join("wit/plugin.wit")).unwrap();
    assert_eq!(stdout(&out), shipped);
}

/// The C recipe of plugins/README.md (clang, wit-bindgen's C generator, the
/// preview 1 adapter), built by `plugins/build.sh c`, runs like any plugin.
#[test]
fn a_c_plugin_built_by_the_documented_recipe_handles_events() {
    let kv = tempfile::tempdir().unwrap();
    let event = json!({"source": "shop", "detail-type": "OrderCreated", "detail": {}});
    for expected in [1, 2] {
        let (code, report) = call(
            &wasm("c-counter"),
            &event,
            &["--kv-dir", kv.path().to_str().unwrap()],
        );
        assert_eq!(code, 0, "{report}");
        assert_eq!(
            report["events"],
            json!([{"source": "c-counter", "detail-type": "Counted", "detail": {"count": expected}}])
        );
        assert_eq!(
            report["logs"],
            json!([{"level": "info", "message": format!("event {expected}")}])
        );
    }
}

/// The manifest reference in plugins/README.md against the code: every key
/// the manifest has (from the defaults, serialized) is documented with its
/// default, and the table documents no key the code does not have.
#[test]
fn the_manifest_reference_documents_every_key_and_default() {
    let guide = std::fs::read_to_string(repo_root().join("plugins/README.md")).unwrap();
    let section = guide
        .split("### The manifest")
        .nth(1)
        .and_then(|rest| rest.split("\n### ").next())
        .expect("plugins/README.md has a `### The manifest` section");
    let defaults = toml::Value::try_from(busbar::runtime::Manifest::default()).unwrap();
    let mut keys = Vec::new();
    for (table, value) in defaults.as_table().unwrap() {
        match value.as_table() {
            Some(fields) if table != "config" => {
                for (field, default) in fields {
                    keys.push((format!("{table}.{field}"), render(default)));
                }
            }
            _ => keys.push((table.clone(), render(value))),
        }
    }
    assert!(
        keys.iter().any(|(k, _)| k == "limits.memory_mib"),
        "the defaults did not serialize as tables of keys: {keys:?}"
    );
    for (key, default) in &keys {
        let row = format!("| `{key}` | `{default}` |");
        assert!(
            section.contains(&row),
            "plugins/README.md's manifest reference lacks the row {row:?} \
             (a key, or its default, changed in host/src/runtime/manifest.rs)"
        );
    }
    let documented: Vec<&str> = section
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split('`').next())
        .collect();
    for name in documented {
        assert!(
            keys.iter().any(|(k, _)| k == name),
            "plugins/README.md documents manifest key {name:?}, which the manifest does not have"
        );
    }
}

/// A default as the reference writes it: TOML's own spelling.
fn render(value: &toml::Value) -> String {
    match value {
        toml::Value::Table(t) if t.is_empty() => "{}".into(),
        toml::Value::Array(a) if a.is_empty() => "[]".into(),
        other => other.to_string(),
    }
}

/// A rule whose target names a plugin with no `.wasm` says so in
/// `/v1/targets` (`plugin_missing`) instead of only growing a backlog, and
/// turns `loaded` once the file arrives under that name.
#[test]
fn a_target_naming_a_missing_plugin_is_shown_as_plugin_missing() {
    use crate::harness::{eventually, server::TestServer};
    use std::time::Duration;
    let server = TestServer::start_toml(
        r#"
[[rules]]
name = "score"
pattern = '{"source": ["shop"]}'

[[rules.targets]]
id = "fraud"
plugin = "fraud-score"
"#,
        |_| {},
    );
    let target = server
        .target("default/score/fraud")
        .expect("the target is listed");
    assert_eq!(target["plugin_state"], "plugin_missing", "{target}");
    assert_eq!(target["plugin_loaded"], false, "{target}");

    // The file under another stem is another plugin: still missing.
    std::fs::copy(wasm("testkit"), server.plugins().join("fraud_score.wasm")).unwrap();
    let target = server.target("default/score/fraud").unwrap();
    assert_eq!(target["plugin_state"], "plugin_missing", "{target}");

    std::fs::copy(wasm("testkit"), server.plugins().join("fraud-score.wasm")).unwrap();
    eventually("fraud-score to load", Duration::from_secs(60), || {
        let t = server.target("default/score/fraud")?;
        (t["plugin_state"] == "loaded").then_some(())
    });
}
