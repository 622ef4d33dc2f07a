//! `busbar dlq`: the dead-letter queue, where deliveries land once their retries
//! are spent (`/v1/dlq`): list, show, redrive, purge.

use super::client::{Client, ConnectArgs, Error, field};
use super::output::{Table, cell, plural, print_json, print_str, truncate};
use clap::{ArgGroup, Args, Subcommand};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::process::ExitCode;

const EXAMPLES: &str = "\
Examples:
  busbar dlq list
  busbar dlq show 17
  busbar dlq redrive 17 18         put them back in their target's queue
  busbar dlq redrive --all
  busbar dlq purge --all           deletes every dead letter, without asking

A redriven delivery starts over with a fresh retry budget and keeps its
delivery id, so a plugin that deduplicates still sees it once.";

#[derive(Args, Debug)]
#[command(after_help = EXAMPLES)]
pub struct DlqArgs {
    #[command(subcommand)]
    command: DlqCommand,
    #[command(flatten)]
    connect: ConnectArgs,
}

#[derive(Subcommand, Debug)]
enum DlqCommand {
    /// List dead letters, oldest first.
    List {
        /// Show at most this many.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Start after this dead-letter id (for paging).
        #[arg(long, value_name = "ID")]
        after: Option<u64>,
        /// Print the node's JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show one dead letter: where it was going, why it failed, and the event.
    Show {
        id: u64,
        /// Print the node's JSON.
        #[arg(long)]
        json: bool,
    },
    /// Put dead letters back in their target's queue.
    Redrive(Selection),
    /// Delete dead letters for good.
    Purge(Selection),
}

#[derive(Args, Debug)]
#[command(group(ArgGroup::new("which").required(true).multiple(false).args(["ids", "all"])))]
struct Selection {
    /// Dead-letter ids, as `busbar dlq list` shows them.
    #[arg(value_name = "ID")]
    ids: Vec<u64>,
    /// Every dead letter.
    #[arg(long)]
    all: bool,
    /// Print the node's JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(args: DlqArgs) -> Result<ExitCode, Error> {
    let client = Client::new(&args.connect)?;
    match args.command {
        DlqCommand::List { limit, after, json } => list(&client, limit, after, json),
        DlqCommand::Show { id, json } => show(&client, id, json),
        DlqCommand::Redrive(s) => redrive(&client, s),
        DlqCommand::Purge(s) => purge(&client, s),
    }
}

fn list(client: &Client, limit: usize, after: Option<u64>, json: bool) -> Result<ExitCode, Error> {
    let mut query = vec![("limit", limit.to_string())];
    if let Some(a) = after {
        query.push(("after", a.to_string()));
    }
    let answer = client.get(&["v1", "dlq"], &query)?;
    if json {
        print_json(&answer);
        return Ok(ExitCode::SUCCESS);
    }
    let letters = field(&answer, "dead_letters", "GET /v1/dlq")?
        .as_array()
        .ok_or_else(|| Error::Protocol("\"dead_letters\" is not an array".into()))?;
    if letters.is_empty() {
        eprintln!(
            "{}",
            if after.is_some() {
                "no more dead letters"
            } else {
                "the dead-letter queue is empty"
            }
        );
        return Ok(ExitCode::SUCCESS);
    }
    print_str(&table(letters).render());
    if letters.len() >= limit
        && let Some(last) = letters.last().and_then(|l| l.get("id"))
    {
        eprintln!(
            "showing {}; `busbar dlq list --after {last}` shows the next ones",
            plural(letters.len() as u64, "dead letter", "dead letters")
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn event_name(event: Option<&Value>) -> String {
    let Some(e) = event else { return "-".into() };
    format!("{} {}", cell(e.get("source")), cell(e.get("detail-type")))
}

fn table(letters: &[Value]) -> Table {
    let mut t = Table::new(&[
        "ID",
        "DEAD-LETTERED",
        "RULE/TARGET",
        "PLUGIN",
        "ATTEMPTS",
        "EVENT",
        "LAST ERROR",
    ]);
    for l in letters {
        let bus = l.get("bus").and_then(Value::as_str).unwrap_or("default");
        let route = format!("{}/{}", cell(l.get("rule")), cell(l.get("target")));
        t.row(vec![
            cell(l.get("id")),
            cell(l.get("dead_lettered_at")),
            if bus == crate::event::DEFAULT_BUS {
                route
            } else {
                format!("{bus}:{route}")
            },
            cell(l.get("plugin")),
            cell(l.get("attempts")),
            truncate(&event_name(l.get("event")), 40),
            truncate(&cell(l.get("last_error")), 60),
        ]);
    }
    t
}

fn show(client: &Client, id: u64, json: bool) -> Result<ExitCode, Error> {
    let id_text = id.to_string();
    let letter = client.get(&["v1", "dlq", &id_text], &[]).map_err(|e| {
        e.hint_on(
            StatusCode::NOT_FOUND,
            "`busbar dlq list` shows the dead letters there are",
        )
    })?;
    if json {
        print_json(&letter);
    } else {
        print_str(&describe(&letter));
    }
    Ok(ExitCode::SUCCESS)
}

fn describe(l: &Value) -> String {
    let mut out = String::new();
    let mut line = |k: &str, v: String| out.push_str(&format!("{k:<18} {v}\n"));
    line("id:", cell(l.get("id")));
    line("delivery id:", cell(l.get("delivery_id")));
    line("bus:", cell(l.get("bus")));
    line("rule:", cell(l.get("rule")));
    line("target:", cell(l.get("target")));
    line("plugin:", cell(l.get("plugin")));
    line("attempts:", cell(l.get("attempts")));
    line("first queued at:", cell(l.get("first_queued_at")));
    line("dead-lettered at:", cell(l.get("dead_lettered_at")));
    line("last error:", cell(l.get("last_error")));
    out.push_str("event:\n");
    let event = l.get("event").cloned().unwrap_or(Value::Null);
    let text = serde_json::to_string_pretty(&event).unwrap_or_else(|_| event.to_string());
    for line in text.lines() {
        out.push_str(&format!("  {line}\n"));
    }
    out
}

fn redrive(client: &Client, s: Selection) -> Result<ExitCode, Error> {
    let body = if s.all {
        json!({})
    } else {
        json!({"ids": s.ids})
    };
    let answer = client.post(&["v1", "dlq", "redrive"], &body)?;
    if s.json {
        print_json(&answer);
    }
    let n = field(&answer, "redriven", "POST /v1/dlq/redrive")?
        .as_u64()
        .unwrap_or(0);
    if !s.json {
        println!("redrove {}", plural(n, "dead letter", "dead letters"));
    }
    if !s.all && (n as usize) < s.ids.len() {
        return Err(Error::Failed(format!(
            "{} of the {} ids given were not in the dead-letter queue (`busbar dlq list` shows what is)",
            s.ids.len() - n as usize,
            s.ids.len()
        )));
    }
    Ok(ExitCode::SUCCESS)
}

fn purge(client: &Client, s: Selection) -> Result<ExitCode, Error> {
    if s.all {
        let answer = client.delete(&["v1", "dlq"])?;
        if s.json {
            print_json(&answer);
        } else {
            let n = field(&answer, "purged", "DELETE /v1/dlq")?
                .as_u64()
                .unwrap_or(0);
            println!("purged {}", plural(n, "dead letter", "dead letters"));
        }
        return Ok(ExitCode::SUCCESS);
    }
    let mut purged = 0u64;
    let mut missing = Vec::new();
    for id in &s.ids {
        match client.delete(&["v1", "dlq", &id.to_string()]) {
            // `{"purged": 0}` and 404 both mean the id was not there.
            Ok(answer) if answer.get("purged").and_then(Value::as_u64) == Some(0) => {
                missing.push(*id)
            }
            Ok(_) => purged += 1,
            Err(e) if e.status() == Some(StatusCode::NOT_FOUND) => missing.push(*id),
            Err(e) => return Err(e),
        }
    }
    if s.json {
        print_json(&json!({"purged": purged}));
    } else {
        println!("purged {}", plural(purged, "dead letter", "dead letters"));
    }
    if !missing.is_empty() {
        let ids: Vec<String> = missing.iter().map(u64::to_string).collect();
        return Err(Error::Failed(format!(
            "no dead letter with id {} (`busbar dlq list` shows what there is)",
            ids.join(", ")
        )));
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn letter() -> Value {
        json!({
            "id": 7, "delivery_id": "d-1", "bus": "orders", "rule": "big", "target": "pay",
            "plugin": "payment-check", "attempts": 3, "last_error": "gave up after 3 attempts: boom",
            "first_queued_at": "2026-01-01T00:00:00Z", "dead_lettered_at": "2026-01-01T00:01:00Z",
            "event": {"source": "shop", "detail-type": "OrderPlaced", "detail": {"n": 1}}
        })
    }

    #[test]
    fn rows_name_the_route_and_the_event() {
        let text = table(&[letter()]).render();
        let row = text.lines().nth(1).unwrap();
        assert!(
            row.starts_with("7   2026-01-01T00:01:00Z  orders:big/pay  payment-check  3"),
            "{row}"
        );
        assert!(row.contains("shop OrderPlaced"), "{row}");
        assert!(row.ends_with("gave up after 3 attempts: boom"), "{row}");
    }

    #[test]
    fn description_includes_the_event() {
        let text = describe(&letter());
        assert!(
            text.contains("last error:        gave up after 3 attempts: boom\n"),
            "{text}"
        );
        assert!(
            text.contains("event:\n  {\n    \"source\": \"shop\",\n"),
            "{text}"
        );
    }
}
