//! `busbar replay`: publish archived events of a time range again (`/v1/replays`).

use super::client::{Client, ConnectArgs, Error, field};
use super::output::{Table, cell, print_json, print_str, truncate};
use clap::{Args, Subcommand};
use reqwest::StatusCode;
use serde_json::{Map, Value, json};
use std::process::ExitCode;
use std::time::Duration;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

const EXAMPLES: &str = "\
Examples:
  busbar replay start fix-42 --since 2h --until now --rule big-orders --wait
  busbar replay start all-of-may --since 2026-05-01T00:00:00Z --until 2026-05-31T23:59:59Z
  busbar replay status
  busbar replay status fix-42 --wait

Times are RFC 3339 (2026-05-01T12:00:00Z), `now`, or an age such as 90s, 15m,
2h or 7d (that long ago). The range is inclusive and applies to when busbar
received each event. Replayed events carry `replay-name` and are not archived
again. With --wait the exit status is 1 if the replay failed.";

/// How often `--wait` asks for progress.
const POLL: Duration = Duration::from_millis(500);

#[derive(Args, Debug)]
#[command(after_help = EXAMPLES)]
pub struct ReplayArgs {
    #[command(subcommand)]
    command: ReplayCommand,
    #[command(flatten)]
    connect: ConnectArgs,
}

#[derive(Subcommand, Debug)]
enum ReplayCommand {
    /// Start a replay of archived events.
    Start {
        /// A name for the replay (letters, digits, `.`, `-`, `_`); unique on the node.
        name: String,
        /// Start of the range: RFC 3339, `now`, or an age like 2h.
        #[arg(long, value_name = "TIME")]
        since: String,
        /// End of the range (inclusive): RFC 3339, `now`, or an age like 5m.
        #[arg(long, value_name = "TIME")]
        until: String,
        /// Deliver only to this rule (repeat for several) [default: every rule of the bus].
        #[arg(long = "rule", value_name = "RULE")]
        rules: Vec<String>,
        /// The bus whose archived events are replayed [default: default].
        #[arg(long)]
        bus: Option<String>,
        /// Wait until the replay has finished, then print its outcome.
        #[arg(long)]
        wait: bool,
        /// Print the node's JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show one replay, or all of them.
    Status {
        name: Option<String>,
        /// Poll until the replay (or, without NAME, every replay) has finished.
        #[arg(long)]
        wait: bool,
        /// Print the node's JSON.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(args: ReplayArgs) -> Result<ExitCode, Error> {
    match args.command {
        ReplayCommand::Start {
            name,
            since,
            until,
            rules,
            bus,
            wait,
            json,
        } => {
            let now = OffsetDateTime::now_utc();
            let mut body = Map::new();
            body.insert("name".into(), json!(name));
            body.insert("since".into(), json!(parse_when("--since", &since, now)?));
            body.insert("until".into(), json!(parse_when("--until", &until, now)?));
            if let Some(b) = bus {
                body.insert("bus".into(), json!(b));
            }
            if !rules.is_empty() {
                body.insert("rules".into(), json!(rules));
            }
            let client = Client::new(&args.connect)?;
            let status = client
                .post(&["v1", "replays"], &Value::Object(body))
                .map_err(|e| {
                    e.hint_on(
                        StatusCode::CONFLICT,
                        "replay names are unique; pick another name",
                    )
                })?;
            if !wait {
                if json {
                    print_json(&status);
                } else {
                    println!("started {}", summary(&status));
                }
                return Ok(ExitCode::SUCCESS);
            }
            if !json {
                eprintln!("started {}", summary(&status));
            }
            wait_for(&client, &name, json)
        }
        ReplayCommand::Status { name, wait, json } => {
            let client = Client::new(&args.connect)?;
            match (name, wait) {
                (Some(name), true) => wait_for(&client, &name, json),
                (Some(name), false) => {
                    let status = get_one(&client, &name)?;
                    if json {
                        print_json(&status);
                    } else {
                        println!("{}", summary(&status));
                    }
                    Ok(ExitCode::SUCCESS)
                }
                (None, wait) => {
                    let mut answer = get_all(&client)?;
                    while wait && replays(&answer)?.iter().any(is_running) {
                        std::thread::sleep(POLL);
                        answer = get_all(&client)?;
                    }
                    if json {
                        print_json(&answer);
                        return Ok(ExitCode::SUCCESS);
                    }
                    let list = replays(&answer)?;
                    if list.is_empty() {
                        eprintln!("no replays on this node yet");
                    } else {
                        print_str(&table(list).render());
                    }
                    let failed = list.iter().any(|r| state(r) == "failed");
                    Ok(if wait && failed {
                        ExitCode::FAILURE
                    } else {
                        ExitCode::SUCCESS
                    })
                }
            }
        }
    }
}

fn get_one(client: &Client, name: &str) -> Result<Value, Error> {
    client.get(&["v1", "replays", name], &[]).map_err(|e| {
        e.hint_on(
            StatusCode::NOT_FOUND,
            "`busbar replay status` lists the replays there are",
        )
    })
}

fn get_all(client: &Client) -> Result<Value, Error> {
    client.get(&["v1", "replays"], &[])
}

fn replays(answer: &Value) -> Result<&[Value], Error> {
    field(answer, "replays", "GET /v1/replays")?
        .as_array()
        .map(Vec::as_slice)
        .ok_or_else(|| Error::Protocol("\"replays\" is not an array".into()))
}

fn state(r: &Value) -> &str {
    r.get("state").and_then(Value::as_str).unwrap_or("unknown")
}

fn is_running(r: &Value) -> bool {
    state(r) == "running"
}

fn wait_for(client: &Client, name: &str, json: bool) -> Result<ExitCode, Error> {
    let mut status = get_one(client, name)?;
    while is_running(&status) {
        std::thread::sleep(POLL);
        status = get_one(client, name)?;
    }
    if json {
        print_json(&status);
    } else {
        println!("{}", summary(&status));
    }
    Ok(if state(&status) == "failed" {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// One line: `replay NAME: STATE, N replayed, M failed (bus B, SINCE .. UNTIL, RULES)`.
fn summary(r: &Value) -> String {
    let rules = match r.get("rules").and_then(Value::as_array) {
        Some(rs) if !rs.is_empty() => {
            let names: Vec<String> = rs.iter().map(|v| cell(Some(v))).collect();
            format!("rules {}", names.join(","))
        }
        _ => "every rule".into(),
    };
    let mut text = format!(
        "replay {}: {}, {} replayed, {} failed (bus {}, {} .. {}, {rules})",
        cell(r.get("name")),
        state(r),
        cell(r.get("replayed")),
        cell(r.get("failed")),
        cell(r.get("bus")),
        cell(r.get("since")),
        cell(r.get("until")),
    );
    if let Some(e) = r.get("error").and_then(Value::as_str) {
        text.push_str(&format!(": {e}"));
    }
    text
}

fn table(list: &[Value]) -> Table {
    let mut t = Table::new(&[
        "NAME", "BUS", "STATE", "REPLAYED", "FAILED", "SINCE", "UNTIL", "STARTED", "FINISHED",
        "ERROR",
    ]);
    for r in list {
        t.row(vec![
            cell(r.get("name")),
            cell(r.get("bus")),
            state(r).to_string(),
            cell(r.get("replayed")),
            cell(r.get("failed")),
            cell(r.get("since")),
            cell(r.get("until")),
            cell(r.get("started_at")),
            cell(r.get("finished_at")),
            truncate(&cell(r.get("error")), 50),
        ]);
    }
    t
}

/// RFC 3339 as given, `now`, or an age (`90s`, `15m`, `2h`, `7d`) before `now`.
/// Ages are written out with milliseconds so `--until now` includes events
/// received earlier in the current second.
pub fn parse_when(flag: &str, text: &str, now: OffsetDateTime) -> Result<String, Error> {
    let text = text.trim();
    let format = |t: OffsetDateTime| {
        let t = t
            .replace_nanosecond(t.millisecond() as u32 * 1_000_000)
            .unwrap_or(t);
        t.format(&Rfc3339).unwrap_or_default()
    };
    if text.eq_ignore_ascii_case("now") {
        return Ok(format(now));
    }
    if let Ok(t) = OffsetDateTime::parse(text, &Rfc3339) {
        return Ok(t.format(&Rfc3339).unwrap_or_else(|_| text.to_string()));
    }
    let bad = || {
        Error::input(format!(
            "{flag} {text:?} is not a time: use RFC 3339 (2026-05-01T12:00:00Z), `now`, or an age like 90s, 15m, 2h, 7d"
        ))
    };
    let split = text.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (digits, unit) = text.split_at(split);
    let n: i64 = digits.parse().map_err(|_| bad())?;
    let seconds = match unit.trim() {
        "s" => n,
        "m" => n.checked_mul(60).ok_or_else(bad)?,
        "h" => n.checked_mul(3600).ok_or_else(bad)?,
        "d" => n.checked_mul(86_400).ok_or_else(bad)?,
        _ => return Err(bad()),
    };
    let t = now
        .checked_sub(time::Duration::seconds(seconds))
        .ok_or_else(bad)?;
    Ok(format(t))
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn times_are_rfc3339_now_or_an_age() {
        let now = datetime!(2026-05-01 12:00:00.250_333 UTC);
        assert_eq!(
            parse_when("--until", "now", now).unwrap(),
            "2026-05-01T12:00:00.25Z"
        );
        assert_eq!(
            parse_when("--since", "2h", now).unwrap(),
            "2026-05-01T10:00:00.25Z"
        );
        assert_eq!(
            parse_when("--since", "7d", now).unwrap(),
            "2026-04-24T12:00:00.25Z"
        );
        assert_eq!(
            parse_when("--since", "90s", now).unwrap(),
            "2026-05-01T11:58:30.25Z"
        );
        assert_eq!(
            parse_when("--since", "2026-04-01T00:00:00+02:00", now).unwrap(),
            "2026-04-01T00:00:00+02:00"
        );
        let e = parse_when("--since", "yesterday", now).unwrap_err();
        assert!(matches!(e, Error::Input(_)));
        assert!(
            e.to_string()
                .starts_with("--since \"yesterday\" is not a time"),
            "{e}"
        );
        assert!(parse_when("--since", "5w", now).is_err());
        assert!(parse_when("--since", "h", now).is_err());
    }

    #[test]
    fn summary_reads_the_status() {
        let s = json!({"name": "fix", "bus": "default", "since": "a", "until": "b",
            "rules": ["big"], "state": "failed", "replayed": 3, "failed": 1,
            "started_at": "t", "error": "store error: disk full"});
        assert_eq!(
            summary(&s),
            "replay fix: failed, 3 replayed, 1 failed (bus default, a .. b, rules big): store error: disk full"
        );
    }
}
