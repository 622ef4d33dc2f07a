//! The EventBridge Scheduler API through `aws scheduler` and boto3's
//! `scheduler` client: one-time schedules in a time zone, deleted after their
//! fire; rates with a flexible window calling a plugin; groups and paging.

use super::*;
use chrono::TimeZone;

const MIN: Duration = Duration::from_secs(60);

/// A rule that sends the schedule's bus events to the echo fixture.
const FORWARD: &str = r#"
[[rules]]
name = "reminders"
pattern = '{"source": ["reminders"]}'
[[rules.targets]]
id = "bus"
plugin = "echo"
input_transformer = { input_paths_map = { time = "$.time", res = "$.resources", detail = "$.detail", dt = "$.detail-type" }, input_template = '{"target": "bus", "time": <time>, "res": <res>, "detail": <detail>, "dt": <dt>}' }
"#;

#[test]
fn awscli_one_time_schedule_in_a_time_zone_fires_once_and_is_deleted() {
    let s = node_with_echo(FORWARD);
    let cli = |args: &[&str]| {
        aws(&s.url, "scheduler", args)
            .unwrap_or_else(|e| panic!("aws scheduler {}: {e}", args.join(" ")))
    };
    cli(&["create-schedule-group", "--name", "reminders"]);
    // An hour from now on the node's clock, written in New York's wall-clock time.
    let ny: chrono_tz::Tz = "America/New_York".parse().unwrap();
    let due_ms = (s.node.clock.now_ms() / 1000 + 3600) * 1000;
    let local = ny.timestamp_millis_opt(due_ms).unwrap().naive_local();
    let at = format!("at({})", local.format("%Y-%m-%dT%H:%M:%S"));
    let target = json!({
        "Arn": "arn:aws:events:us-east-1:000000000000:event-bus/default",
        "RoleArn": "arn:aws:iam::000000000000:role/scheduler",
        "Input": "{\"note\": \"call the customer\"}",
        "EventBridgeParameters": {"DetailType": "Reminder", "Source": "reminders"}
    });
    let made = cli(&[
        "create-schedule",
        "--name",
        "call-back",
        "--group-name",
        "reminders",
        "--schedule-expression",
        &at,
        "--schedule-expression-timezone",
        "America/New_York",
        "--flexible-time-window",
        "Mode=OFF",
        "--action-after-completion",
        "DELETE",
        "--target",
        &target.to_string(),
    ]);
    assert_eq!(
        made["ScheduleArn"],
        "arn:aws:scheduler:us-east-1:000000000000:schedule/reminders/call-back"
    );
    let got = cli(&[
        "get-schedule",
        "--name",
        "call-back",
        "--group-name",
        "reminders",
    ]);
    assert_eq!(got["ScheduleExpression"], at.as_str());
    assert_eq!(got["ScheduleExpressionTimezone"], "America/New_York");
    assert_eq!(
        got["Target"]["EventBridgeParameters"]["Source"],
        "reminders"
    );
    let err = aws(
        &s.url,
        "scheduler",
        &[
            "create-schedule",
            "--name",
            "call-back",
            "--group-name",
            "reminders",
            "--schedule-expression",
            &at,
            "--flexible-time-window",
            "Mode=OFF",
            "--target",
            &target.to_string(),
        ],
    )
    .expect_err("a second schedule of the same name");
    assert!(err.contains("ConflictException"), "{err}");

    advance(&s, 59 * MIN);
    std::thread::sleep(Duration::from_millis(400));
    assert!(echoed(&s, "bus").is_empty(), "not before its time");
    advance(&s, 2 * MIN);
    eventually("the reminder", Duration::from_secs(30), || {
        (echoed(&s, "bus").len() == 1).then_some(())
    });
    let seen = &echoed(&s, "bus")[0];
    assert_eq!(
        seen["time"],
        busbar::schedule::fire::event_time(due_ms).as_str()
    );
    assert_eq!(seen["detail"], json!({"note": "call the customer"}));
    assert_eq!(seen["dt"], "Reminder");
    assert_eq!(seen["res"], json!([made["ScheduleArn"]]));
    eventually(
        "the schedule deleted after completion",
        Duration::from_secs(30),
        || {
            aws(
                &s.url,
                "scheduler",
                &[
                    "get-schedule",
                    "--name",
                    "call-back",
                    "--group-name",
                    "reminders",
                ],
            )
            .err()
            .filter(|e| e.contains("ResourceNotFoundException"))
        },
    );
    advance(&s, 120 * MIN);
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(echoed(&s, "bus").len(), 1, "a one-time schedule fires once");

    // Paging: the awscli follows NextToken page by page.
    for i in 0..5 {
        cli(&[
            "create-schedule",
            "--name",
            &format!("daily-{i}"),
            "--schedule-expression",
            "cron(0 9 * * ? *)",
            "--flexible-time-window",
            "Mode=OFF",
            "--state",
            "DISABLED",
            "--target",
            &target.to_string(),
        ]);
    }
    let listed = cli(&[
        "list-schedules",
        "--name-prefix",
        "daily-",
        "--page-size",
        "2",
    ]);
    let names: Vec<&str> = listed["Schedules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["Name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["daily-0", "daily-1", "daily-2", "daily-3", "daily-4"]
    );
    let err = aws(
        &s.url,
        "scheduler",
        &[
            "create-schedule",
            "--name",
            "bad",
            "--schedule-expression",
            "rate(5 seconds)",
            "--flexible-time-window",
            "Mode=OFF",
            "--target",
            &target.to_string(),
        ],
    )
    .expect_err("refused");
    assert!(
        err.contains("ValidationException") && err.contains("Invalid Schedule Expression"),
        "{err}"
    );
}

#[test]
fn boto3_rate_schedule_with_a_flexible_window_calls_a_plugin_within_it() {
    let s = node_with_echo("");
    let out = boto3(
        &s.url,
        r#"
target = {"Arn": "arn:aws:lambda:us-east-1:000000000000:function:echo",
          "RoleArn": "arn:aws:iam::000000000000:role/scheduler",
          "Input": json.dumps({"target": "plugin", "time": "from-input"}),
          "RetryPolicy": {"MaximumRetryAttempts": 3, "MaximumEventAgeInSeconds": 600}}
arn = scheduler.create_schedule(Name="poll", ScheduleExpression="rate(10 minutes)",
    FlexibleTimeWindow={"Mode": "FLEXIBLE", "MaximumWindowInMinutes": 4}, Target=target)["ScheduleArn"]
got = scheduler.get_schedule(Name="poll")
bad_zone = error(lambda: scheduler.create_schedule(Name="z", ScheduleExpression="rate(1 hour)",
    ScheduleExpressionTimezone="Mars/Olympus", FlexibleTimeWindow={"Mode": "OFF"}, Target=target))
bad_window = error(lambda: scheduler.create_schedule(Name="w", ScheduleExpression="rate(1 hour)",
    FlexibleTimeWindow={"Mode": "FLEXIBLE"}, Target=target))
missing = error(lambda: scheduler.get_schedule(Name="nope"))
for i in range(3):
    scheduler.create_schedule(Name=f"q{i}", ScheduleExpression="rate(1 day)",
        FlexibleTimeWindow={"Mode": "OFF"}, Target=target, State="DISABLED")
page = scheduler.list_schedules(NamePrefix="q", MaxResults=2)
rest = scheduler.list_schedules(NamePrefix="q", MaxResults=2, NextToken=page["NextToken"])
disabled = scheduler.list_schedules(State="DISABLED")
print(json.dumps({"arn": arn, "window": got["FlexibleTimeWindow"], "bad_zone": bad_zone,
    "bad_window": bad_window, "missing": missing,
    "pages": [[x["Name"] for x in page["Schedules"]], [x["Name"] for x in rest["Schedules"]], "NextToken" in rest],
    "disabled": len(disabled["Schedules"])}))
"#,
    );
    assert_eq!(
        out["window"],
        json!({"Mode": "FLEXIBLE", "MaximumWindowInMinutes": 4})
    );
    assert_eq!(out["bad_zone"]["code"], "ValidationException", "{out}");
    assert!(
        out["bad_zone"]["message"]
            .as_str()
            .unwrap()
            .contains("Mars/Olympus")
    );
    assert_eq!(out["bad_window"]["code"], "ValidationException", "{out}");
    assert_eq!(out["missing"]["code"], "ResourceNotFoundException", "{out}");
    assert_eq!(out["pages"], json!([["q0", "q1"], ["q2"], false]));
    assert_eq!(out["disabled"], 3);
    let echoes = || echoed(&s, "plugin");
    std::thread::sleep(Duration::from_millis(400));
    advance(&s, 9 * MIN);
    std::thread::sleep(Duration::from_millis(400));
    assert!(echoes().is_empty(), "not before the scheduled time");
    // The scheduled time plus at most the four-minute window.
    advance(&s, 5 * MIN);
    eventually("the plugin call", Duration::from_secs(30), || {
        (echoes().len() == 1).then_some(())
    });
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(echoes().len(), 1, "one call per tick");
    assert_eq!(
        echoes()[0]["time"],
        "from-input",
        "the Input is what the plugin gets"
    );
    let ticks: Vec<Value> = s
        .archived()
        .into_iter()
        .filter(|e| e["source"] == "aws.scheduler")
        .collect();
    assert_eq!(ticks.len(), 1);
    assert_eq!(ticks[0]["resources"], json!([out["arn"]]));
    assert_eq!(ticks[0]["detail-type"], "Scheduled Event");
}
