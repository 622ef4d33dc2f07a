//! The real awscli (1.x) and boto3 against a real node: busbar's EventBridge
//! API must be something they can talk to with only `--endpoint-url` changed.
//! Both come from PyPI into `<repo>/.tools/venv` (`bash host/tests/tools.sh`).

use crate::harness::server::TestServer;
use crate::harness::{repo_root, stderr, stdout};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::process::Command;

pub(crate) fn venv_bin(name: &str) -> PathBuf {
    let path = repo_root().join(".tools/venv/bin").join(name);
    assert!(
        path.exists(),
        "{} is missing: run host/tests/tools.sh first",
        path.display()
    );
    path
}

/// A command with dummy credentials and no user configuration in the way.
pub(crate) fn isolated(program: PathBuf, access_key: &str) -> Command {
    let mut cmd = Command::new(program);
    cmd.env("AWS_ACCESS_KEY_ID", access_key)
        .env("AWS_SECRET_ACCESS_KEY", "x")
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env("AWS_CONFIG_FILE", "/nonexistent/busbar-test-config")
        .env(
            "AWS_SHARED_CREDENTIALS_FILE",
            "/nonexistent/busbar-test-credentials",
        )
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_PAGER", "")
        .env("AWS_MAX_ATTEMPTS", "1")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_ENDPOINT_URL");
    cmd
}

/// Runs `aws events <args>`; Ok(parsed stdout) or Err(stderr).
fn aws_as(s: &TestServer, access_key: &str, args: &[&str]) -> Result<Value, String> {
    run_aws(&s.url, access_key, "events", args)
}

/// Runs `aws <service> <args>` against `url`; Ok(parsed stdout) or Err(stderr).
pub(crate) fn run_aws(
    url: &str,
    access_key: &str,
    service: &str,
    args: &[&str],
) -> Result<Value, String> {
    let out = isolated(venv_bin("aws"), access_key)
        .arg(service)
        .args(args)
        .args([
            "--endpoint-url",
            url,
            "--region",
            "us-east-1",
            "--output",
            "json",
        ])
        .output()
        .expect("running the awscli");
    let stdout = stdout(&out);
    if !out.status.success() {
        return Err(stderr(&out));
    }
    if stdout.trim().is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_str(&stdout)
        .map_err(|e| format!("awscli printed something that is not JSON ({e}): {stdout}"))
}

fn aws(s: &TestServer, args: &[&str]) -> Value {
    aws_as(s, "x", args).unwrap_or_else(|e| panic!("aws events {}: {e}", args.join(" ")))
}

fn aws_err(s: &TestServer, args: &[&str]) -> String {
    match aws_as(s, "x", args) {
        Ok(v) => panic!("aws events {} should fail, printed {v}", args.join(" ")),
        Err(e) => e,
    }
}

#[test]
fn awscli_rules_targets_and_events() {
    let s = TestServer::start();
    let bus = aws(&s, &["create-event-bus", "--name", "orders"]);
    assert_eq!(
        bus["EventBusArn"],
        "arn:aws:events:us-east-1:000000000000:event-bus/orders"
    );
    let err = aws_err(&s, &["create-event-bus", "--name", "orders"]);
    assert!(err.contains("ResourceAlreadyExistsException"), "{err}");

    let pattern = r#"{"source": ["shop"], "detail-type": ["OrderPlaced"]}"#;
    for name in ["r1", "r2", "r3"] {
        let rule = aws(
            &s,
            &[
                "put-rule",
                "--name",
                name,
                "--event-bus-name",
                "orders",
                "--event-pattern",
                pattern,
                "--description",
                "orders from the shop",
            ],
        );
        assert_eq!(
            rule["RuleArn"],
            format!("arn:aws:events:us-east-1:000000000000:rule/orders/{name}")
        );
    }

    let targets = json!([
        {"Id": "pay", "Arn": "busbar:plugin:payment-check",
         "RetryPolicy": {"MaximumRetryAttempts": 3, "MaximumEventAgeInSeconds": 120},
         "DeadLetterConfig": {"Arn": "arn:aws:sqs:us-east-1:000000000000:dlq"}},
        {"Id": "rew", "Arn": "arn:aws:lambda:us-east-1:000000000000:function:rewards",
         "InputTransformer": {"InputPathsMap": {"id": "$.detail.id"}, "InputTemplate": "{\"order\": <id>}"}},
        {"Id": "bad", "Arn": "arn:aws:sqs:us-east-1:000000000000:somequeue"}
    ])
    .to_string();
    let put = aws(
        &s,
        &[
            "put-targets",
            "--rule",
            "r1",
            "--event-bus-name",
            "orders",
            "--targets",
            &targets,
        ],
    );
    assert_eq!(put["FailedEntryCount"], 1, "{put}");
    assert_eq!(put["FailedEntries"][0]["TargetId"], "bad");
    assert_eq!(put["FailedEntries"][0]["ErrorCode"], "ValidationException");

    // --page-size makes the awscli page through ListRules with NextToken.
    let rules = aws(
        &s,
        &[
            "list-rules",
            "--event-bus-name",
            "orders",
            "--page-size",
            "1",
        ],
    );
    let names: Vec<&str> = rules["Rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["Name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["r1", "r2", "r3"]);
    assert_eq!(rules["Rules"][0]["EventPattern"], pattern);

    let rule = aws(
        &s,
        &[
            "describe-rule",
            "--name",
            "r1",
            "--event-bus-name",
            "orders",
        ],
    );
    assert_eq!(rule["Name"], "r1");
    assert_eq!(rule["State"], "ENABLED");
    assert_eq!(rule["Description"], "orders from the shop");
    assert_eq!(rule["EventBusName"], "orders");
    assert_eq!(
        rule["Arn"],
        "arn:aws:events:us-east-1:000000000000:rule/orders/r1"
    );

    let listed = aws(
        &s,
        &[
            "list-targets-by-rule",
            "--rule",
            "r1",
            "--event-bus-name",
            "orders",
        ],
    );
    let t = listed["Targets"].as_array().unwrap();
    assert_eq!(t.len(), 2, "{listed}");
    assert_eq!(t[0]["Id"], "pay");
    assert_eq!(t[0]["Arn"], "busbar:plugin:payment-check");
    assert_eq!(t[0]["RetryPolicy"]["MaximumRetryAttempts"], 3);
    assert_eq!(t[0]["RetryPolicy"]["MaximumEventAgeInSeconds"], 120);
    assert!(t[0]["DeadLetterConfig"]["Arn"].is_string());
    assert_eq!(t[1]["Arn"], "busbar:plugin:rewards");
    assert_eq!(
        t[1]["InputTransformer"]["InputTemplate"],
        "{\"order\": <id>}"
    );

    let entries = json!([
        {"Source": "shop", "DetailType": "OrderPlaced", "Detail": "{\"id\": 7}",
         "EventBusName": "orders", "Time": "2024-06-01T12:30:00Z", "Resources": ["arn:aws:shop:order/7"]},
        {"Source": "shop", "DetailType": "OrderPlaced", "Detail": "[not json", "EventBusName": "orders"}
    ])
    .to_string();
    let put = aws(&s, &["put-events", "--entries", &entries]);
    assert_eq!(put["FailedEntryCount"], 1, "{put}");
    let id = put["Entries"][0]["EventId"].as_str().unwrap().to_string();
    assert_eq!(put["Entries"][1]["ErrorCode"], "MalformedDetail");
    let archived = s.archived();
    let e = archived.iter().find(|e| e["id"] == id.as_str()).unwrap();
    assert_eq!(e["event-bus-name"], "orders");
    assert_eq!(e["region"], "us-east-1");
    assert_eq!(e["time"], "2024-06-01T12:30:00Z");
    assert_eq!(e["detail"], json!({"id": 7}));
    assert_eq!(e["resources"], json!(["arn:aws:shop:order/7"]));

    let eleven: Vec<Value> = (0..11)
        .map(|i| json!({"Source": "shop", "DetailType": "T", "Detail": format!("{{\"i\": {i}}}")}))
        .collect();
    let err = aws_err(&s, &["put-events", "--entries", &json!(eleven).to_string()]);
    assert!(err.contains("ValidationException"), "{err}");

    let event = json!({"id": "1", "source": "elsewhere", "detail-type": "OrderPlaced",
        "account": "000000000000", "time": "2024-01-01T00:00:00Z", "region": "us-east-1",
        "resources": [], "detail": {}})
    .to_string();
    let r = aws(
        &s,
        &[
            "test-event-pattern",
            "--event-pattern",
            pattern,
            "--event",
            &event,
        ],
    );
    assert_eq!(r["Result"], false);

    let err = aws_err(
        &s,
        &[
            "describe-rule",
            "--name",
            "nope",
            "--event-bus-name",
            "orders",
        ],
    );
    assert!(err.contains("ResourceNotFoundException"), "{err}");
    assert!(
        err.contains("Rule nope does not exist on EventBus orders."),
        "{err}"
    );

    aws(
        &s,
        &["disable-rule", "--name", "r2", "--event-bus-name", "orders"],
    );
    let rule = aws(
        &s,
        &[
            "describe-rule",
            "--name",
            "r2",
            "--event-bus-name",
            "orders",
        ],
    );
    assert_eq!(rule["State"], "DISABLED");
    aws(
        &s,
        &["delete-rule", "--name", "r2", "--event-bus-name", "orders"],
    );
    let err = aws_err(
        &s,
        &[
            "describe-rule",
            "--name",
            "r2",
            "--event-bus-name",
            "orders",
        ],
    );
    assert!(err.contains("ResourceNotFoundException"), "{err}");
    let buses = aws(&s, &["list-event-buses"]);
    assert_eq!(buses["EventBuses"].as_array().unwrap().len(), 2);
}

#[test]
fn awscli_test_event_pattern_matches() {
    let s = TestServer::start();
    let event = json!({"id": "1", "source": "shop", "detail-type": "OrderPlaced",
        "account": "000000000000", "time": "2024-01-01T00:00:00Z", "region": "us-east-1",
        "resources": [], "detail": {"total": 300}})
    .to_string();
    let r = aws(
        &s,
        &[
            "test-event-pattern",
            "--event-pattern",
            r#"{"source": ["shop"], "detail": {"total": [{"numeric": [">", 200]}]}}"#,
            "--event",
            &event,
        ],
    );
    assert_eq!(r["Result"], true);
    let err = aws_err(
        &s,
        &[
            "put-rule",
            "--name",
            "bad",
            "--event-pattern",
            r#"{"source": "shop"}"#,
        ],
    );
    assert!(err.contains("InvalidEventPatternException"), "{err}");
}

/// Runs a Python script with the venv's boto3; it prints one JSON document.
fn boto3(s: &TestServer, access_key: &str, script: &str) -> Value {
    let prelude = r#"
import json, os, sys
import boto3, botocore
client = boto3.client(
    "events",
    endpoint_url=os.environ["BUSBAR_URL"],
    region_name="us-east-1",
    aws_access_key_id=os.environ["AWS_ACCESS_KEY_ID"],
    aws_secret_access_key="x",
    config=botocore.config.Config(retries={"max_attempts": 1}),
)
def code(call):
    try:
        call()
        return None
    except botocore.exceptions.ClientError as e:
        return {"code": e.response["Error"]["Code"], "message": e.response["Error"]["Message"],
                "status": e.response["ResponseMetadata"]["HTTPStatusCode"]}
"#;
    let out = isolated(venv_bin("python"), access_key)
        .env("BUSBAR_URL", &s.url)
        .arg("-c")
        .arg(format!("{prelude}\n{script}"))
        .output()
        .expect("running python");
    let stdout = stdout(&out);
    assert!(
        out.status.success(),
        "boto3 script failed:\n{}\n{stdout}",
        stderr(&out)
    );
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
}

#[test]
fn boto3_client() {
    let s = TestServer::start();
    let out = boto3(
        &s,
        "x",
        r#"
import datetime
out = {}
out["put_rule"] = client.put_rule(Name="big-orders", EventPattern=json.dumps({"source": ["shop"]}))["RuleArn"]
out["put_targets"] = client.put_targets(Rule="big-orders", Targets=[
    {"Id": "t1", "Arn": "busbar:plugin:payment-check", "Input": json.dumps({"fixed": 1})}])["FailedEntryCount"]
resp = client.put_events(Entries=[
    {"Source": "shop", "DetailType": "OrderPlaced", "Detail": json.dumps({"total": 300}),
     "Time": datetime.datetime(2024, 2, 3, 4, 5, 6, tzinfo=datetime.timezone.utc)},
    {"Source": "shop", "DetailType": "OrderPlaced", "Detail": json.dumps({"total": 1})},
])
out["put_events"] = {"failed": resp["FailedEntryCount"], "ids": [e.get("EventId") for e in resp["Entries"]]}
out["request_id"] = resp["ResponseMetadata"]["RequestId"]
out["rules"] = [r["Name"] for r in client.get_paginator("list_rules").paginate().build_full_result()["Rules"]]
out["targets"] = client.list_targets_by_rule(Rule="big-orders")["Targets"]
out["missing"] = code(lambda: client.describe_rule(Name="nope"))
try:
    client.describe_rule(Name="nope")
    out["modeled"] = False
except client.exceptions.ResourceNotFoundException:
    out["modeled"] = True
out["exists"] = code(lambda: client.create_event_bus(Name="default"))
out["unknown_bus"] = code(lambda: client.put_rule(Name="r", EventBusName="nope", EventPattern="{}"))
out["test"] = client.test_event_pattern(EventPattern=json.dumps({"source": ["x"]}),
    Event=json.dumps({"id": "1", "source": "shop", "detail-type": "d", "account": "1",
                      "time": "2024-01-01T00:00:00Z", "region": "r", "resources": [], "detail": {}}))["Result"]
bus = client.describe_event_bus()
out["bus"] = {"name": bus["Name"], "arn": bus["Arn"], "created": bus["CreationTime"].year}
print(json.dumps(out))
"#,
    );
    assert_eq!(
        out["put_rule"],
        "arn:aws:events:us-east-1:000000000000:rule/big-orders"
    );
    assert_eq!(out["put_targets"], 0);
    assert_eq!(out["put_events"]["failed"], 0);
    let ids = out["put_events"]["ids"].as_array().unwrap();
    assert_eq!(ids.len(), 2);
    assert!(out["request_id"].as_str().is_some_and(|r| !r.is_empty()));
    assert_eq!(out["rules"], json!(["big-orders"]));
    assert_eq!(out["targets"][0]["Input"], "{\"fixed\": 1}");
    assert_eq!(out["missing"]["code"], "ResourceNotFoundException");
    assert_eq!(out["missing"]["status"], 400);
    assert_eq!(out["modeled"], true);
    assert_eq!(out["exists"]["code"], "ResourceAlreadyExistsException");
    assert_eq!(out["unknown_bus"]["code"], "ResourceNotFoundException");
    assert_eq!(out["test"], false);
    assert_eq!(out["bus"]["name"], "default");
    assert_eq!(
        out["bus"]["arn"],
        "arn:aws:events:us-east-1:000000000000:event-bus/default"
    );
    assert!(out["bus"]["created"].as_i64().unwrap() >= 2024);
    let archived = s.archived();
    let first = archived
        .iter()
        .find(|e| e["id"] == ids[0])
        .expect("the event boto3 published is archived");
    assert_eq!(first["time"], "2024-02-03T04:05:06Z");
    assert_eq!(first["detail"], json!({"total": 300}));
}

#[test]
fn tokens_ride_in_the_access_key_id() {
    let s = TestServer::start_with(|c| {
        c.server.publish_token = Some("pub-token".into());
        c.server.admin_token = Some("admin-token".into());
    });
    let rules = aws_as(&s, "admin-token", &["list-rules"]).expect("admin token as the key id");
    assert_eq!(rules["Rules"], json!([]));
    let err = aws_as(&s, "wrong", &["list-rules"]).unwrap_err();
    assert!(err.contains("UnrecognizedClientException"), "{err}");
    let err = aws_as(&s, "pub-token", &["list-rules"]).unwrap_err();
    assert!(err.contains("AccessDeniedException"), "{err}");

    let out = boto3(
        &s,
        "pub-token",
        r#"
out = {}
out["put_events"] = client.put_events(Entries=[{"Source": "s", "DetailType": "t", "Detail": "{}"}])["FailedEntryCount"]
out["put_rule"] = code(lambda: client.put_rule(Name="r", EventPattern="{}"))
print(json.dumps(out))
"#,
    );
    assert_eq!(out["put_events"], 0);
    assert_eq!(out["put_rule"]["code"], "AccessDeniedException");
    assert_eq!(out["put_rule"]["status"], 403);
    assert!(
        out["put_rule"]["message"]
            .as_str()
            .unwrap()
            .contains("admin token")
    );
}
