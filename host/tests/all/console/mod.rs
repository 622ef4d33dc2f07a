//! The web console: its own HTTP routes (pages, `/v1/history`, plugin
//! upload), then the pages themselves in a real headless Chromium over
//! WebDriver ([`browser`]), against a real node with real plugins.

mod browser;

use crate::harness::server::TestServer;
use crate::harness::{eventually, plugin_cache, wasm};
use browser::Browser;
use serde_json::{Value, json};
use std::time::Duration;

const ORDERS: &str = r#"{"source": ["order-service"], "detail-type": ["OrderCreated"]}"#;
const CHECKOUT: &str = r#"{"source": ["checkout-client"]}"#;

/// A node with payment-check on the order rule and the testkit fixture as
/// plugin `checkout`, which rejects `fail-reject` events (dead letters).
fn node() -> TestServer {
    let s = TestServer::start_with(|c| c.server.cache_dir = Some(plugin_cache()));
    let dir = s.plugins();
    std::fs::copy(wasm("payment-check"), dir.join("payment-check.wasm")).unwrap();
    std::fs::copy(wasm("testkit"), dir.join("checkout.wasm")).unwrap();
    s.put_rule(
        "default",
        "orders",
        &json!({"pattern": ORDERS, "targets": [{"id": "pay", "plugin": "payment-check"}]}),
    );
    s.put_rule(
        "default",
        "checkout",
        &json!({"pattern": CHECKOUT, "targets": [{"id": "run", "plugin": "checkout"}]}),
    );
    for plugin in ["payment-check", "checkout"] {
        eventually(
            &format!("{plugin} to load"),
            Duration::from_secs(60),
            || s.node.runtime.is_loaded(plugin).then_some(()),
        );
    }
    s
}

#[test]
fn the_root_redirects_to_the_console_and_its_pages_are_embedded() {
    let s = TestServer::start();
    let no_redirects = reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = no_redirects.get(format!("{}/", s.url)).send().unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/console");

    let page = s.get("/console");
    assert_eq!(page.status, 200);
    assert!(
        page.text.contains("/console/assets/app.js"),
        "{}",
        page.text
    );
    let csp = page.headers["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("default-src 'self'"), "{csp}");
    let js = s.get("/console/assets/app.js");
    assert_eq!(js.status, 200);
    assert!(
        js.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/javascript")
    );
    let chart = s.get("/console/assets/vendor/uPlot.iife.min.js");
    assert!(
        chart.text.contains("uPlot"),
        "the charting library is embedded"
    );
    let missing = s.get("/console/assets/nope.js");
    assert_eq!(missing.status, 404);
    assert!(
        missing.error_message().contains("nope.js"),
        "{}",
        missing.text
    );
}

#[test]
fn history_keeps_samples_of_what_the_node_counts() {
    let s = TestServer::start();
    let first = eventually("a first sample", Duration::from_secs(10), || {
        let r = s.get("/v1/history").json();
        r["samples"].as_array().and_then(|a| a.last().cloned())
    });
    let r = s.post_json(
        "/events",
        &json!([{"source": "a", "detail-type": "t", "detail": {}}, {"source": "a", "detail-type": "t", "detail": {}}]),
    );
    assert_eq!(r.json()["failed"], 0);
    let t = first["t"].as_i64().unwrap();
    // Only samples after `after` come back, and they count the two events.
    let later = eventually(
        "a sample counting the events",
        Duration::from_secs(10),
        || {
            let r = s.get(&format!("/v1/history?after={t}")).json();
            let samples = r["samples"].as_array().cloned().unwrap_or_default();
            assert!(samples.iter().all(|x| x["t"].as_i64().unwrap() > t));
            samples.into_iter().find(|x| {
                x["events_total"].as_u64().unwrap() >= first["events_total"].as_u64().unwrap() + 2
            })
        },
    );
    assert!(later["events_per_sec"].as_f64().unwrap() > 0.0, "{later}");
    assert_eq!(s.get("/v1/history?after=soon").status, 400);
}

#[test]
fn history_and_upload_need_the_admin_token() {
    let s = TestServer::start_with(|c| c.server.admin_token = Some("adm".into()));
    assert_eq!(s.get("/v1/history").status, 401);
    let r = s
        .client()
        .put(format!("{}/v1/plugins/x", s.url))
        .body(vec![0u8; 8])
        .send()
        .unwrap();
    assert_eq!(r.status(), 401);
    // The pages themselves hold no data and open without it.
    assert_eq!(s.get("/console").status, 200);
}

#[test]
fn an_uploaded_plugin_is_loaded_with_the_directory_checks() {
    let s = TestServer::start_with(|c| c.server.cache_dir = Some(plugin_cache()));
    let put = |name: &str, body: Vec<u8>| {
        crate::harness::server::Reply::from(
            s.client()
                .put(format!("{}/v1/plugins/{name}", s.url))
                .body(body)
                .send(),
        )
    };
    let bad_name = put("../evil", b"\0asm".to_vec());
    assert!(
        bad_name.status == 400 || bad_name.status == 404,
        "{}",
        bad_name.text
    );
    let r = put("bad.name", b"\0asm".to_vec());
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(r.error_message().contains("bad.name"), "{}", r.text);

    let junk = put("junk", b"not a component".to_vec());
    assert_eq!(junk.status, 422, "{}", junk.text);
    assert!(junk.error_message().contains("junk.wasm"), "{}", junk.text);
    assert!(!s.node.runtime.is_loaded("junk"));

    let good = put("kit", std::fs::read(wasm("testkit")).unwrap());
    assert_eq!(good.status, 200, "{}", good.text);
    assert_eq!(good.json()["state"], "loaded");
    assert!(s.plugins().join("kit.wasm").exists());
    // A bad file never replaces the version that serves.
    let worse = put("kit", b"\0asm broken".to_vec());
    assert_eq!(worse.status, 422, "{}", worse.text);
    assert!(s.node.runtime.is_loaded("kit"));
    let listed = s.get("/v1/plugins").json();
    let kit = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "kit")
        .unwrap()
        .clone();
    assert_eq!(kit["version"], good.json()["version"], "{kit}");
    assert!(
        !std::fs::read_dir(s.plugins())
            .unwrap()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().ends_with(".upload")),
        "no upload file is left behind"
    );
}

/// Every page in Chromium: the order flow from the Send form to the tail and
/// the archive, a rule with an invalid pattern, a dead letter fixed by an
/// upload and redriven, the overview's plots. A screenshot of each page is
/// saved (see [`Browser`]) to be looked at.
#[test]
fn the_console_in_a_real_browser() {
    let s = node();
    // Multi-threaded so the test's blocking HTTP calls to the node can run in
    // place (see `sync`) between the browser's steps.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(scenarios(&s));
}

/// Runs the harness's blocking calls (reqwest's blocking client, `eventually`)
/// from the async scenario.
fn sync<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

async fn scenarios(s: &TestServer) {
    let b = Browser::start(1280, 800).await;
    let console = format!("{}/console", s.url);

    // Opening the node's address lands on the overview.
    b.goto(&format!("{}/", s.url)).await;
    b.until(
        "the overview",
        "return document.querySelector('#view[data-page=overview] #overview-cards .card')",
    )
    .await;

    // The live tail in one window, the Send form in another.
    b.goto(&format!("{console}#/tail")).await;
    b.until(
        "the tail to connect",
        "return document.querySelector('#view').dataset.live === 'true'",
    )
    .await;
    let tail_window = b.client.window().await.unwrap();
    let send_window = b.client.new_window(true).await.unwrap();
    b.client.switch_to_window(send_window.handle).await.unwrap();
    b.goto(&format!("{console}#/send")).await;
    b.click_button("Order of 600").await;
    b.screenshot("send").await;
    b.click("#send-submit").await;
    let id = b
        .until(
            "the accepted id",
            "const e = document.querySelector('#sent-id'); return e && e.textContent",
        )
        .await;
    let id = id.as_str().unwrap().to_string();
    assert!(
        sync(|| s.archived_ids()).contains(&id),
        "the form's event is archived"
    );

    b.client.switch_to_window(tail_window).await.unwrap();
    let rows = b
        .until(
            "the order and payment-check's answer in the tail",
            "const t = document.querySelector('#tail-list').innerText; \
             return t.includes('OrderCreated') && t.includes('PaymentFailed') && t",
        )
        .await;
    assert!(
        rows.as_str().unwrap().contains("orders"),
        "the order names its rule: {rows}"
    );
    // Click-through: the order's row opens the event with its delivery.
    b.js(
        "[...document.querySelectorAll('#tail-list tr')].find(r => r.innerText.includes('OrderCreated')).click()",
        vec![],
    )
    .await;
    let drawer = b
        .until(
            "the event's details",
            "const d = document.querySelector('#drawer'); return !d.hidden && d.innerText",
        )
        .await;
    assert!(drawer.as_str().unwrap().contains(&id), "{drawer}");
    b.screenshot("tail").await;

    // The archive, searched by pattern, finds payment-check's answer.
    b.goto(&format!("{console}#/archive")).await;
    b.fill("#archive-pattern", r#"{"source": ["payment-service"]}"#)
        .await;
    b.click("#archive-search").await;
    let found = b
        .until("the payment event in the archive", "const t = document.querySelector('#archive-results').innerText; return t.includes('PaymentFailed') && t")
        .await;
    assert!(
        !found.as_str().unwrap().contains("OrderCreated"),
        "the pattern filtered: {found}"
    );
    b.js(
        "document.querySelector('#archive-results tbody tr').click()",
        vec![],
    )
    .await;
    b.until("the archived event opened", "const d = document.querySelector('#drawer'); return !d.hidden && d.innerText.includes('\"amount\": 600')").await;
    b.screenshot("archive").await;

    // A rule with an invalid pattern: the node's error, in place, as you type and on save.
    b.goto(&format!("{console}#/rules")).await;
    b.until(
        "the rules",
        "return document.querySelector('#rules-list').innerText.includes('orders')",
    )
    .await;
    b.click("#rule-new").await;
    b.fill("#rule-name", "big-orders").await;
    b.fill(
        "#rule-pattern",
        r#"{"detail": {"amount": [{"numeric": [">", "lots"]}]}}"#,
    )
    .await;
    let msg = b
        .until("the pattern error under the pattern", "const m = document.querySelector('#rule-pattern-msg'); return m.className === 'field-error' && m.textContent")
        .await;
    let msg = msg.as_str().unwrap();
    assert!(msg.contains("Event pattern is not valid"), "{msg}");
    assert!(
        msg.contains("numeric"),
        "the error names the operator: {msg}"
    );
    b.click("#rule-save").await;
    b.until(
        "the save refused in place",
        "return document.querySelector('#rule-pattern').classList.contains('invalid')",
    )
    .await;
    assert!(
        s.node.rules.get("default", "big-orders").is_none(),
        "an invalid rule is not saved"
    );
    b.screenshot("rules").await;
    b.fill(
        "#rule-pattern",
        r#"{"detail": {"amount": [{"numeric": [">", 500]}]}}"#,
    )
    .await;
    b.until(
        "the pattern accepted",
        "return document.querySelector('#rule-pattern-msg').className === 'field-ok'",
    )
    .await;
    b.click("#test-run").await;
    b.until(
        "the test verdict",
        "return document.querySelector('#test-result').innerText.includes('does not match')",
    )
    .await;
    b.click("#rule-save").await;
    b.until(
        "the new rule listed",
        "return document.querySelector('#rules-list').innerText.includes('big-orders')",
    )
    .await;
    assert!(s.node.rules.get("default", "big-orders").is_some());

    // A dead letter: the checkout plugin (testkit) rejects the event.
    sync(|| {
        let r = s.post_json("/events", &json!({"source": "checkout-client", "detail-type": "fail-reject", "detail": {"cart": 7}}));
        assert_eq!(r.json()["failed"], 0, "{}", r.text);
        eventually("the dead letter", Duration::from_secs(30), || {
            (s.dead_letters().len() == 1).then_some(())
        });
    });
    b.goto(&format!("{console}#/dlq")).await;
    b.until(
        "the dead letter listed",
        "return document.querySelector('#dlq-list').innerText.includes('asked to reject')",
    )
    .await;
    b.js(
        "document.querySelector('#dlq-list tbody tr').click()",
        vec![],
    )
    .await;
    b.until("the dead letter inspected", "const d = document.querySelector('#drawer'); return !d.hidden && d.innerText.includes('\"cart\": 7')").await;
    b.screenshot("dead-letters").await;

    // The fix: a plugin that accepts the event, uploaded from the Plugins page.
    b.goto(&format!("{console}#/plugins")).await;
    b.until(
        "the plugins",
        "return document.querySelector('#plugins-list').innerText.includes('payment-check')",
    )
    .await;
    let upload = b.find("#upload-file").await;
    // chromedriver takes only a canonical path for a file input.
    let fixed = wasm("echo-v1").canonicalize().unwrap();
    upload.send_keys(fixed.to_str().unwrap()).await.unwrap();
    b.fill("#upload-name", "checkout").await;
    b.click("#upload-submit").await;
    b.until(
        "the upload to serve",
        "return document.querySelector('#upload-status').className === 'field-ok'",
    )
    .await;
    b.screenshot("plugins").await;

    // Redrive from the console: the delivery goes through this time.
    b.goto(&format!("{console}#/dlq")).await;
    b.until(
        "the dead letter listed",
        "return document.querySelector('#dlq-list tbody input[type=checkbox]')",
    )
    .await;
    b.js(
        "document.querySelector('#dlq-list tbody input[type=checkbox]').click()",
        vec![],
    )
    .await;
    b.click("#dlq-redrive").await;
    b.until(
        "the list emptied",
        "return document.querySelector('#dlq-list').innerText.includes('No dead letter')",
    )
    .await;
    sync(|| {
        eventually(
            "the redriven delivery to succeed",
            Duration::from_secs(30),
            || {
                let t = s.target("default/checkout/run")?;
                (t["processed_total"].as_u64()? > t["errors_total"].as_u64()?).then_some(())
            },
        );
        assert!(s.dead_letters().is_empty());
    });

    // Targets and the overview's plots, with the points the samples made.
    b.goto(&format!("{console}#/targets")).await;
    b.until(
        "the targets",
        "return document.querySelector('#targets-list').innerText.includes('payment-check')",
    )
    .await;
    b.until("the concurrency plot", "const c = document.querySelector('#targets-charts .chart'); return c && Number(c.dataset.points) >= 2").await;
    b.screenshot("targets").await;
    b.goto(&format!("{console}#/overview")).await;
    let points = b
        .until("the overview plot's points", "const c = document.querySelector('[data-chart^=\"Events in\"]'); return c && Number(c.dataset.points) >= 3 && c.querySelector('canvas') && Number(c.dataset.points)")
        .await;
    assert!(points.as_u64().unwrap() >= 3);
    let drawn = b
        .js(
            "return document.querySelector('#overview-cards').innerText",
            vec![],
        )
        .await;
    assert!(
        drawn.as_str().unwrap().contains("Dead letters waiting"),
        "{drawn}"
    );
    b.screenshot("overview").await;

    // The keyboard: a page's number opens it.
    b.find("body").await.send_keys("3").await.unwrap();
    b.until(
        "the plugins page by key",
        "return document.querySelector('#view').dataset.page === 'plugins'",
    )
    .await;

    // A phone-width window keeps every page usable.
    b.resize(390, 844).await;
    b.goto(&format!("{console}#/overview")).await;
    b.until(
        "the narrow overview",
        "return document.querySelector('[data-chart] canvas')",
    )
    .await;
    let overflow: Value = b
        .js(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth",
            vec![],
        )
        .await;
    assert!(
        overflow.as_i64().unwrap() <= 0,
        "the page scrolls sideways at 390 px: {overflow}"
    );
    b.screenshot("overview-narrow").await;
    b.goto(&format!("{console}#/rules")).await;
    b.until(
        "the narrow rules",
        "return document.querySelector('#rules-list').innerText.includes('orders')",
    )
    .await;
    b.screenshot("rules-narrow").await;
    b.close().await;
}

/// With an admin token configured, the console asks for it once, keeps it for
/// the tab (a reload does not ask again) and sends it as a header: no cookie.
#[test]
fn the_console_asks_for_the_admin_token_once_per_tab() {
    let s = TestServer::start_with(|c| c.server.admin_token = Some("s3cret".into()));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let b = Browser::start(1280, 800).await;
        b.goto(&format!("{}/console#/rules", s.url)).await;
        b.until(
            "the token dialog",
            "return document.querySelector('#token-dialog').open",
        )
        .await;
        let why = b
            .js(
                "return document.querySelector('#token-why').textContent",
                vec![],
            )
            .await;
        assert!(
            why.as_str().unwrap().contains("admin token"),
            "the node's reason is shown: {why}"
        );
        b.screenshot("token").await;
        b.fill("#token-input", "s3cret").await;
        b.click("#token-form button[type=submit]").await;
        b.until(
            "the rules with the token",
            "return document.querySelector('#rules-list table')",
        )
        .await;
        b.client.refresh().await.unwrap();
        b.until(
            "the rules after a reload",
            "return document.querySelector('#rules-list table')",
        )
        .await;
        let asked = b
            .js(
                "return document.querySelector('#token-dialog').open",
                vec![],
            )
            .await;
        assert_eq!(asked, json!(false), "the tab kept its token");
        let cookies = b.js("return document.cookie", vec![]).await;
        assert_eq!(cookies, json!(""), "no cookie holds the token");
        b.close().await;
    });
}
