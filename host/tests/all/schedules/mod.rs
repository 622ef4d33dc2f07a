//! Schedules that fire: scheduled rules through the EventBridge API (awscli,
//! boto3), `/v1` and the config file. Time comes from the node's clock, moved
//! forward by the test: no test waits for a real minute.
//!
//! Every scheduled target here is the `echo` fixture behind an input
//! transformer that copies the envelope into the detail, so the echoed events
//! in the archive show exactly what the plugin received.

mod cluster;
mod restart;
mod rules;
mod scheduler;

use crate::aws_cli::{isolated, venv_bin};
use crate::harness::server::TestServer;
use crate::harness::{eventually, stderr, stdout, wasm};
use serde_json::{Value, json};
use std::time::Duration;

/// The target that shows what a plugin receives: the envelope, reshaped.
pub fn envelope_target(id: &str) -> Value {
    json!({
        "Id": id,
        "Arn": "busbar:plugin:echo",
        "InputTransformer": {
            "InputPathsMap": {"time": "$.time", "source": "$.source", "dt": "$.detail-type",
                              "res": "$.resources", "detail": "$.detail", "id": "$.id"},
            "InputTemplate": "{\"target\": \"" .to_string() + id + "\", \"time\": <time>, \"source\": <source>, \"dt\": <dt>, \"res\": <res>, \"detail\": <detail>, \"id\": <id>}"
        }
    })
}

/// A node with the echo fixture loaded.
pub fn node_with_echo(toml: &str) -> TestServer {
    let s = TestServer::start_toml(toml, |_| {});
    std::fs::copy(wasm("echo-v1"), s.plugins().join("echo.wasm")).unwrap();
    eventually("the echo plugin to load", Duration::from_secs(60), || {
        let v = s.get("/v1/plugins").json();
        let loaded = v
            .as_array()?
            .iter()
            .any(|p| p["name"] == "echo" && p["state"] == "loaded");
        loaded.then_some(())
    });
    s
}

/// The scheduled events in the archive, oldest first.
pub fn scheduled(s: &TestServer) -> Vec<Value> {
    let mut v: Vec<Value> = s
        .archived()
        .into_iter()
        .filter(|e| e["source"] == "aws.events")
        .collect();
    v.sort_by(|a, b| a["time"].as_str().cmp(&b["time"].as_str()));
    v
}

/// What the echo plugin received from target `target`, by the event time.
pub fn echoed(s: &TestServer, target: &str) -> Vec<Value> {
    let mut v: Vec<Value> = s
        .archived()
        .into_iter()
        .filter(|e| e["source"] == "echo" && e["detail"]["target"] == target)
        .map(|e| e["detail"].clone())
        .collect();
    v.sort_by(|a, b| a["time"].as_str().cmp(&b["time"].as_str()));
    v
}

/// Waits until the archive holds `n` scheduled events and target `target`
/// has echoed `n`; then gives the node a moment in which a wrong extra fire
/// would show, and returns the scheduled events.
pub fn fired(s: &TestServer, target: &str, n: usize) -> Vec<Value> {
    eventually(
        &format!("{n} scheduled events echoed by {target}"),
        Duration::from_secs(30),
        || (scheduled(s).len() >= n && echoed(s, target).len() >= n).then_some(()),
    );
    std::thread::sleep(Duration::from_millis(300));
    scheduled(s)
}

/// Moves the node's clock; the scheduler wakes and looks again.
pub fn advance(s: &TestServer, by: Duration) {
    s.node.clock.advance(by);
}

/// Runs `aws <service> <args>` against the node; Ok(parsed stdout) or Err(stderr).
pub fn aws(url: &str, service: &str, args: &[&str]) -> Result<Value, String> {
    crate::aws_cli::run_aws(url, "x", service, args)
}

/// Runs a Python script with boto3 clients `events` and `scheduler` bound to
/// the node; the script prints one JSON document.
pub fn boto3(url: &str, script: &str) -> Value {
    let prelude = r#"
import json, os, sys
import boto3, botocore
def make(service):
    return boto3.client(service, endpoint_url=os.environ["BUSBAR_URL"], region_name="us-east-1",
        aws_access_key_id="x", aws_secret_access_key="x",
        config=botocore.config.Config(retries={"max_attempts": 1}))
events = make("events")
scheduler = make("scheduler")
def error(call):
    try:
        call()
        return None
    except botocore.exceptions.ClientError as e:
        return {"code": e.response["Error"]["Code"], "message": e.response["Error"]["Message"]}
"#;
    let out = isolated(venv_bin("python"), "x")
        .env("BUSBAR_URL", url)
        .arg("-c")
        .arg(format!("{prelude}\n{script}"))
        .output()
        .expect("running python");
    let text = stdout(&out);
    assert!(
        out.status.success(),
        "boto3 script failed:\n{}\n{text}",
        stderr(&out)
    );
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// Seconds between two RFC 3339 times.
pub fn secs_between(a: &Value, b: &Value) -> i64 {
    let t = |v: &Value| {
        time::OffsetDateTime::parse(
            v.as_str().unwrap(),
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap()
        .unix_timestamp()
    };
    t(b) - t(a)
}
