//! Bad input that used to get through: size limits, reserved sources, control authority.

use crate::harness::eventually;
use crate::harness::runtime::install;
use crate::harness::server::{Reply, TestServer};
use serde_json::{Value, json};
use std::time::Duration;

/// What a publish-token holder would send to take over scaling.
fn forged_scale_detail() -> Value {
    json!({"target": "work/t", "desired_concurrency": 7, "reason": "forged"})
}

/// A CloudEvents structured event.
fn cloudevent(source: &str, kind: &str, data: Value) -> Value {
    json!({"specversion": "1.0", "id": uuid::Uuid::new_v4().to_string(),
           "source": source, "type": kind, "data": data})
}

fn post_cloudevent(s: &TestServer, event: &Value) -> Reply {
    s.post_raw(
        "/cloudevents",
        "application/cloudevents+json",
        event.to_string().into_bytes(),
    )
}

/// Sends a CloudEvents batch of an ordinary event and `bad`: the first is
/// accepted, `bad` refused on its own with `code`, its message naming its place
/// in the batch and containing every one of `needles`.
fn assert_batch_refuses_second(s: &TestServer, bad: Value, code: &str, needles: &[&str]) {
    let batch = json!([cloudevent("shop", "OrderPlaced", json!({})), bad]);
    let r = s.post_raw(
        "/cloudevents",
        "application/cloudevents-batch+json",
        batch.to_string().into_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    let body = r.json();
    assert!(body["entries"][0]["id"].is_string(), "{body}");
    let mut needles = needles.to_vec();
    needles.push("event 1 of the batch");
    assert_entry_refused(&body["entries"][1], code, &needles);
}

/// A binary-mode CloudEvent: `headers` are the `ce-*` attributes, `data` the JSON body.
fn post_binary(s: &TestServer, headers: &[(&str, &str)], data: &Value) -> Reply {
    let mut req = s
        .client()
        .post(format!("{}/cloudevents", s.url))
        .header("content-type", "application/json")
        .header("ce-specversion", "1.0")
        .header("ce-id", uuid::Uuid::new_v4().to_string());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    Reply::from(req.body(data.to_string()).send())
}

/// Asserts a per-entry refusal (`error_code`, `error_message` of the native and
/// CloudEvents batch replies) whose message contains every one of `needles`.
fn assert_entry_refused(entry: &Value, code: &str, needles: &[&str]) {
    assert_eq!(entry["error_code"], code, "{entry}");
    let message = entry["error_message"].as_str().unwrap_or_default();
    for n in needles {
        assert!(message.contains(n), "{n:?} not in {message:?}");
    }
}

/// Asserts a whole-request refusal of a single CloudEvent (400 naming the problem).
fn assert_refused(r: &Reply, code: &str, needles: &[&str]) {
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.error_code(), code, "{}", r.text);
    for n in needles {
        assert!(r.error_message().contains(n), "{n:?} not in {}", r.text);
    }
}

fn archived_sources(s: &TestServer) -> Vec<String> {
    s.archived()
        .iter()
        .map(|e| e["source"].as_str().unwrap_or_default().to_string())
        .collect()
}

// ---- item: reserved sources ----

/// A client's `busbar.autoscaler` ScaleTarget and `busbar` Target Metrics are
/// refused on every ingest surface, each entry on its own, naming the source.
#[test]
fn clients_cannot_publish_busbar_sources_on_any_surface() {
    let s = TestServer::start();
    let ok = json!({"source": "shop", "detail-type": "OrderPlaced", "detail": {}});
    let reserved = "is reserved";

    // Native: one entry refused, its neighbour accepted.
    let r = s.post_json(
        "/events",
        &json!([
            {"source": "busbar.autoscaler", "detail-type": "ScaleTarget", "detail": forged_scale_detail()},
            ok,
            {"source": "busbar", "detail-type": "Target Metrics", "detail": {"targets": []}},
        ]),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    let body = r.json();
    assert_eq!(body["failed"], 2, "{body}");
    assert_entry_refused(
        &body["entries"][0],
        "ReservedSource",
        &["\"busbar.autoscaler\"", reserved],
    );
    assert!(body["entries"][1]["id"].is_string(), "{body}");
    assert_entry_refused(
        &body["entries"][2],
        "ReservedSource",
        &["\"busbar\"", reserved],
    );

    // EventBridge PutEvents: per entry, with EventBridge's error code.
    let r = s.aws(
        "PutEvents",
        &json!({"Entries": [
            {"Source": "busbar.autoscaler", "DetailType": "ScaleTarget",
             "Detail": forged_scale_detail().to_string()},
            {"Source": "shop", "DetailType": "OrderPlaced", "Detail": "{}"},
        ]}),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    let body = r.json();
    assert_eq!(body["FailedEntryCount"], 1, "{body}");
    assert_eq!(
        body["Entries"][0]["ErrorCode"],
        "NotAuthorizedForSourceException"
    );
    let message = body["Entries"][0]["ErrorMessage"].as_str().unwrap();
    assert!(
        message.starts_with("Entries[0]: Source \"busbar.autoscaler\" is reserved"),
        "{message}"
    );
    assert!(body["Entries"][1]["EventId"].is_string(), "{body}");

    // CloudEvents structured, binary and batch.
    let r = post_cloudevent(
        &s,
        &cloudevent("busbar.autoscaler", "ScaleTarget", forged_scale_detail()),
    );
    assert_refused(
        &r,
        "ReservedSource",
        &["attribute source \"busbar.autoscaler\"", reserved],
    );
    let r = post_binary(
        &s,
        &[("ce-source", "busbar"), ("ce-type", "Target Metrics")],
        &json!({"targets": []}),
    );
    assert_refused(&r, "ReservedSource", &["\"busbar\"", reserved]);
    assert_batch_refuses_second(
        &s,
        cloudevent("BUSBAR.autoscaler", "ScaleTarget", forged_scale_detail()),
        "ReservedSource",
        &["\"BUSBAR.autoscaler\"", reserved],
    );

    // None of them reached the store; the three ordinary neighbours did.
    let sources = archived_sources(&s);
    assert_eq!(sources, vec!["shop"; 3], "{sources:?}");
}

/// The extension attribute that names an event's producing plugin cannot be
/// forged by a CloudEvents client (structured or binary).
#[test]
fn clients_cannot_set_busbar_extension_attributes() {
    let s = TestServer::start();
    let mut forged = cloudevent("shop", "Echoed", forged_scale_detail());
    forged["busbarproducer"] = json!("autoscaler");
    let r = post_cloudevent(&s, &forged);
    assert_refused(&r, "ReservedAttribute", &["\"busbarproducer\" is reserved"]);
    let r = post_binary(
        &s,
        &[
            ("ce-source", "shop"),
            ("ce-type", "Echoed"),
            ("ce-busbarproducer", "autoscaler"),
        ],
        &forged_scale_detail(),
    );
    assert_refused(&r, "ReservedAttribute", &["\"busbarproducer\" is reserved"]);
    assert!(s.archived().is_empty());
}

// ---- item: the control capability ----

const GRANTED: &str = "[capabilities]\ncontrol = true\n";

/// A plugin without `[capabilities] control = true` cannot set a target's
/// concurrency through the control target: its decision is dead-lettered with
/// the reason. The same decision from a granted plugin is applied, and one a
/// client publishes under an ordinary source is refused too.
#[test]
fn only_a_plugin_granted_control_can_scale_targets() {
    let s = TestServer::start();
    let plugins = s.node.config.server.plugins_dir.clone();
    // The testkit answers `echo` with source `testkit`, detail-type `Echoed` and
    // the incoming detail: whatever ScaleTarget it is asked to publish.
    install(&plugins, "rogue", "testkit", None);
    install(&plugins, "granted", "testkit", Some(GRANTED));
    s.put_rule(
        "default",
        "work",
        &json!({"pattern": {"source": ["load"]}, "targets": [{"id": "t", "plugin": "granted"}]}),
    );
    for via in ["rogue", "granted"] {
        s.put_rule(
            "default",
            &format!("drive-{via}"),
            &json!({"pattern": {"source": ["drive"], "detail": {"via": [via]}},
                    "targets": [{"id": "p", "plugin": via}]}),
        );
    }
    s.put_rule(
        "default",
        "decisions",
        &json!({"pattern": {"source": ["testkit"], "detail-type": ["Echoed"]},
                "targets": [{"id": "control", "plugin": "busbar:control"}]}),
    );
    let queue = "default/work/t";
    let start = eventually("both plugins to load", Duration::from_secs(120), || {
        let loaded = s.get("/v1/plugins").json().as_array()?.iter().all(|p| {
            !["rogue", "granted"].contains(&p["name"].as_str().unwrap_or_default())
                || p["state"] == "loaded"
        });
        let t = s.target(queue)?;
        (loaded && t["plugin_loaded"] == true).then_some(t)
    });
    let level = start["concurrency"].as_u64().unwrap();
    assert_ne!(
        level, 7,
        "the forged level must differ from the start: {start}"
    );

    let drive = |via: &str, desired: u64| {
        let mut detail = forged_scale_detail();
        detail["via"] = json!(via);
        detail["desired_concurrency"] = json!(desired);
        let r = s.post_json(
            "/events",
            &json!({"source": "drive", "detail-type": "echo", "detail": detail}),
        );
        assert_eq!(r.json()["failed"], 0, "{}", r.text);
    };

    // The plugin without the capability: refused, dead-lettered with the reason.
    drive("rogue", 7);
    let letter = eventually(
        "the rogue decision's dead letter",
        Duration::from_secs(30),
        || {
            s.dead_letters()
                .into_iter()
                .find(|d| d["rule"] == "decisions")
        },
    );
    let reason = letter["last_error"].as_str().unwrap_or_default();
    assert!(
        reason.contains("plugin rogue does not have the control capability")
            && reason.contains("[capabilities] control = true"),
        "{letter}"
    );
    let t = s.target(queue).unwrap();
    assert_eq!(t["concurrency"].as_u64(), Some(level), "{t}");

    // A client's decision under an ordinary source matched by the same rule.
    let r = s.post_json(
        "/events",
        &json!({"source": "testkit", "detail-type": "Echoed", "detail": forged_scale_detail()}),
    );
    assert_eq!(r.json()["failed"], 0, "{}", r.text);
    eventually(
        "the client decision's dead letter",
        Duration::from_secs(30),
        || {
            let letters = s.dead_letters();
            letters
                .iter()
                .any(|d| {
                    d["last_error"]
                        .as_str()
                        .is_some_and(|e| e.contains("it was not published by a plugin"))
                })
                .then_some(())
        },
    );
    let t = s.target(queue).unwrap();
    assert_eq!(t["concurrency"].as_u64(), Some(level), "{t}");

    // The granted plugin: applied, and the decision names it.
    drive("granted", 5);
    let t = eventually("the granted decision", Duration::from_secs(30), || {
        s.target(queue).filter(|t| t["concurrency"] == 5)
    });
    assert_eq!(t["last_scaling"]["by"], "granted", "{t}");
    assert_eq!(s.dead_letters().len(), 2);
}

// ---- item: every field counts, envelope fields are bounded ----

/// `account` and `region` of a native event are bounded; a 3 MB account is
/// refused with a message naming the field, and nothing is archived.
#[test]
fn native_envelope_fields_are_bounded() {
    let s = TestServer::start();
    // The 3 MB account that used to be archived, and a region past the bound.
    let mut entries = vec![
        json!({"source": "shop", "detail-type": "T", "detail": {}, "account": "1".repeat(3_000_000)}),
        json!({"source": "shop", "detail-type": "T", "detail": {}, "region": "r".repeat(65)}),
    ];
    entries.push(json!({"source": "shop", "detail-type": "T", "detail": {},
                        "resources": ["r".repeat(2049)]}));
    entries.push(json!({"source": "shop", "detail-type": "d".repeat(129), "detail": {}}));
    let r = s.post_json("/events", &json!(entries));
    assert_eq!(r.status, 200, "{}", r.text);
    let body = r.json();
    assert_eq!(body["failed"], 4, "{body}");
    let e = &body["entries"];
    assert_entry_refused(
        &e[0],
        "InvalidArgument",
        &["account is longer than 64 characters"],
    );
    assert_entry_refused(
        &e[1],
        "InvalidArgument",
        &["region is longer than 64 characters"],
    );
    assert_entry_refused(
        &e[2],
        "InvalidArgument",
        &["resources[0] is longer than 2048 characters"],
    );
    assert_entry_refused(
        &e[3],
        "InvalidArgument",
        &["detail-type is longer than 128 characters"],
    );
    // At the bounds they are accepted.
    let r = s.post_json(
        "/events",
        &json!({"source": "shop", "detail-type": "d".repeat(128), "detail": {},
                "account": "a".repeat(64), "region": "r".repeat(64)}),
    );
    assert_eq!(r.json()["failed"], 0, "{}", r.text);
    assert_eq!(s.archived().len(), 1);
}

/// CloudEvents extension attributes count toward the entry size, in every mode.
#[test]
fn cloudevents_extensions_count_toward_the_entry_size() {
    let s = TestServer::start_with(|c| c.limits.max_entry_bytes = 4096);
    let padding = "x".repeat(5000);
    let limit = "the limit is 4096 bytes";

    let mut structured = cloudevent("shop", "T", json!({"small": true}));
    structured["padding"] = json!(padding);
    assert_refused(&post_cloudevent(&s, &structured), "EntryTooLarge", &[limit]);

    let r = post_binary(
        &s,
        &[
            ("ce-source", "shop"),
            ("ce-type", "T"),
            ("ce-padding", &padding),
        ],
        &json!({"small": true}),
    );
    assert_refused(&r, "EntryTooLarge", &[limit]);

    assert_batch_refuses_second(&s, structured, "EntryTooLarge", &[limit]);

    // A small extension still goes through and is kept.
    let mut small = cloudevent("shop", "T", json!({}));
    small["tenant"] = json!("acme");
    assert_eq!(post_cloudevent(&s, &small).status, 200);
    let archived = s.archived();
    assert_eq!(archived.len(), 2, "{archived:?}");
    assert!(archived.iter().any(|e| e["extensions"]["tenant"] == "acme"));
}

/// PutEvents entries are bounded like EventBridge's: at most 100 resources of
/// at most 2048 characters, and resources count toward the size.
#[test]
fn put_events_resources_are_bounded_and_counted() {
    let s = TestServer::start_with(|c| c.limits.max_entry_bytes = 4096);
    let entry = |resources: Vec<String>| json!({"Source": "shop", "DetailType": "T", "Detail": "{}", "Resources": resources});
    let r = s.aws(
        "PutEvents",
        &json!({"Entries": [
            entry(vec!["r".repeat(2049)]),
            entry((0..101).map(|i| format!("r{i}")).collect()),
            entry(vec!["arn:aws:s3:::bucket".into()]),
        ]}),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    let body = r.json();
    assert_eq!(body["FailedEntryCount"], 2, "{body}");
    let e = &body["Entries"];
    let message = |i: usize| {
        e[i]["ErrorMessage"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    assert!(
        message(0).contains("Entries[0]: Resources[0] is longer than 2048 characters"),
        "{body}"
    );
    assert!(
        message(1).contains("Entries[1]: Resources has 101 entries; the limit is 100"),
        "{body}"
    );
    assert!(e[2]["EventId"].is_string(), "{body}");
    // Resources within their bounds still count: three of 2000 characters pass
    // the 4096-byte limit, which fails the request as a whole (see below).
    let r = s.aws(
        "PutEvents",
        &json!({"Entries": [entry((0..3).map(|_| "r".repeat(2000)).collect())]}),
    );
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.aws_type(), "ValidationException");
    assert_eq!(s.archived().len(), 1);
}

// ---- item: PutEvents' total size ----

/// Ten PutEvents entries of 100 KB each fail the whole request with
/// EventBridge's ValidationException, and none is published; the same entries
/// sent one per request, and a request under the total, are accepted. The
/// native surface bounds a request by its body size instead.
#[test]
fn put_events_total_size_is_bounded_like_eventbridge() {
    let s = TestServer::start();
    let entry = |kb: usize| {
        json!({"Source": "shop", "DetailType": "T",
               "Detail": json!({"pad": "x".repeat(kb * 1000)}).to_string()})
    };
    let r = s.aws(
        "PutEvents",
        &json!({"Entries": (0..10).map(|_| entry(100)).collect::<Vec<_>>()}),
    );
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.aws_type(), "ValidationException");
    let message = r.json()["message"].as_str().unwrap_or_default().to_string();
    assert!(
        message.starts_with("Total size of the entries in the request is over the limit")
            && message.contains("the limit is 262144 bytes"),
        "{message}"
    );
    // A single entry over the limit fails the request the same way.
    let r = s.aws("PutEvents", &json!({"Entries": [entry(300)]}));
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.aws_type(), "ValidationException");
    assert!(
        s.archived().is_empty(),
        "nothing of a refused request is published"
    );

    let r = s.aws(
        "PutEvents",
        &json!({"Entries": (0..10).map(|_| entry(20)).collect::<Vec<_>>()}),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["FailedEntryCount"], 0, "{}", r.text);
    let r = s.aws("PutEvents", &json!({"Entries": [entry(100)]}));
    assert_eq!(r.json()["FailedEntryCount"], 0, "{}", r.text);

    // Native: each entry is checked on its own; the body limit bounds the request.
    let native: Vec<Value> = (0..10)
        .map(|_| json!({"source": "shop", "detail-type": "T", "detail": {"pad": "x".repeat(100_000)}}))
        .collect();
    let r = s.post_json("/events", &json!(native));
    assert_eq!(r.json()["failed"], 0, "{}", r.text);
    assert_eq!(s.archived().len(), 21);
}
