//! Scheduled rules (`ScheduleExpression`) from the awscli, boto3, `/v1` and the
//! config file: each tick reaches the targets once, as EventBridge's
//! `Scheduled Event`, shaped by the target's Input or transformer.

use super::*;

const MIN: Duration = Duration::from_secs(60);

#[test]
fn awscli_rate_rule_fires_each_tick_once_and_disable_stops_it() {
    let s = node_with_echo("");
    let aws = |args: &[&str]| {
        super::aws(&s.url, "events", args)
            .unwrap_or_else(|e| panic!("aws events {}: {e}", args.join(" ")))
    };
    let put = aws(&[
        "put-rule",
        "--name",
        "tick",
        "--schedule-expression",
        "rate(5 minutes)",
    ]);
    let arn = put["RuleArn"].as_str().unwrap().to_string();
    assert_eq!(arn, "arn:aws:events:us-east-1:000000000000:rule/tick");
    let targets = json!([envelope_target("shape"),
        {"Id": "fixed", "Arn": "busbar:plugin:echo", "Input": "{\"target\": \"fixed\", \"time\": \"constant\"}"}]);
    let put = aws(&[
        "put-targets",
        "--rule",
        "tick",
        "--targets",
        &targets.to_string(),
    ]);
    assert_eq!(put["FailedEntryCount"], 0, "{put}");
    let rule = aws(&["describe-rule", "--name", "tick"]);
    assert_eq!(rule["ScheduleExpression"], "rate(5 minutes)");
    assert!(rule.get("EventPattern").is_none(), "{rule}");

    std::thread::sleep(Duration::from_millis(300));
    assert!(
        scheduled(&s).is_empty(),
        "nothing fires before the first period"
    );
    advance(&s, 5 * MIN);
    let first = fired(&s, "shape", 1);
    assert_eq!(first.len(), 1, "{first:?}");
    let e = &first[0];
    assert_eq!(e["detail-type"], "Scheduled Event");
    assert_eq!(e["resources"], json!([arn]));
    assert_eq!(e["detail"], json!({}));
    assert_eq!(e["region"], "us-east-1");
    // What the plugin received: the same envelope, through the transformer.
    let seen = &echoed(&s, "shape")[0];
    assert_eq!(seen["source"], "aws.events");
    assert_eq!(seen["dt"], "Scheduled Event");
    assert_eq!(seen["res"], json!([arn]));
    assert_eq!(seen["detail"], json!({}));
    assert_eq!(seen["time"], e["time"]);
    assert_eq!(seen["id"], e["id"]);
    // The constant Input replaced the detail for the other target.
    assert_eq!(echoed(&s, "fixed")[0]["time"], "constant");

    advance(&s, 5 * MIN);
    let two = fired(&s, "shape", 2);
    assert_eq!(two.len(), 2, "one event per tick: {two:?}");
    assert_eq!(
        secs_between(&two[0]["time"], &two[1]["time"]),
        300,
        "each event carries its scheduled time"
    );

    aws(&["disable-rule", "--name", "tick"]);
    advance(&s, 15 * MIN);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(scheduled(&s).len(), 2, "a disabled rule does not fire");
    aws(&["enable-rule", "--name", "tick"]);
    std::thread::sleep(Duration::from_millis(300));
    advance(&s, 5 * MIN);
    let three = fired(&s, "shape", 3);
    assert_eq!(three.len(), 3, "{three:?}");
    // Enabling started a new clock: the tick is five minutes after the enable
    // (15 minutes of moved clock and the seconds the awscli took after the
    // second tick), not a catch-up of the ticks the disabled rule skipped.
    let gap = secs_between(&two[1]["time"], &three[2]["time"]);
    assert!((20 * 60..21 * 60).contains(&gap), "{gap} s: {three:?}");

    for (args, want) in [
        (
            vec![
                "put-rule",
                "--name",
                "bad",
                "--schedule-expression",
                "rate(1 minutes)",
            ],
            "Parameter ScheduleExpression is not valid",
        ),
        (
            vec![
                "put-rule",
                "--name",
                "bad",
                "--schedule-expression",
                "cron(0 12 * * * *)",
            ],
            "Parameter ScheduleExpression is not valid",
        ),
        (
            vec![
                "put-rule",
                "--name",
                "bad",
                "--schedule-expression",
                "rate(5 minutes)",
                "--event-pattern",
                "{\"source\": [\"x\"]}",
            ],
            "EventPattern and ScheduleExpression",
        ),
        (
            vec!["put-rule", "--name", "bad"],
            "EventPattern or ScheduleExpression must be specified",
        ),
    ] {
        let err = super::aws(&s.url, "events", &args).expect_err("refused");
        assert!(
            err.contains("ValidationException") && err.contains(want),
            "{args:?}: {err}"
        );
    }
    aws(&["create-event-bus", "--name", "orders"]);
    let err = super::aws(
        &s.url,
        "events",
        &[
            "put-rule",
            "--name",
            "bad",
            "--event-bus-name",
            "orders",
            "--schedule-expression",
            "rate(5 minutes)",
        ],
    )
    .expect_err("refused");
    assert!(err.contains("only on the default event bus"), "{err}");
}

#[test]
fn boto3_cron_rule_fires_on_the_minute_in_utc() {
    let s = node_with_echo("");
    let target = envelope_target("cron");
    let out = boto3(
        &s.url,
        &format!(
            r#"
arn = events.put_rule(Name="hourly", ScheduleExpression="cron(0 * * * ? *)")["RuleArn"]
put = events.put_targets(Rule="hourly", Targets=[json.loads({target:?})])
bad = error(lambda: events.put_rule(Name="bad", ScheduleExpression="cron(0 25 * * ? *)"))
print(json.dumps({{"arn": arn, "failed": put["FailedEntryCount"], "bad": bad,
    "described": events.describe_rule(Name="hourly")["ScheduleExpression"]}}))
"#,
            target = target.to_string()
        ),
    );
    assert_eq!(out["failed"], 0, "{out}");
    assert_eq!(out["described"], "cron(0 * * * ? *)");
    assert_eq!(out["bad"]["code"], "ValidationException", "{out}");
    assert!(
        out["bad"]["message"]
            .as_str()
            .unwrap()
            .starts_with("Parameter ScheduleExpression is not valid"),
        "{out}"
    );
    std::thread::sleep(Duration::from_millis(300));
    advance(&s, 61 * MIN);
    let one = fired(&s, "cron", 1);
    assert_eq!(one.len(), 1, "{one:?}");
    let time = one[0]["time"].as_str().unwrap();
    assert!(time.ends_with(":00:00Z"), "on the hour, UTC: {time}");
    assert_eq!(one[0]["resources"], json!([out["arn"]]));
    advance(&s, 60 * MIN);
    let two = fired(&s, "cron", 2);
    assert_eq!(two.len(), 2);
    assert_eq!(secs_between(&two[0]["time"], &two[1]["time"]), 3600);
}

#[test]
fn config_file_and_v1_rules_take_a_schedule() {
    let toml = r#"
[[rules]]
name = "from-config"
schedule = "rate(1 hour)"
[[rules.targets]]
id = "config"
plugin = "echo"
input_transformer = { input_paths_map = { time = "$.time" }, input_template = '{"target": "config", "time": <time>}' }
"#;
    let s = node_with_echo(toml);
    let put = |name: &str, body: Value| {
        let r = s
            .client()
            .put(format!("{}/v1/rules/default/{name}", s.url))
            .json(&body)
            .send()
            .unwrap();
        (r.status().as_u16(), r.text().unwrap())
    };
    let (status, text) = put(
        "from-api",
        json!({"schedule": "rate(2 hours)", "targets": [
            {"id": "api", "plugin": "echo", "input": "{\"target\": \"api\", \"time\": \"x\"}"}]}),
    );
    assert_eq!(status, 200, "{text}");
    let rule = s.get("/v1/rules/default/from-api").json();
    assert_eq!(rule["schedule"], "rate(2 hours)");
    let (status, text) = put("bad", json!({"schedule": "rate(2 hour)"}));
    assert_eq!(status, 400);
    assert!(
        text.contains("Parameter ScheduleExpression is not valid"),
        "{text}"
    );

    std::thread::sleep(Duration::from_millis(300));
    advance(&s, 60 * MIN);
    eventually(
        "the config rule's first tick",
        Duration::from_secs(30),
        || (echoed(&s, "config").len() == 1).then_some(()),
    );
    advance(&s, 60 * MIN);
    eventually("both rules' ticks", Duration::from_secs(30), || {
        (echoed(&s, "config").len() == 2 && echoed(&s, "api").len() == 1).then_some(())
    });
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(scheduled(&s).len(), 3, "{:?}", scheduled(&s));

    // Visible: /v1/schedules, `busbar schedules` and the Prometheus counters.
    let listed = s.get("/v1/schedules?prefix=rule/").json();
    let rows = listed["schedules"].as_array().unwrap();
    let ids: Vec<&str> = rows.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["rule/default/from-api", "rule/default/from-config"]);
    assert_eq!(rows[1]["fires"], 2);
    assert_eq!(rows[1]["last_outcome"], "ok");
    assert_eq!(
        secs_between(&rows[1]["last_fire"], &rows[1]["next_fire"]),
        3600,
        "{listed}"
    );
    let out = std::process::Command::new(crate::harness::busbar_bin())
        .args(["schedules", "--url", &s.url])
        .output()
        .unwrap();
    let text = stdout(&out);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(text.starts_with("ID"), "{text}");
    assert!(
        text.contains("rule/default/from-config  rate(1 hour)"),
        "{text}"
    );
    // The recorder is the process's, shared by every test node: count only its presence.
    let metrics = s.get("/metrics").text;
    assert!(
        metrics.contains("busbar_schedule_fires_total{outcome=\"ok\"}"),
        "{metrics}"
    );
}

#[test]
fn the_example_configs_hourly_canary_pays_through_payment_check() {
    let text =
        std::fs::read_to_string(crate::harness::repo_root().join("examples/busbar.toml")).unwrap();
    let s = TestServer::start_toml(&text, |_| {});
    std::fs::copy(
        wasm("payment-check"),
        s.plugins().join("payment-check.wasm"),
    )
    .unwrap();
    let canaries = || {
        s.archived()
            .into_iter()
            .filter(|e| e["source"] == "payment-service" && e["detail"]["id"] == "canary")
            .collect::<Vec<Value>>()
    };
    std::thread::sleep(Duration::from_millis(300));
    advance(&s, 61 * MIN);
    eventually("the canary payment", Duration::from_secs(60), || {
        (canaries().len() == 1).then_some(())
    });
    let paid = &canaries()[0];
    assert_eq!(paid["detail-type"], "PaymentSucceeded");
    assert_eq!(paid["detail"]["amount"], 1);
}
