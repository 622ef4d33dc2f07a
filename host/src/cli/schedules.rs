//! `busbar schedules`: every schedule a node runs, with its next and last fire
//! and how the last one went (`GET /v1/schedules`).

use super::client::{Client, ConnectArgs, Error};
use super::output::{Table, cell, print_json, print_str, truncate};
use clap::Args;
use serde_json::Value;
use std::process::ExitCode;

const ABOUT: &str = "\
One row per schedule: scheduled rules (ID rule/BUS/NAME) and schedules of the
Scheduler API (ID schedule/GROUP/NAME). NEXT is the next scheduled time (none
once a schedule is over), LAST the scheduled time of the last fire, OUTCOME
`ok` or why its event was not published, MISSED the scheduled times that fell
while no node ran and were folded into one late fire. Disabled schedules are
not listed.";

#[derive(Args, Debug)]
#[command(after_help = ABOUT)]
pub struct SchedulesArgs {
    /// Only schedules whose id starts with this (e.g. `rule/` or `schedule/reports/`).
    #[arg(long, default_value = "")]
    prefix: String,
    /// Print the node's JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    connect: ConnectArgs,
}

pub fn run(args: SchedulesArgs) -> Result<ExitCode, Error> {
    let client = Client::new(&args.connect)?;
    let answer = client.get(&["v1", "schedules"], &[("prefix", args.prefix.clone())])?;
    if args.json {
        print_json(&answer);
        return Ok(ExitCode::SUCCESS);
    }
    let schedules = answer
        .get("schedules")
        .and_then(Value::as_array)
        .ok_or_else(|| Error::Protocol("the node's answer has no schedules list".into()))?;
    if schedules.is_empty() {
        eprintln!(
            "no schedules (a rule with `schedule = \"rate(5 minutes)\"`, or `aws scheduler create-schedule`)"
        );
        return Ok(ExitCode::SUCCESS);
    }
    print_str(&table(schedules).render());
    Ok(ExitCode::SUCCESS)
}

fn table(schedules: &[Value]) -> Table {
    let mut t = Table::new(&[
        "ID",
        "EXPRESSION",
        "ZONE",
        "NEXT",
        "LAST",
        "OUTCOME",
        "FIRES",
        "MISSED",
    ]);
    for s in schedules {
        t.row(vec![
            cell(s.get("id")),
            cell(s.get("expression")),
            cell(s.get("timezone")),
            cell(s.get("next_fire")),
            cell(s.get("last_fire")),
            truncate(&cell(s.get("last_outcome")), 50),
            cell(s.get("fires")),
            cell(s.get("missed")),
        ]);
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rows_show_next_and_last_fire() {
        let rows = [
            json!({"id": "rule/default/nightly", "expression": "cron(0 2 * * ? *)",
            "timezone": "UTC", "next_fire": "2026-12-05T02:00:00Z",
            "last_fire": "2026-12-04T02:00:00Z", "last_outcome": "ok", "fires": 3, "missed": 1}),
        ];
        let text = table(&rows).render();
        let line = text.lines().nth(1).unwrap();
        assert!(line.starts_with("rule/default/nightly"), "{text}");
        assert!(
            line.contains("2026-12-05T02:00:00Z  2026-12-04T02:00:00Z  ok"),
            "{text}"
        );
    }
}
