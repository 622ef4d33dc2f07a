//! The HTTP surfaces against a real node on a free port: native ingest,
//! the EventBridge API, CloudEvents, the admin API, tokens, limits, metrics.

use crate::harness::server::{Reply, TestServer};
use crate::harness::{eventually, poll_until};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::time::Duration;

fn event(source: &str, n: u64) -> Value {
    json!({"source": source, "detail-type": "Test", "detail": {"n": n}})
}

/// Publishes one good event natively and returns its id.
fn publish_one(s: &TestServer, source: &str) -> String {
    let r = s.post_json("/events", &event(source, 1));
    assert_eq!(r.status, 200, "{}", r.text);
    r.json()["entries"][0]["id"].as_str().unwrap().to_string()
}

fn assert_archived(s: &TestServer, ids: &[&str]) {
    let archived = s.archived_ids();
    for id in ids {
        assert!(
            archived.iter().any(|a| a == id),
            "event {id} was acknowledged but is not in the archive: {archived:?}"
        );
    }
}

// ---- native ingest ----

#[test]
fn native_single_event_and_array() {
    let s = TestServer::start();
    let r = s.post_json("/events", &event("shop", 1));
    assert_eq!(r.status, 200, "{}", r.text);
    let body = r.json();
    assert_eq!(body["failed"], 0);
    let id = body["entries"][0]["id"].as_str().unwrap().to_string();
    assert!(uuid::Uuid::parse_str(&id).is_ok(), "{id}");

    let r = s.post_json(
        "/events",
        &json!([event("shop", 2), event("shop", 3), {"source": "shop", "detail-type": "T",
            "detail": {}, "id": "my-own-id", "time": "2024-03-01T10:00:00+02:00",
            "resources": ["arn:x"]}]),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    let body = r.json();
    assert_eq!(body["failed"], 0);
    let entries = body["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 3);
    assert_eq!(entries[2]["id"], "my-own-id");

    let archived = s.archived();
    assert_eq!(archived.len(), 4);
    let own = archived.iter().find(|e| e["id"] == "my-own-id").unwrap();
    assert_eq!(own["time"], "2024-03-01T08:00:00Z");
    assert_eq!(own["resources"], json!(["arn:x"]));
    assert_eq!(own["event-bus-name"], "default");
    assert_archived(&s, &[&id]);
}

#[test]
fn native_partial_failure_reports_each_entry_in_order() {
    let s = TestServer::start();
    let r = s.post_json(
        "/events",
        &json!([
            event("shop", 1),
            {"detail-type": "T", "detail": {}},
            {"source": "s", "detail-type": "T", "detail": [1, 2]},
            {"source": "s", "detail-type": "T", "detail": {}, "event-bus-name": "nosuchbus"},
            {"source": "s", "detail-type": "T", "detail": {}, "detial": {}},
            event("shop", 2),
        ]),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    let body = r.json();
    assert_eq!(body["failed"], 4);
    let e = body["entries"].as_array().unwrap();
    assert_eq!(e.len(), 6);
    assert!(e[0]["id"].is_string());
    assert_eq!(e[1]["error_code"], "InvalidArgument");
    assert_eq!(e[1]["error_message"], "source is required");
    assert!(
        e[2]["error_message"]
            .as_str()
            .unwrap()
            .contains("detail must be a JSON object"),
        "{}",
        e[2]
    );
    assert_eq!(e[3]["error_code"], "ResourceNotFoundException");
    assert!(
        e[3]["error_message"]
            .as_str()
            .unwrap()
            .contains("nosuchbus")
    );
    assert!(
        e[4]["error_message"]
            .as_str()
            .unwrap()
            .contains("\"detial\"")
    );
    assert!(e[5]["id"].is_string());
    assert_archived(
        &s,
        &[e[0]["id"].as_str().unwrap(), e[5]["id"].as_str().unwrap()],
    );
    assert_eq!(s.archived().len(), 2);
}

#[test]
fn malformed_json_is_refused_and_nothing_before_it_is_lost() {
    let s = TestServer::start();
    let before = publish_one(&s, "before");
    let r = s.post_raw("/events", "application/json", b"{\"source\": ".to_vec());
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.error_code(), "MalformedJSON");
    assert!(
        r.error_message().starts_with("malformed JSON"),
        "{}",
        r.text
    );
    assert_archived(&s, &[&before]);
}

#[test]
fn invalid_utf8_is_refused_and_nothing_before_it_is_lost() {
    let s = TestServer::start();
    let before = publish_one(&s, "before");
    let r = s.post_raw(
        "/events",
        "application/json",
        b"{\"source\":\"\xff\",\"detail-type\":\"t\",\"detail\":{}}".to_vec(),
    );
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(r.error_message().contains("not valid UTF-8"), "{}", r.text);
    assert_archived(&s, &[&before]);
}

#[test]
fn too_deep_json_is_refused_and_nothing_before_it_is_lost() {
    let s = TestServer::start();
    let before = publish_one(&s, "before");
    let deep = format!(
        "{{\"source\":\"s\",\"detail-type\":\"t\",\"detail\":{}1{}}}",
        "{\"a\":".repeat(200),
        "}".repeat(200)
    );
    let r = s.post_raw("/events", "application/json", deep.into_bytes());
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(r.error_message().contains("the limit is 64"), "{}", r.text);
    // Within the raw bound but deeper than detail may be: refused per entry.
    let mut detail = json!(1);
    for _ in 0..65 {
        detail = json!({ "a": detail });
    }
    let r = s.post_json(
        "/events",
        &json!({"source": "s", "detail-type": "t", "detail": detail}),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(
        r.json()["entries"][0]["error_message"]
            .as_str()
            .unwrap()
            .contains("nested 65 levels deep; the limit is 64"),
        "{}",
        r.text
    );
    assert_archived(&s, &[&before]);
    assert_eq!(s.archived().len(), 1);
}

#[test]
fn oversized_entry_and_oversized_body() {
    let s = TestServer::start_with(|c| {
        c.limits.max_entry_bytes = 1024;
        c.limits.max_body_bytes = 16 * 1024;
    });
    let before = publish_one(&s, "before");
    let big = "x".repeat(2000);
    let r = s.post_json(
        "/events",
        &json!([{"source": "s", "detail-type": "t", "detail": {"big": big}}, event("s", 1)]),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    let body = r.json();
    assert_eq!(body["failed"], 1);
    assert_eq!(body["entries"][0]["error_code"], "EntryTooLarge");
    assert!(
        body["entries"][0]["error_message"]
            .as_str()
            .unwrap()
            .contains("the limit is 1024 bytes")
    );
    let after = body["entries"][1]["id"].as_str().unwrap().to_string();

    let huge = "y".repeat(20 * 1024);
    let r = s.post_json(
        "/events",
        &json!({"source": "s", "detail-type": "t", "detail": {"huge": huge}}),
    );
    assert_eq!(r.status, 413, "{}", r.text);
    assert_eq!(r.error_code(), "RequestTooLarge");
    assert!(
        r.error_message()
            .contains("limits.max_body_bytes (16384 bytes)"),
        "{}",
        r.text
    );

    // The same through the EventBridge API and CloudEvents.
    let r = s.aws(
        "PutEvents",
        &json!({"Entries": [{"Source": "s", "DetailType": "t", "Detail": format!("{{\"h\":\"{huge}\"}}")}]}),
    );
    assert_eq!(r.status, 413, "{}", r.text);
    assert!(
        r.json()["message"]
            .as_str()
            .unwrap()
            .contains("max_body_bytes")
    );
    assert_archived(&s, &[&before, &after]);
}

#[test]
fn too_many_entries_names_the_limit() {
    let s = TestServer::start_with(|c| c.limits.max_entries_per_request = 5);
    let before = publish_one(&s, "before");
    let batch: Vec<Value> = (0..6).map(|i| event("s", i)).collect();
    let r = s.post_json("/events", &json!(batch));
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.error_code(), "TooManyEntries");
    assert!(
        r.error_message()
            .contains("6 entries; limits.max_entries_per_request is 5"),
        "{}",
        r.text
    );
    let r = s.post_json("/events", &json!([]));
    assert_eq!(r.status, 400, "{}", r.text);
    assert_archived(&s, &[&before]);
    assert_eq!(s.archived().len(), 1);
}

// ---- the EventBridge API ----

fn aws_entry(n: u64) -> Value {
    json!({"Source": "shop", "DetailType": "OrderPlaced", "Detail": format!("{{\"n\":{n}}}")})
}

#[test]
fn put_events_over_aws_json() {
    let s = TestServer::start();
    let r = s.aws(
        "PutEvents",
        &json!({"Entries": [
            aws_entry(1),
            {"Source": "shop", "DetailType": "T", "Detail": "not json"},
            {"Source": "shop", "DetailType": "T", "Detail": "{}", "Time": 1700000000,
             "Resources": ["arn:aws:s3:::b"], "EventBusName": "arn:aws:events:us-east-1:000000000000:event-bus/default"},
            {"Source": "shop", "Detail": "{}"},
        ]}),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        r.headers["content-type"].to_str().unwrap(),
        "application/x-amz-json-1.1"
    );
    let body = r.json();
    assert_eq!(body["FailedEntryCount"], 2);
    let e = body["Entries"].as_array().unwrap();
    assert!(e[0]["EventId"].is_string());
    assert_eq!(e[1]["ErrorCode"], "MalformedDetail");
    assert!(
        e[1]["ErrorMessage"]
            .as_str()
            .unwrap()
            .contains("Entries[1].Detail")
    );
    assert!(e[2]["EventId"].is_string());
    assert_eq!(e[3]["ErrorMessage"], "Entries[3].DetailType is required");
    let archived = s.archived();
    let timed = archived
        .iter()
        .find(|a| a["id"] == e[2]["EventId"])
        .unwrap();
    assert_eq!(timed["time"], "2023-11-14T22:13:20Z");
    assert_eq!(timed["resources"], json!(["arn:aws:s3:::b"]));
}

#[test]
fn put_events_with_eleven_entries_is_a_validation_error() {
    let s = TestServer::start();
    let before = publish_one(&s, "before");
    let entries: Vec<Value> = (0..11).map(aws_entry).collect();
    let r = s.aws("PutEvents", &json!({ "Entries": entries }));
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.aws_type(), "ValidationException");
    assert!(
        r.json()["message"]
            .as_str()
            .unwrap()
            .contains("between 1 and 10")
    );
    assert_archived(&s, &[&before]);
    assert_eq!(s.archived().len(), 1);
}

#[test]
fn unknown_operation_is_named() {
    let s = TestServer::start();
    let before = publish_one(&s, "before");
    let r = s.aws("PutPartnerEvents", &json!({}));
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.aws_type(), "UnknownOperationException");
    assert!(
        r.json()["message"]
            .as_str()
            .unwrap()
            .contains("AWSEvents.PutPartnerEvents")
    );
    let r = s.post_json("/", &json!({}));
    assert_eq!(r.aws_type(), "UnknownOperationException");
    assert!(
        r.json()["message"]
            .as_str()
            .unwrap()
            .contains("X-Amz-Target")
    );
    let r = s.post_raw("/", "application/x-amz-json-1.1", b"{".to_vec());
    assert_eq!(r.status, 400);
    assert_archived(&s, &[&before]);
}

#[test]
fn aws_malformed_body_is_a_serialization_error() {
    let s = TestServer::start();
    let r = aws_raw(&s, "ListRules", b"{\"Limit\": ");
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.aws_type(), "SerializationException");
    let r = s.aws("ListRules", &json!({"Limit": "ten"}));
    assert_eq!(r.aws_type(), "SerializationException");
    assert!(
        r.json()["message"]
            .as_str()
            .unwrap()
            .contains("Limit must be an integer")
    );
}

fn aws_raw(s: &TestServer, op: &str, body: &[u8]) -> Reply {
    let resp = s
        .client()
        .post(format!("{}/", s.url))
        .header("content-type", "application/x-amz-json-1.1")
        .header("x-amz-target", format!("AWSEvents.{op}"))
        .body(body.to_vec())
        .send();
    Reply::from(resp)
}

#[test]
fn put_rule_with_an_invalid_pattern_is_invalid_event_pattern_exception() {
    let s = TestServer::start();
    let before = publish_one(&s, "before");
    let r = s.aws(
        "PutRule",
        &json!({"Name": "bad", "EventPattern": "{\"source\": \"not-an-array\"}"}),
    );
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.aws_type(), "InvalidEventPatternException");
    assert!(
        r.json()["message"]
            .as_str()
            .unwrap()
            .starts_with("Event pattern is not valid")
    );
    let r = s.get("/v1/rules/default/bad");
    assert_eq!(r.status, 404);
    assert_archived(&s, &[&before]);
}

#[test]
fn rules_and_targets_over_aws_ops() {
    let s = TestServer::start();
    let r = s.aws(
        "CreateEventBus",
        &json!({"Name": "orders", "Description": "orders bus"}),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        r.json()["EventBusArn"],
        "arn:aws:events:local:000000000000:event-bus/orders"
    );
    let r = s.aws("CreateEventBus", &json!({"Name": "orders"}));
    assert_eq!(r.aws_type(), "ResourceAlreadyExistsException");

    for name in ["alpha", "beta", "gamma"] {
        let r = s.aws(
            "PutRule",
            &json!({"Name": name, "EventBusName": "orders",
                    "EventPattern": "{\"source\": [\"shop\"]}", "Description": "d"}),
        );
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(
            r.json()["RuleArn"],
            format!("arn:aws:events:local:000000000000:rule/orders/{name}")
        );
    }
    let r = s.aws(
        "PutRule",
        &json!({"Name": "x", "EventBusName": "nope", "EventPattern": "{}"}),
    );
    assert_eq!(r.aws_type(), "ResourceNotFoundException");
    assert!(r.json()["message"].as_str().unwrap().contains("nope"));
    let r = s.aws("PutRule", &json!({"EventPattern": "{}"}));
    assert_eq!(r.aws_type(), "ValidationException");
    assert!(r.json()["message"].as_str().unwrap().contains("Name"));

    let r = s.aws(
        "DescribeRule",
        &json!({"Name": "alpha", "EventBusName": "orders"}),
    );
    let d = r.json();
    assert_eq!(d["Name"], "alpha");
    assert_eq!(d["State"], "ENABLED");
    assert_eq!(d["EventPattern"], "{\"source\": [\"shop\"]}");
    assert_eq!(d["Description"], "d");
    assert_eq!(d["EventBusName"], "orders");

    // Paging: one rule per page, resumed with NextToken.
    let mut names = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut req = json!({"EventBusName": "orders", "Limit": 1});
        if let Some(t) = &token {
            req["NextToken"] = json!(t);
        }
        let page = s.aws("ListRules", &req).json();
        for r in page["Rules"].as_array().unwrap() {
            names.push(r["Name"].as_str().unwrap().to_string());
        }
        match page["NextToken"].as_str() {
            Some(t) => token = Some(t.to_string()),
            None => break,
        }
    }
    assert_eq!(names, ["alpha", "beta", "gamma"]);
    let r = s.aws(
        "ListRules",
        &json!({"EventBusName": "orders", "NamePrefix": "g"}),
    );
    assert_eq!(r.json()["Rules"].as_array().unwrap().len(), 1);
    let r = s.aws("ListRules", &json!({"NextToken": "!!!"}));
    assert_eq!(r.aws_type(), "ValidationException");

    let r = s.aws(
        "PutTargets",
        &json!({"Rule": "alpha", "EventBusName": "orders", "Targets": [
            {"Id": "a", "Arn": "busbar:plugin:payment-check",
             "RetryPolicy": {"MaximumRetryAttempts": 3, "MaximumEventAgeInSeconds": 120},
             "DeadLetterConfig": {"Arn": "arn:aws:sqs:us-east-1:000000000000:dlq"}},
            {"Id": "b", "Arn": "arn:aws:lambda:us-east-1:000000000000:function:rewards",
             "InputTransformer": {"InputPathsMap": {"n": "$.detail.n"}, "InputTemplate": "{\"n\": <n>}"}},
            {"Id": "c", "Arn": "notification", "Input": "{\"fixed\": true}"},
            {"Id": "d", "Arn": "arn:aws:sqs:us-east-1:000000000000:queue"},
            {"Id": "e", "Arn": "x", "RetryPolicy": {"MaximumEventAgeInSeconds": 5}},
        ]}),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    let body = r.json();
    assert_eq!(body["FailedEntryCount"], 2, "{body}");
    assert_eq!(body["FailedEntries"][0]["TargetId"], "d");
    assert!(
        body["FailedEntries"][0]["ErrorMessage"]
            .as_str()
            .unwrap()
            .contains("does not name a plugin")
    );
    assert_eq!(body["FailedEntries"][1]["TargetId"], "e");
    assert!(
        body["FailedEntries"][1]["ErrorMessage"]
            .as_str()
            .unwrap()
            .contains("MaximumEventAgeInSeconds")
    );

    let r = s.aws(
        "ListTargetsByRule",
        &json!({"Rule": "alpha", "EventBusName": "orders"}),
    );
    let targets = r.json()["Targets"].as_array().unwrap().clone();
    assert_eq!(targets.len(), 3);
    assert_eq!(targets[0]["Arn"], "busbar:plugin:payment-check");
    assert_eq!(targets[0]["RetryPolicy"]["MaximumRetryAttempts"], 3);
    assert_eq!(targets[0]["DeadLetterConfig"]["Arn"], "busbar:dlq");
    assert_eq!(targets[1]["Arn"], "busbar:plugin:rewards");
    assert!(targets[1].get("DeadLetterConfig").is_none());
    assert_eq!(
        targets[1]["InputTransformer"]["InputPathsMap"]["n"],
        "$.detail.n"
    );
    assert_eq!(targets[2]["Input"], "{\"fixed\": true}");

    // The same rule through the admin API.
    let rule = s.get("/v1/rules/orders/alpha").json();
    assert_eq!(rule["targets"][0]["plugin"], "payment-check");
    assert_eq!(rule["targets"][0]["dead_letter"], true);
    assert_eq!(rule["targets"][1]["dead_letter"], false);

    // PutRule again keeps the targets; too many targets is a limit error.
    s.aws(
        "PutRule",
        &json!({"Name": "alpha", "EventBusName": "orders", "EventPattern": "{\"source\": [\"shop\"]}"}),
    );
    let r = s.aws(
        "ListTargetsByRule",
        &json!({"Rule": "alpha", "EventBusName": "orders"}),
    );
    assert_eq!(r.json()["Targets"].as_array().unwrap().len(), 3);
    let r = s.aws(
        "PutTargets",
        &json!({"Rule": "alpha", "EventBusName": "orders", "Targets": [
            {"Id": "x1", "Arn": "p"}, {"Id": "x2", "Arn": "p"}, {"Id": "x3", "Arn": "p"}]}),
    );
    assert_eq!(r.aws_type(), "LimitExceededException");

    let r = s.aws(
        "DisableRule",
        &json!({"Name": "alpha", "EventBusName": "orders"}),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    let d = s
        .aws(
            "DescribeRule",
            &json!({"Name": "alpha", "EventBusName": "orders"}),
        )
        .json();
    assert_eq!(d["State"], "DISABLED");
    s.aws(
        "EnableRule",
        &json!({"Name": "alpha", "EventBusName": "orders"}),
    );
    let d = s
        .aws(
            "DescribeRule",
            &json!({"Name": "alpha", "EventBusName": "orders"}),
        )
        .json();
    assert_eq!(d["State"], "ENABLED");

    let r = s.aws(
        "DeleteRule",
        &json!({"Name": "alpha", "EventBusName": "orders"}),
    );
    assert_eq!(r.aws_type(), "ValidationException");
    assert!(r.json()["message"].as_str().unwrap().contains("targets"));
    let r = s.aws(
        "RemoveTargets",
        &json!({"Rule": "alpha", "EventBusName": "orders", "Ids": ["a", "b", "c", "zz"]}),
    );
    let body = r.json();
    assert_eq!(body["FailedEntryCount"], 1);
    assert_eq!(body["FailedEntries"][0]["TargetId"], "zz");
    let r = s.aws(
        "DeleteRule",
        &json!({"Name": "alpha", "EventBusName": "orders"}),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    // Deleting again succeeds, as in EventBridge.
    let r = s.aws(
        "DeleteRule",
        &json!({"Name": "alpha", "EventBusName": "orders"}),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    let r = s.aws(
        "DescribeRule",
        &json!({"Name": "alpha", "EventBusName": "orders"}),
    );
    assert_eq!(r.status, 400);
    assert_eq!(r.aws_type(), "ResourceNotFoundException");
    assert_eq!(
        r.json()["message"],
        "Rule alpha does not exist on EventBus orders."
    );

    let buses = s.aws("ListEventBuses", &json!({})).json();
    let names: Vec<&str> = buses["EventBuses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["Name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["default", "orders"]);
    let d = s.aws("DescribeEventBus", &json!({"Name": "orders"})).json();
    assert_eq!(d["Description"], "orders bus");
    assert!(d["CreationTime"].as_f64().unwrap() > 1.7e9);
    let d = s.aws("DescribeEventBus", &json!({})).json();
    assert_eq!(d["Name"], "default");
    let r = s.aws("DeleteEventBus", &json!({"Name": "orders"}));
    assert_eq!(r.aws_type(), "ValidationException", "a bus with rules");
    for name in ["beta", "gamma"] {
        s.aws(
            "DeleteRule",
            &json!({"Name": name, "EventBusName": "orders"}),
        );
    }
    let r = s.aws("DeleteEventBus", &json!({"Name": "orders"}));
    assert_eq!(r.status, 200, "{}", r.text);
    let r = s.aws("DescribeEventBus", &json!({"Name": "orders"}));
    assert_eq!(r.aws_type(), "ResourceNotFoundException");
    let r = s.aws("DeleteEventBus", &json!({"Name": "default"}));
    assert_eq!(r.aws_type(), "ValidationException");
}

#[test]
fn test_event_pattern_reports_no_match_and_bad_input() {
    let s = TestServer::start();
    let ev = json!({"id": "1", "source": "shop", "detail-type": "T", "account": "1",
        "time": "2024-01-01T00:00:00Z", "region": "r", "resources": [], "detail": {}});
    let r = s.aws(
        "TestEventPattern",
        &json!({"EventPattern": "{\"source\": [\"other\"]}", "Event": ev.to_string()}),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["Result"], false);
    let r = s.aws(
        "TestEventPattern",
        &json!({"EventPattern": "{\"source\": [\"shop\"]}", "Event": "not json"}),
    );
    assert_eq!(r.aws_type(), "ValidationException");
    assert!(r.json()["message"].as_str().unwrap().contains("Event"));
}

#[test]
fn test_event_pattern_matches() {
    let s = TestServer::start();
    let ev = json!({"id": "1", "source": "shop", "detail-type": "T", "account": "1",
        "time": "2024-01-01T00:00:00Z", "region": "r", "resources": [], "detail": {"n": 5}});
    let r = s.aws(
        "TestEventPattern",
        &json!({"EventPattern": "{\"source\": [\"shop\"], \"detail\": {\"n\": [{\"numeric\": [\">\", 1]}]}}",
                "Event": ev.to_string()}),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["Result"], true);
    let r = s.aws(
        "TestEventPattern",
        &json!({"EventPattern": "{\"source\": \"shop\"}", "Event": ev.to_string()}),
    );
    assert_eq!(r.aws_type(), "InvalidEventPatternException");
}

// ---- CloudEvents ----

fn archived_by_id(s: &TestServer, id: &str) -> Value {
    s.archived()
        .into_iter()
        .find(|e| e["id"] == id)
        .unwrap_or_else(|| panic!("event {id} is not in the archive"))
}

#[test]
fn cloudevents_structured_mode() {
    let s = TestServer::start();
    s.aws("CreateEventBus", &json!({"Name": "ce"}));
    let ce = json!({
        "specversion": "1.0", "id": "ce-1", "source": "/shop/orders", "type": "com.shop.order.placed",
        "time": "2024-05-01T12:00:00.123+02:00", "subject": "order-42",
        "datacontenttype": "application/json", "traceparent": "00-abc", "priority": 3,
        "data": {"total": 10}
    });
    let r = s.post_raw(
        "/cloudevents?bus=ce",
        "application/cloudevents+json; charset=utf-8",
        ce.to_string().into_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["entries"][0]["id"], "ce-1");
    let e = archived_by_id(&s, "ce-1");
    assert_eq!(e["source"], "/shop/orders");
    assert_eq!(e["detail-type"], "com.shop.order.placed");
    assert_eq!(e["time"], "2024-05-01T10:00:00Z");
    assert_eq!(e["resources"], json!(["order-42"]));
    assert_eq!(e["detail"], json!({"total": 10}));
    assert_eq!(e["event-bus-name"], "ce");
    assert_eq!(e["extensions"]["traceparent"], "00-abc");
    assert_eq!(e["extensions"]["priority"], 3);
    assert_eq!(e["extensions"]["datacontenttype"], "application/json");

    // The same on /events, with non-object data wrapped.
    let ce =
        json!({"specversion": "1.0", "id": "ce-2", "source": "s", "type": "t", "data": [1, 2]});
    let r = s.post_raw(
        "/events",
        "application/cloudevents+json",
        ce.to_string().into_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        archived_by_id(&s, "ce-2")["detail"],
        json!({"data": [1, 2]})
    );
    let ce = json!({"specversion": "1.0", "id": "ce-3", "source": "s", "type": "t", "data_base64": "AAEC"});
    let r = s.post_raw(
        "/cloudevents",
        "application/cloudevents+json",
        ce.to_string().into_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        archived_by_id(&s, "ce-3")["detail"],
        json!({"data_base64": "AAEC"})
    );
}

#[test]
fn cloudevents_structured_errors_name_the_attribute() {
    let s = TestServer::start();
    let cases = [
        (
            json!({"id": "1", "source": "s", "type": "t"}),
            "specversion is required",
        ),
        (
            json!({"specversion": "0.3", "id": "1", "source": "s", "type": "t"}),
            "specversion \"0.3\"",
        ),
        (
            json!({"specversion": "1.0", "id": "1", "source": "s"}),
            "attribute type is required",
        ),
        (
            json!({"specversion": "1.0", "source": "s", "type": "t"}),
            "attribute id is required",
        ),
        (
            json!({"specversion": "1.0", "id": "1", "type": "t"}),
            "attribute source is required",
        ),
        (
            json!({"specversion": "1.0", "id": "1", "source": "s", "type": "t", "time": "noon"}),
            "CloudEvents attribute time \"noon\"",
        ),
        (
            json!({"specversion": "1.0", "id": "1", "source": "s", "type": "t", "Bad-Name": "x"}),
            "\"Bad-Name\"",
        ),
        (
            json!({"specversion": "1.0", "id": "1", "source": "s", "type": "t", "data": 1, "data_base64": "AA=="}),
            "not both",
        ),
    ];
    for (ce, want) in cases {
        let r = s.post_raw(
            "/cloudevents",
            "application/cloudevents+json",
            ce.to_string().into_bytes(),
        );
        assert_eq!(r.status, 400, "{ce}: {}", r.text);
        assert!(
            r.error_message().contains(want),
            "{ce}: want {want:?} in {}",
            r.text
        );
    }
    let r = s.post_raw("/cloudevents", "application/json", b"{}".to_vec());
    assert_eq!(r.status, 400);
    assert_eq!(r.error_code(), "NotACloudEvent");
    assert!(s.archived().is_empty());
}

fn post_binary(s: &TestServer, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
    let mut req = s
        .client()
        .post(format!("{}{path}", s.url))
        .body(body.to_vec());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    Reply::from(req.send())
}

#[test]
fn cloudevents_binary_mode() {
    let s = TestServer::start();
    let base = [
        ("ce-specversion", "1.0"),
        ("ce-source", "/sensors/1"),
        ("ce-type", "reading"),
        ("ce-subject", "room%20101"),
        ("ce-time", "2024-01-02T03:04:05Z"),
        ("ce-region", "north"),
    ];
    let mut h = base.to_vec();
    h.push(("ce-id", "b-1"));
    h.push(("content-type", "application/json"));
    let r = post_binary(&s, "/cloudevents", &h, br#"{"celsius": 21.5}"#);
    assert_eq!(r.status, 200, "{}", r.text);
    let e = archived_by_id(&s, "b-1");
    assert_eq!(e["source"], "/sensors/1");
    assert_eq!(e["detail-type"], "reading");
    assert_eq!(e["time"], "2024-01-02T03:04:05Z");
    assert_eq!(e["resources"], json!(["room 101"]));
    assert_eq!(e["detail"], json!({"celsius": 21.5}));
    assert_eq!(e["extensions"]["region"], "north");
    assert_eq!(e["extensions"]["datacontenttype"], "application/json");

    let mut h = base.to_vec();
    h.push(("ce-id", "b-2"));
    h.push(("content-type", "text/plain"));
    let r = post_binary(&s, "/events", &h, b"hello");
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        archived_by_id(&s, "b-2")["detail"],
        json!({"data": "hello"})
    );

    let mut h = base.to_vec();
    h.push(("ce-id", "b-3"));
    h.push(("content-type", "application/octet-stream"));
    let r = post_binary(&s, "/cloudevents", &h, &[0, 1, 2]);
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        archived_by_id(&s, "b-3")["detail"],
        json!({"data_base64": "AAEC"})
    );

    let mut h = base.to_vec();
    h.push(("ce-id", "b-4"));
    h.push(("content-type", "application/json"));
    let r = post_binary(&s, "/cloudevents", &h, b"{not json");
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(
        r.error_message().contains("Content-Type application/json"),
        "{}",
        r.text
    );

    let h = [
        ("ce-specversion", "1.0"),
        ("ce-id", "b-5"),
        ("ce-source", "s"),
    ];
    let r = post_binary(&s, "/cloudevents", &h, b"");
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(
        r.error_message().contains("attribute type is required"),
        "{}",
        r.text
    );
}

#[test]
fn cloudevents_batch_mode() {
    let s = TestServer::start();
    let batch = json!([
        {"specversion": "1.0", "id": "k-1", "source": "s", "type": "t", "data": {"a": 1}},
        {"specversion": "0.3", "id": "k-2", "source": "s", "type": "t"},
        {"specversion": "1.0", "id": "k-3", "source": "s", "type": "t", "data": "text"},
    ]);
    let r = s.post_raw(
        "/cloudevents",
        "application/cloudevents-batch+json",
        batch.to_string().into_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    let body = r.json();
    assert_eq!(body["failed"], 1);
    assert_eq!(body["entries"][0]["id"], "k-1");
    assert!(
        body["entries"][1]["error_message"]
            .as_str()
            .unwrap()
            .contains("event 1 of the batch: CloudEvents specversion \"0.3\""),
        "{body}"
    );
    assert_eq!(body["entries"][2]["id"], "k-3");
    assert_eq!(archived_by_id(&s, "k-3")["detail"], json!({"data": "text"}));
    let r = s.post_raw(
        "/events",
        "application/cloudevents-batch+json",
        b"{}".to_vec(),
    );
    assert_eq!(r.status, 400);
    assert!(r.error_message().contains("JSON array"), "{}", r.text);
}

// ---- the admin API ----

#[test]
fn rules_crud_over_v1() {
    let s = TestServer::start();
    let c = s.client();
    let put = |path: &str, body: Value| {
        let r = c
            .put(format!("{}{path}", s.url))
            .json(&body)
            .send()
            .unwrap();
        (r.status().as_u16(), r.text().unwrap())
    };
    let (status, text) = put(
        "/v1/rules/default/orders",
        json!({"pattern": {"source": ["shop"]}, "description": "all shop events",
               "targets": [{"id": "t1", "plugin": "payment-check"}]}),
    );
    assert_eq!(status, 200, "{text}");
    let rule: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(rule["name"], "orders");
    assert_eq!(rule["state"], "ENABLED");
    assert_eq!(rule["targets"][0]["plugin"], "payment-check");
    let (status, _) = put(
        "/v1/rules/default/other",
        json!({"pattern": "{\"source\": [\"x\"]}", "state": "disabled"}),
    );
    assert_eq!(status, 200);

    let all = s.get("/v1/rules").json();
    assert_eq!(all["rules"].as_array().unwrap().len(), 2);
    let some = s.get("/v1/rules?bus=default&prefix=ord").json();
    assert_eq!(some["rules"].as_array().unwrap().len(), 1);
    assert_eq!(some["rules"][0]["name"], "orders");
    let r = s.get("/v1/rules/default/other").json();
    assert_eq!(r["state"], "DISABLED");
    assert_eq!(r["pattern"], "{\"source\": [\"x\"]}");

    // Without "targets" the rule keeps its targets.
    let (status, text) = put(
        "/v1/rules/default/orders",
        json!({"pattern": {"source": ["shop", "b"]}}),
    );
    assert_eq!(status, 200, "{text}");
    assert_eq!(
        s.get("/v1/rules/default/orders").json()["targets"][0]["id"],
        "t1"
    );

    let targets = s.get("/v1/targets").json();
    let t = &targets["targets"][0];
    assert_eq!(t["queue"], "default/orders/t1");
    assert_eq!(t["plugin"], "payment-check");
    assert_eq!(t["plugin_loaded"], false);
    assert_eq!(t["backlog"], 0);
    for key in [
        "concurrency",
        "min_concurrency",
        "max_concurrency",
        "in_flight",
        "oldest_age_ms",
        "processed_total",
        "errors_total",
        "processed_per_sec",
        "error_rate",
        "p50_ms",
        "p99_ms",
    ] {
        assert!(t.get(key).is_some(), "targets entry lacks {key}: {t}");
    }

    let del = |path: &str| {
        let r = c.delete(format!("{}{path}", s.url)).send().unwrap();
        (r.status().as_u16(), r.text().unwrap())
    };
    let (status, text) = del("/v1/rules/default/orders");
    assert_eq!(status, 409, "{text}");
    assert!(text.contains("Remove the targets"), "{text}");
    put(
        "/v1/rules/default/orders",
        json!({"pattern": {"source": ["shop"]}, "targets": []}),
    );
    let (status, _) = del("/v1/rules/default/orders");
    assert_eq!(status, 204);
    let r = s.get("/v1/rules/default/orders");
    assert_eq!(r.status, 404);
    assert_eq!(
        r.error_message(),
        "Rule orders does not exist on EventBus default."
    );

    let (status, text) = put("/v1/rules/nobus/x", json!({"pattern": {"source": ["x"]}}));
    assert_eq!(status, 404, "{text}");
    let (status, text) = put("/v1/rules/default/x", json!({"pattern": 5}));
    assert_eq!(status, 400, "{text}");
    let (status, text) = put(
        "/v1/rules/default/x",
        json!({"pattern": {}, "colour": "red"}),
    );
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("colour"), "{text}");
    let (status, text) = put("/v1/rules/default/bad%20name", json!({"pattern": {}}));
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("rule name"), "{text}");

    // Buses.
    let r = c
        .put(format!("{}/v1/buses/b2", s.url))
        .json(&json!({"description": "two"}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 201);
    let buses = s.get("/v1/buses").json();
    assert_eq!(buses["buses"].as_array().unwrap().len(), 2);
    let (status, _) = del("/v1/buses/b2");
    assert_eq!(status, 204);
    assert_eq!(s.get("/v1/buses/b2").status, 404);
}

#[test]
fn dead_letter_queue_on_an_empty_queue() {
    let s = TestServer::start();
    let c = s.client();
    let r = s.get("/v1/dlq");
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json(), json!({"dead_letters": []}));
    let r = s.get("/v1/dlq?after=5&limit=10");
    assert_eq!(r.json(), json!({"dead_letters": []}));
    let r = s.get("/v1/dlq?limit=20000");
    assert_eq!(r.status, 400);
    assert!(r.error_message().contains("10000"), "{}", r.text);
    let r = s.get("/v1/dlq/7");
    assert_eq!(r.status, 404);
    assert_eq!(r.error_message(), "dead letter 7 does not exist");
    let r = s.get("/v1/dlq/seven");
    assert_eq!(r.status, 400);
    assert!(r.error_message().contains("must be a number"));
    let r = c.delete(format!("{}/v1/dlq/7", s.url)).send().unwrap();
    assert_eq!(r.status(), 404);
    let r = c.delete(format!("{}/v1/dlq", s.url)).send().unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().unwrap(), json!({"purged": 0}));
    let r = s.post_json("/v1/dlq/redrive", &json!({}));
    assert_eq!(r.json(), json!({"redriven": 0}));
    let r = s.post_json("/v1/dlq/redrive", &json!({"ids": [1, 2]}));
    assert_eq!(r.json(), json!({"redriven": 0}));
    let r = s.post_json("/v1/dlq/redrive", &json!({"ids": "all"}));
    assert_eq!(r.status, 400);
}

#[test]
fn archive_time_range_and_limits() {
    let s = TestServer::start();
    let ids: Vec<String> = (0..3).map(|_| publish_one(&s, "a")).collect();
    let r = s.get("/v1/archive?limit=2");
    assert_eq!(r.json()["events"].as_array().unwrap().len(), 2);
    let r = s.get("/v1/archive?since=2999-01-01T00:00:00Z");
    assert_eq!(r.json()["events"], json!([]));
    let r = s.get("/v1/archive?since=2000-01-01T00:00:00Z&until=2999-01-01T00:00:00Z&bus=default");
    assert_eq!(r.json()["events"].as_array().unwrap().len(), 3);
    let r = s.get("/v1/archive?bus=other");
    assert_eq!(r.json()["events"], json!([]));
    let r = s.get("/v1/archive?since=yesterday");
    assert_eq!(r.status, 400);
    assert!(
        r.error_message().starts_with("since \"yesterday\""),
        "{}",
        r.text
    );
    let r = s.get("/v1/archive?since=2024-01-02T00:00:00Z&until=2024-01-01T00:00:00Z");
    assert_eq!(r.status, 400);
    let r = s.get("/v1/archive?limit=10001");
    assert_eq!(r.status, 400);
    let r = s.get("/v1/archive?colour=red");
    assert_eq!(r.status, 400);
    assert!(r.error_message().contains("colour"), "{}", r.text);
    assert_archived(&s, &ids.iter().map(String::as_str).collect::<Vec<_>>());
}

/// Needs the real pattern engine for the filtering.
#[test]
fn archive_filters_by_pattern() {
    let s = TestServer::start();
    let a = publish_one(&s, "a");
    let b = publish_one(&s, "b");
    let pattern = "%7B%22source%22%3A%5B%22b%22%5D%7D"; // {"source":["b"]}
    let r = s.get(&format!("/v1/archive?pattern={pattern}"));
    assert_eq!(r.status, 200, "{}", r.text);
    let ids: Vec<String> = r.json()["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect();
    assert_ne!(a, b);
    assert_eq!(ids, vec![b]);
    let r = s.get("/v1/archive?pattern=%7B%22source%22%3A%22b%22%7D"); // {"source":"b"}
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.error_code(), "InvalidEventPattern");
    let r = s.get("/v1/tail?pattern=%7B%22source%22%3A%22b%22%7D");
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.error_code(), "InvalidEventPattern");
}

#[test]
fn replays_start_list_and_refuse_duplicates() {
    let s = TestServer::start();
    publish_one(&s, "a");
    let req =
        json!({"name": "r1", "since": "2000-01-01T00:00:00Z", "until": "2999-01-01T00:00:00Z"});
    let r = s.post_json("/v1/replays", &req);
    assert_eq!(r.status, 202, "{}", r.text);
    assert_eq!(r.json()["name"], "r1");
    let r = s.post_json("/v1/replays", &req);
    assert_eq!(r.status, 409, "{}", r.text);
    let r = s.post_json(
        "/v1/replays",
        &json!({"name": "r2", "bus": "nope", "since": "2000-01-01T00:00:00Z", "until": "2999-01-01T00:00:00Z"}),
    );
    assert_eq!(r.status, 404, "{}", r.text);
    let r = s.post_json(
        "/v1/replays",
        &json!({"name": "r3", "since": "then", "until": "2999-01-01T00:00:00Z"}),
    );
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(r.error_message().contains("since"), "{}", r.text);
    let mut last = Value::Null;
    let r = poll_until(Duration::from_secs(20), || {
        last = s.get("/v1/replays/r1").json();
        (last["state"] == "completed").then(|| last.clone())
    })
    .unwrap_or_else(|| panic!("replay r1 did not finish: {last}"));
    assert_eq!(r["replayed"], 1);
    let list = s.get("/v1/replays").json();
    assert_eq!(list["replays"].as_array().unwrap().len(), 1);
    assert_eq!(s.get("/v1/replays/zzz").status, 404);
    // Replayed events are not archived a second time.
    assert_eq!(s.archived().len(), 1);
}

#[test]
fn plugins_list_is_an_array() {
    let s = TestServer::start();
    let r = s.get("/v1/plugins");
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.json().is_array());
}

#[test]
fn tail_streams_accepted_events() {
    let s = TestServer::start();
    let resp = s.client().get(format!("{}/v1/tail", s.url)).send().unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let id = publish_one(&s, "tailed");
    let mut lines = BufReader::new(resp).lines();
    let item: Value = loop {
        let line = lines.next().expect("the tail stream ended").unwrap();
        if let Some(data) = line.strip_prefix("data: ") {
            break serde_json::from_str(data).unwrap();
        }
    };
    assert_eq!(item["kind"], "event");
    assert_eq!(item["event"]["id"], id);
    assert_eq!(item["event"]["source"], "tailed");
    assert!(item["rules"].is_array());
}

// ---- tokens ----

fn with_token(req: reqwest::blocking::RequestBuilder, token: Option<&str>) -> u16 {
    let req = match token {
        Some(t) => req.bearer_auth(t),
        None => req,
    };
    req.send().unwrap().status().as_u16()
}

#[test]
fn token_matrix() {
    let s = TestServer::start_with(|c| {
        c.server.publish_token = Some("pub-secret".into());
        c.server.admin_token = Some("admin-secret".into());
    });
    let c = s.client();
    let publish = || c.post(format!("{}/events", s.url)).json(&event("s", 1));
    assert_eq!(with_token(publish(), None), 401);
    assert_eq!(with_token(publish(), Some("wrong")), 401);
    assert_eq!(with_token(publish(), Some("pub-secret")), 200);
    assert_eq!(with_token(publish(), Some("admin-secret")), 200);

    let ce = || {
        c.post(format!("{}/cloudevents", s.url))
            .header("content-type", "application/cloudevents+json")
            .body(json!({"specversion": "1.0", "id": "x", "source": "s", "type": "t"}).to_string())
    };
    assert_eq!(with_token(ce(), None), 401);
    assert_eq!(with_token(ce(), Some("pub-secret")), 200);

    let admin = || c.get(format!("{}/v1/rules", s.url));
    assert_eq!(with_token(admin(), None), 401);
    assert_eq!(with_token(admin(), Some("wrong")), 401);
    assert_eq!(with_token(admin(), Some("pub-secret")), 403);
    assert_eq!(with_token(admin(), Some("admin-secret")), 200);

    let r = admin().bearer_auth("pub-secret").send().unwrap();
    let body: Value = r.json().unwrap();
    assert_eq!(body["error"]["code"], "Forbidden");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("admin token")
    );
    let r = admin().send().unwrap();
    let body: Value = r.json().unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("needs the admin token")
    );

    let aws = |op: &str| {
        c.post(format!("{}/", s.url))
            .header("x-amz-target", format!("AWSEvents.{op}"))
            .header("content-type", "application/x-amz-json-1.1")
    };
    let put_events = json!({"Entries": [aws_entry(1)]}).to_string();
    assert_eq!(
        with_token(aws("PutEvents").body(put_events.clone()), None),
        401
    );
    assert_eq!(
        with_token(
            aws("PutEvents").body(put_events.clone()),
            Some("pub-secret")
        ),
        200
    );
    assert_eq!(
        with_token(aws("ListRules").body("{}"), Some("pub-secret")),
        403
    );
    assert_eq!(
        with_token(aws("ListRules").body("{}"), Some("admin-secret")),
        200
    );
    let r = aws("ListRules")
        .body("{}")
        .bearer_auth("pub-secret")
        .send()
        .unwrap();
    assert_eq!(
        r.json::<Value>().unwrap()["__type"],
        "AccessDeniedException"
    );
    let r = aws("ListRules").body("{}").send().unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.json::<Value>().unwrap()["__type"],
        "UnrecognizedClientException"
    );

    // The other places a token may be.
    let r = admin()
        .header("x-busbar-token", "admin-secret")
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let sigv4 = "AWS4-HMAC-SHA256 Credential=admin-secret/20240101/us-east-1/events/aws4_request, SignedHeaders=host, Signature=abc";
    let r = aws("ListRules")
        .body("{}")
        .header("authorization", sigv4)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let sigv4 = "AWS4-HMAC-SHA256 Credential=pub-secret/20240101/us-east-1/events/aws4_request, SignedHeaders=host, Signature=abc";
    let r = aws("ListRules")
        .body("{}")
        .header("authorization", sigv4)
        .send()
        .unwrap();
    assert_eq!(r.status(), 403);

    // Open routes stay open.
    assert_eq!(with_token(c.get(format!("{}/healthz", s.url)), None), 200);
    assert_eq!(with_token(c.get(format!("{}/readyz", s.url)), None), 200);
    assert_eq!(with_token(c.get(format!("{}/metrics", s.url)), None), 200);
}

#[test]
fn without_tokens_authorization_is_ignored() {
    let s = TestServer::start();
    let r = s
        .client()
        .get(format!("{}/v1/rules", s.url))
        .bearer_auth("anything")
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
}

// ---- metrics, health, routing ----

#[test]
fn metrics_and_health() {
    let s = TestServer::start();
    let r = s.get("/healthz");
    assert_eq!((r.status, r.text.as_str()), (200, "ok"));
    assert_eq!(s.get("/readyz").status, 200);
    publish_one(&s, "m");
    s.aws("PutEvents", &json!({"Entries": [aws_entry(1)]}));
    s.post_raw("/events", "application/json", b"{".to_vec());
    let r = s.get("/metrics");
    assert_eq!(r.status, 200);
    assert!(
        r.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    for want in [
        "busbar_ingest_events_total{surface=\"native\",outcome=\"accepted\"}",
        "busbar_ingest_events_total{surface=\"aws\",outcome=\"accepted\"}",
        "busbar_http_errors_total{surface=\"native\",status=\"400\"}",
        "busbar_dead_letters",
    ] {
        assert!(r.text.contains(want), "/metrics lacks {want}:\n{}", r.text);
    }
}

#[test]
fn unknown_routes_and_methods_say_so() {
    let s = TestServer::start();
    let r = s.get("/nowhere");
    assert_eq!(r.status, 404);
    assert!(r.error_message().contains("GET /nowhere"), "{}", r.text);
    let r = s.get("/events");
    assert_eq!(r.status, 405);
    assert!(
        r.error_message().contains("/events does not accept GET"),
        "{}",
        r.text
    );
    let r = s.get("/v1/nothing");
    assert_eq!(r.status, 404);
}

/// Needs the real pattern engine: only routed events fill a queue.
#[test]
fn throttled_entries_get_429() {
    // A backlog bound of 1 delivery per queue, and a target whose plugin is not
    // loaded, so the first routed delivery stays queued and the next is throttled.
    let s = TestServer::start_with(|c| c.delivery.max_queue_backlog = 1);
    let r = s.aws(
        "PutRule",
        &json!({"Name": "all", "EventPattern": "{\"source\": [\"t\"]}"}),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    let r = s.aws(
        "PutTargets",
        &json!({"Rule": "all", "Targets": [{"Id": "x", "Arn": "not-loaded"}]}),
    );
    assert_eq!(r.json()["FailedEntryCount"], 0, "{}", r.text);
    let first = s.post_json("/events", &event("t", 1));
    assert_eq!(first.status, 200, "{}", first.text);
    let second = s.post_json("/events", &event("t", 2));
    assert_eq!(second.status, 429, "{}", second.text);
    assert_eq!(
        second.json()["entries"][0]["error_code"],
        "ThrottlingException"
    );
    let r = s.aws(
        "PutEvents",
        &json!({"Entries": [{"Source": "t", "DetailType": "x", "Detail": "{}"}]}),
    );
    assert_eq!(r.aws_type(), "ThrottlingException");
    // An event no rule routes is still accepted.
    assert_eq!(s.post_json("/events", &event("other", 3)).status, 200);
}

/// Removing a target leaves nothing waiting in a queue no worker serves: its
/// queued deliveries are dead-lettered with the reason, and the queue goes.
#[test]
fn deliveries_of_a_removed_target_are_dead_lettered() {
    let s = TestServer::start();
    let c = s.client();
    let put = |targets: Value| {
        let r = c
            .put(format!("{}/v1/rules/default/orders", s.url))
            .json(&json!({"pattern": {"source": ["shop"]}, "targets": targets}))
            .send()
            .unwrap();
        assert!(r.status().is_success(), "{}", r.text().unwrap());
    };
    // The plugin is absent, so the deliveries wait in the queue.
    put(json!([{"id": "t1", "plugin": "absent"}]));
    let ids: Vec<String> = (0..3).map(|_| publish_one(&s, "shop")).collect();
    let backlog = || {
        s.node
            .bus
            .queue_stats()
            .into_iter()
            .find(|q| q.queue == "default/orders/t1")
            .map(|q| q.backlog)
    };
    assert_eq!(backlog(), Some(3));

    put(json!([]));
    let mut last = Value::Null;
    let letters = poll_until(Duration::from_secs(20), || {
        last = s.get("/v1/dlq").json()["dead_letters"].clone();
        last.as_array()
            .is_some_and(|l| l.len() == 3)
            .then(|| last.clone())
    })
    .unwrap_or_else(|| panic!("dead letters: {last}"));
    for l in letters.as_array().unwrap() {
        assert!(ids.iter().any(|id| l["event"]["id"] == id.as_str()), "{l}");
        let reason = l["last_error"].as_str().unwrap();
        assert!(
            reason.contains("orders") && reason.contains("no longer exists"),
            "{reason}"
        );
    }
    // Once quiet, the queue itself is forgotten.
    eventually("the queue to be forgotten", Duration::from_secs(20), || {
        backlog().is_none().then_some(())
    });
}
