//! `busbar tail`: watch events and deliveries as they happen (`GET /v1/tail`,
//! Server-Sent Events carrying one `TailItem` each).

use super::client::{Client, ConnectArgs, Error, json_arg};
use super::output::{Color, Style, print_str};
use clap::Args;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::process::ExitCode;
use std::time::Duration;

const ABOUT: &str = "\
One line per event as the node accepts it, with the rules it matched, then one
line per delivery attempt as it ends:

  12:00:01.204  event        4f1c…  shop.orders OrderPlaced  bus=default  -> big-orders
  12:00:01.219  ok           big-orders/payment-check  plugin=payment-check  attempt=1  3.1 ms  emitted=1  event=4f1c…
  12:00:01.230  retry        big-orders/notify  plugin=notification  attempt=1  0.8 ms  event=4f1c…  error: ...

Outcomes are ok, retry, dead-letter (retries spent: see `busbar dlq`) and
dropped (retries spent, dead-lettering off). Colour is used when stdout is a
terminal, unless --no-color or NO_COLOR is set. If the stream drops, tail says
so on stderr and reconnects; events in between are not shown. Ctrl-C stops.";

/// Reconnect delays grow to this and stay there.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

#[derive(Args, Debug)]
#[command(after_help = ABOUT)]
pub struct TailArgs {
    /// Only events matching this pattern, and their deliveries: JSON text or @FILE.
    #[arg(long, value_name = "JSON|@FILE")]
    pattern: Option<String>,
    /// One JSON object per line (the node's tail items) instead of text.
    #[arg(long)]
    json: bool,
    /// Never colour the output.
    #[arg(long)]
    no_color: bool,
    #[command(flatten)]
    connect: ConnectArgs,
}

pub fn run(args: TailArgs) -> Result<ExitCode, Error> {
    let mut query = Vec::new();
    if let Some(p) = &args.pattern {
        let pattern = json_arg("--pattern", p)?;
        if !pattern.is_object() {
            return Err(Error::input(format!(
                "--pattern must be a JSON object, got {}",
                crate::event::json_kind(&pattern)
            )));
        }
        query.push(("pattern", pattern.to_string()));
    }
    let client = Client::new(&args.connect)?;
    let style = Style::detect(args.no_color);
    let base = client.base().to_string();
    let mut connected_before = false;
    let mut backoff = Duration::from_secs(1);
    loop {
        match client.stream(&["v1", "tail"], &query) {
            Ok(resp) => {
                if connected_before {
                    eprintln!("busbar: reconnected to {base}");
                } else {
                    let filter = if query.is_empty() {
                        ""
                    } else {
                        " (events matching --pattern)"
                    };
                    eprintln!("tailing {base}{filter}; Ctrl-C to stop");
                }
                connected_before = true;
                backoff = Duration::from_secs(1);
                let why = follow(resp, |data| emit(data, args.json, style));
                eprintln!(
                    "busbar: the tail stream from {base} ended ({why}); reconnecting in {} s",
                    backoff.as_secs()
                );
            }
            // Once tailing, the node going away (a restart, a deploy) is waited out;
            // a refusal (bad pattern, wrong token) is not going to change by itself.
            Err(e) if connected_before && retryable(&e) => {
                eprintln!("busbar: {e}; retrying in {} s", backoff.as_secs());
            }
            Err(e) => return Err(e),
        }
        std::thread::sleep(backoff);
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

fn retryable(e: &Error) -> bool {
    match e {
        Error::Unreachable { .. } | Error::Protocol(_) => true,
        Error::Api { status, .. } => status.is_server_error(),
        _ => false,
    }
}

/// Reads the stream until it ends; says why it ended.
fn follow(resp: reqwest::blocking::Response, mut on_data: impl FnMut(&str)) -> String {
    let mut reader = BufReader::new(resp);
    let mut parser = SseParser::default();
    let mut line = String::new();
    loop {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) => return "closed by the node".into(),
            Ok(_) => {
                if let Some(data) = parser.line(&line) {
                    on_data(&data);
                }
            }
            Err(e) => {
                // reqwest hands its own errors to Read wrapped in io::Error.
                let cause = match e.into_inner() {
                    Some(inner) => match inner.downcast::<reqwest::Error>() {
                        Ok(re) => super::client::cause(&re),
                        Err(other) => other.to_string(),
                    },
                    None => "read failed".into(),
                };
                return format!("connection lost: {cause}");
            }
        }
    }
}

fn emit(data: &str, json: bool, style: Style) {
    let text = match serde_json::from_str::<Value>(data) {
        Ok(v) if json => v.to_string(),
        Ok(v) => render(&v, &clock(), style),
        Err(_) if json => data.to_string(),
        Err(_) => format!("{}  {}", clock(), style.paint(Color::Dim, data)),
    };
    print_str(&format!("{text}\n"));
}

/// The time of arrival, UTC, to the millisecond: deliveries carry no time of their own.
fn clock() -> String {
    let t = time::OffsetDateTime::now_utc();
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

/// Server-Sent Events framing: `data:` lines accumulate until a blank line ends
/// the message; comments (`:` keep-alives) and other fields are skipped.
#[derive(Default)]
struct SseParser {
    data: Vec<String>,
}

impl SseParser {
    fn line(&mut self, raw: &str) -> Option<String> {
        let line = raw.trim_end_matches(['\n', '\r']);
        if line.is_empty() {
            if self.data.is_empty() {
                return None;
            }
            let joined = self.data.join("\n");
            self.data.clear();
            return Some(joined);
        }
        if let Some(rest) = line.strip_prefix("data") {
            match rest.strip_prefix(':') {
                Some(value) => {
                    self.data
                        .push(value.strip_prefix(' ').unwrap_or(value).to_string());
                }
                None if rest.is_empty() => self.data.push(String::new()),
                None => {}
            }
        }
        None
    }
}

/// One tail item as one line of text.
fn render(item: &Value, clock: &str, style: Style) -> String {
    let s = |v: Option<&Value>| match v {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => "-".into(),
        Some(other) => other.to_string(),
    };
    match item.get("kind").and_then(Value::as_str) {
        Some("event") => {
            let e = item.get("event").cloned().unwrap_or(Value::Null);
            let rules: Vec<String> = item
                .get("rules")
                .and_then(Value::as_array)
                .map(|rs| rs.iter().map(|r| s(Some(r))).collect())
                .unwrap_or_default();
            let mut line = format!(
                "{}  {}  {}  {} {}  bus={}",
                style.paint(Color::Dim, clock),
                style.paint(Color::Cyan, &format!("{:<11}", "event")),
                s(e.get("id")),
                style.paint(Color::Bold, &s(e.get("source"))),
                style.paint(Color::Bold, &s(e.get("detail-type"))),
                s(e.get("event-bus-name")),
            );
            if let Some(r) = e.get("replay-name").and_then(Value::as_str) {
                line.push_str(&format!("  replay={r}"));
            }
            if rules.is_empty() {
                line.push_str(&format!("  {}", style.paint(Color::Dim, "-> no rule")));
            } else {
                line.push_str(&format!(
                    "  -> {}",
                    style.paint(Color::Blue, &rules.join(", "))
                ));
            }
            line
        }
        Some("delivery") => {
            let outcome = s(item.get("outcome"));
            let color = match outcome.as_str() {
                "ok" => Color::Green,
                "retry" => Color::Yellow,
                "dead-letter" => Color::Red,
                _ => Color::Magenta,
            };
            let latency = item
                .get("latency_ms")
                .and_then(Value::as_f64)
                .map(|ms| format!("{ms:.1} ms"))
                .unwrap_or_else(|| "- ms".into());
            let mut line = format!(
                "{}  {}  {}/{}  plugin={}  attempt={}  {latency}",
                style.paint(Color::Dim, clock),
                style.paint(color, &format!("{outcome:<11}")),
                s(item.get("rule")),
                s(item.get("target")),
                s(item.get("plugin")),
                s(item.get("attempt")),
            );
            if let Some(n) = item.get("emitted").and_then(Value::as_u64)
                && n > 0
            {
                line.push_str(&format!("  emitted={n}"));
            }
            line.push_str(&format!("  event={}", s(item.get("event_id"))));
            if let Some(err) = item.get("error").and_then(Value::as_str) {
                let err: String = err
                    .chars()
                    .map(|c| if c.is_control() { ' ' } else { c })
                    .collect();
                line.push_str(&format!(
                    "  {}",
                    style.paint(color, &format!("error: {err}"))
                ));
            }
            line
        }
        _ => format!("{}  {item}", style.paint(Color::Dim, clock)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sse_messages_end_at_blank_lines() {
        let mut p = SseParser::default();
        let mut out = Vec::new();
        for l in [
            ": keep-alive\n",
            "event: tail\n",
            "data: {\"a\":1}\r\n",
            "\r\n",
            "\n",
            "data:line one\n",
            "data\n",
            "data: line two\n",
            "id: 5\n",
            "\n",
        ] {
            out.extend(p.line(l));
        }
        assert_eq!(
            out,
            vec!["{\"a\":1}".to_string(), "line one\n\nline two".to_string()]
        );
    }

    #[test]
    fn events_show_their_rules() {
        let item = json!({"kind": "event", "rules": ["big-orders", "audit"], "event": {
            "id": "e-1", "source": "shop", "detail-type": "OrderPlaced",
            "event-bus-name": "default", "detail": {}}});
        assert_eq!(
            render(&item, "12:00:00.000", Style::plain()),
            "12:00:00.000  event        e-1  shop OrderPlaced  bus=default  -> big-orders, audit"
        );
        let none = json!({"kind": "event", "rules": [], "event": {"id": "e-2", "source": "s",
            "detail-type": "T", "event-bus-name": "b", "replay-name": "r1"}});
        assert_eq!(
            render(&none, "t", Style::plain()),
            "t  event        e-2  s T  bus=b  replay=r1  -> no rule"
        );
    }

    #[test]
    fn deliveries_show_outcome_latency_and_error() {
        let ok = json!({"kind": "delivery", "event_id": "e-1", "rule": "big", "target": "pay",
            "plugin": "payment-check", "attempt": 1, "outcome": "ok", "latency_ms": 3.06,
            "emitted": 1});
        assert_eq!(
            render(&ok, "t", Style::plain()),
            "t  ok           big/pay  plugin=payment-check  attempt=1  3.1 ms  emitted=1  event=e-1"
        );
        let dead = json!({"kind": "delivery", "event_id": "e-1", "rule": "big", "target": "pay",
            "plugin": "p", "attempt": 3, "outcome": "dead-letter", "latency_ms": 0.0,
            "emitted": 0, "error": "gave up after 3 attempts:\nboom"});
        let plain = render(&dead, "t", Style::plain());
        assert!(
            plain.ends_with("event=e-1  error: gave up after 3 attempts: boom"),
            "{plain}"
        );
        let colored = render(&dead, "t", Style::colored());
        assert!(colored.contains("\x1b[31mdead-letter\x1b[0m"), "{colored}");
    }
}
