//! `busbar put`: publish events to a node (`POST /events`).

use super::client::{Client, ConnectArgs, Error, json_arg};
use super::output::{print_json, print_str};
use clap::Args;
use reqwest::{Method, StatusCode};
use serde_json::{Map, Value};
use std::path::PathBuf;
use std::process::ExitCode;

const EXAMPLES: &str = "\
Examples:
  busbar put --source shop.orders --detail-type OrderPlaced --detail '{\"order\": 42}'
  busbar put --source shop.orders --detail-type OrderPlaced --detail @order.json --bus orders
  busbar put @events.json              one event object or an array of them
  cat events.json | busbar put @-

Each accepted event's id is printed on stdout, one per line, in input order;
each refused event is named on stderr with the reason. The exit status is 1
when any event was refused.";

#[derive(Args, Debug)]
#[command(after_help = EXAMPLES)]
pub struct PutArgs {
    /// Events in busbar's native shape: JSON text or @FILE (@- for stdin); one object or an array.
    #[arg(value_name = "EVENTS", conflicts_with_all = ["file", "source", "detail_type", "detail", "resources"])]
    events: Option<String>,
    /// Read the events from this file (the same as `@FILE`).
    #[arg(long, value_name = "PATH", conflicts_with_all = ["source", "detail_type", "detail", "resources"])]
    file: Option<PathBuf>,
    /// The event's source, e.g. `shop.orders`.
    #[arg(long, required_unless_present_any = ["events", "file"])]
    source: Option<String>,
    /// The event's detail-type, e.g. `OrderPlaced`.
    #[arg(long, value_name = "TYPE", required_unless_present_any = ["events", "file"])]
    detail_type: Option<String>,
    /// The event's detail: a JSON object, or @FILE [default: {}].
    #[arg(long, value_name = "JSON|@FILE")]
    detail: Option<String>,
    /// Comma-separated resource ARNs or names.
    #[arg(long, value_name = "A,B", value_delimiter = ',')]
    resources: Vec<String>,
    /// The bus to publish to [default: default]. With EVENTS, applies to events that name none.
    #[arg(long)]
    bus: Option<String>,
    /// Print the node's answer as JSON instead of the ids.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    connect: ConnectArgs,
}

pub fn run(args: PutArgs) -> Result<ExitCode, Error> {
    let events = events_of(&args)?;
    let client = Client::new(&args.connect)?;
    let body = Value::Array(events.clone());
    let (status, answer) = client.call_raw(Method::POST, &["events"], &[], Some(&body))?;
    // Every entry throttled is a 429 that still lists the entries: report them one by one.
    let has_entries = answer.get("entries").is_some_and(Value::is_array);
    let throttled_entries = status == StatusCode::TOO_MANY_REQUESTS && has_entries;
    if !status.is_success() && !throttled_entries {
        return Err(client.api_error(status, &answer).hint_on(
            StatusCode::UNAUTHORIZED,
            "publishing needs the publish or admin token (--token or BUSBAR_TOKEN)",
        ));
    }
    let entries = answer
        .get("entries")
        .and_then(Value::as_array)
        .ok_or_else(|| {
            Error::Protocol(format!(
                "the node at {} answered POST /events without an \"entries\" list",
                client.base()
            ))
        })?;
    if entries.len() != events.len() {
        return Err(Error::Protocol(format!(
            "sent {} events but the node answered {} entries",
            events.len(),
            entries.len()
        )));
    }
    if args.json {
        print_json(&answer);
    }
    let report = report(&events, entries);
    if !args.json {
        print_str(&report.stdout);
    }
    for line in &report.stderr {
        eprintln!("busbar: {line}");
    }
    Ok(if report.failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// The events to send, built from the flags or read from EVENTS / --file.
fn events_of(args: &PutArgs) -> Result<Vec<Value>, Error> {
    let given = match (&args.events, &args.file) {
        (Some(text), _) => Some(("EVENTS", json_arg("EVENTS", text)?)),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| Error::input(format!("cannot read --file {}: {e}", path.display())))?;
            let value = serde_json::from_str(&text).map_err(|e| {
                Error::input(format!("--file {} is not valid JSON: {e}", path.display()))
            })?;
            Some(("--file", value))
        }
        (None, None) => None,
    };
    let Some((origin, value)) = given else {
        return Ok(vec![single_event(args)?]);
    };
    let mut events = match value {
        Value::Array(items) => items,
        object @ Value::Object(_) => vec![object],
        other => {
            return Err(Error::input(format!(
                "{origin} must hold an event object or an array of them, got {}",
                crate::event::json_kind(&other)
            )));
        }
    };
    if events.is_empty() {
        return Err(Error::input(format!("{origin} holds no events")));
    }
    for (i, e) in events.iter_mut().enumerate() {
        let Value::Object(map) = e else {
            return Err(Error::input(format!(
                "{origin}: event {} must be a JSON object, got {}",
                i + 1,
                crate::event::json_kind(e)
            )));
        };
        if let Some(bus) = &args.bus
            && !["event-bus-name", "EventBusName", "bus"]
                .iter()
                .any(|k| map.contains_key(*k))
        {
            map.insert("event-bus-name".into(), Value::String(bus.clone()));
        }
    }
    Ok(events)
}

fn single_event(args: &PutArgs) -> Result<Value, Error> {
    let detail = match &args.detail {
        Some(d) => json_arg("--detail", d)?,
        None => Value::Object(Map::new()),
    };
    if !detail.is_object() {
        return Err(Error::input(format!(
            "--detail must be a JSON object, got {}",
            crate::event::json_kind(&detail)
        )));
    }
    let mut event = Map::new();
    let text = |s: &Option<String>| Value::String(s.clone().unwrap_or_default());
    event.insert("source".into(), text(&args.source));
    event.insert("detail-type".into(), text(&args.detail_type));
    event.insert("detail".into(), detail);
    if !args.resources.is_empty() {
        event.insert(
            "resources".into(),
            Value::Array(args.resources.iter().cloned().map(Value::String).collect()),
        );
    }
    if let Some(bus) = &args.bus {
        event.insert("event-bus-name".into(), Value::String(bus.clone()));
    }
    Ok(Value::Object(event))
}

struct Report {
    stdout: String,
    stderr: Vec<String>,
    failed: usize,
}

/// Ids on stdout (so `id=$(busbar put ...)` works), refusals on stderr naming
/// the entry by its position and its source/detail-type.
fn report(events: &[Value], entries: &[Value]) -> Report {
    let mut out = Report {
        stdout: String::new(),
        stderr: Vec::new(),
        failed: 0,
    };
    let n = entries.len();
    for (i, (event, entry)) in events.iter().zip(entries).enumerate() {
        if let Some(id) = entry.get("id").and_then(Value::as_str) {
            out.stdout.push_str(id);
            out.stdout.push('\n');
            continue;
        }
        out.failed += 1;
        let code = entry
            .get("error_code")
            .and_then(Value::as_str)
            .unwrap_or("Error");
        let message = entry
            .get("error_message")
            .and_then(Value::as_str)
            .unwrap_or("refused without a reason");
        let what = |k: &[&str]| {
            k.iter()
                .find_map(|k| event.get(*k).and_then(Value::as_str))
                .unwrap_or("?")
                .to_string()
        };
        let name = format!(
            "{}/{}",
            what(&["source", "Source"]),
            what(&["detail-type", "detailType", "DetailType"])
        );
        out.stderr.push(if n == 1 {
            format!("event {name} was refused: {code}: {message}")
        } else {
            format!(
                "event {} of {n} ({name}) was refused: {code}: {message}",
                i + 1
            )
        });
    }
    if out.failed > 0 && n > 1 {
        out.stderr
            .push(format!("{} of {n} events were refused", out.failed));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn args(extra: &[&str]) -> PutArgs {
        use clap::Parser;
        #[derive(Parser)]
        struct Wrap {
            #[command(flatten)]
            put: PutArgs,
        }
        let mut argv = vec!["put"];
        argv.extend_from_slice(extra);
        Wrap::try_parse_from(argv).unwrap().put
    }

    #[test]
    fn flags_build_one_native_event() {
        let a = args(&[
            "--source",
            "shop",
            "--detail-type",
            "OrderPlaced",
            "--detail",
            r#"{"n": 1}"#,
            "--resources",
            "a,b",
            "--bus",
            "orders",
        ]);
        assert_eq!(
            events_of(&a).unwrap(),
            vec![
                json!({"source": "shop", "detail-type": "OrderPlaced", "detail": {"n": 1},
                "resources": ["a", "b"], "event-bus-name": "orders"})
            ]
        );
    }

    #[test]
    fn detail_defaults_to_an_empty_object_and_must_be_one() {
        let a = args(&["--source", "s", "--detail-type", "t"]);
        assert_eq!(events_of(&a).unwrap()[0]["detail"], json!({}));
        let a = args(&["--source", "s", "--detail-type", "t", "--detail", "[1]"]);
        let e = events_of(&a).unwrap_err().to_string();
        assert_eq!(e, "--detail must be a JSON object, got an array");
    }

    #[test]
    fn events_text_is_one_or_many_and_bus_fills_gaps() {
        let a = args(&[r#"{"source": "s", "detail-type": "t", "detail": {}}"#]);
        assert_eq!(events_of(&a).unwrap().len(), 1);
        let a = args(&[
            r#"[{"source": "a"}, {"source": "b", "bus": "x"}]"#,
            "--bus",
            "orders",
        ]);
        let events = events_of(&a).unwrap();
        assert_eq!(events[0]["event-bus-name"], "orders");
        assert!(events[1].get("event-bus-name").is_none());
        let e = events_of(&args(&["[1]"])).unwrap_err().to_string();
        assert_eq!(e, "EVENTS: event 1 must be a JSON object, got a number");
        let e = events_of(&args(&["[]"])).unwrap_err().to_string();
        assert_eq!(e, "EVENTS holds no events");
    }

    #[test]
    fn report_keeps_ids_on_stdout_and_names_refusals() {
        let events = vec![
            json!({"source": "a", "detail-type": "A"}),
            json!({"source": "b", "detail-type": "B"}),
        ];
        let entries = vec![
            json!({"id": "id-1"}),
            json!({"error_code": "InvalidArgument", "error_message": "detail is required"}),
        ];
        let r = report(&events, &entries);
        assert_eq!(r.stdout, "id-1\n");
        assert_eq!(r.failed, 1);
        assert_eq!(
            r.stderr,
            vec![
                "event 2 of 2 (b/B) was refused: InvalidArgument: detail is required".to_string(),
                "1 of 2 events were refused".to_string(),
            ]
        );
    }
}
