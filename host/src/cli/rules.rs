//! `busbar rules`: list, show, define, delete, enable and disable rules (`/v1/rules`).

use super::client::{Client, ConnectArgs, Error, json_arg};
use super::output::{Table, cell, plural, print_json, print_str, truncate};
use crate::event::DEFAULT_BUS;
use clap::{Args, Subcommand};
use reqwest::StatusCode;
use serde_json::{Map, Value, json};
use std::process::ExitCode;

const EXAMPLES: &str = "\
Examples:
  busbar rules list
  busbar rules show big-orders
  busbar rules put big-orders --pattern '{\"source\": [\"shop\"], \"detail\": {\"total\": [{\"numeric\": [\">\", 100]}]}}' \\
      --plugin payment-check
  busbar rules disable big-orders
  busbar rules delete big-orders --force

Rules from the config file are listed with origin `config`; change those in the file.";

#[derive(Args, Debug)]
#[command(after_help = EXAMPLES)]
pub struct RulesArgs {
    #[command(subcommand)]
    command: RulesCommand,
    #[command(flatten)]
    connect: ConnectArgs,
}

#[derive(Subcommand, Debug)]
enum RulesCommand {
    /// List rules: name, bus, state, targets, origin and pattern.
    List {
        /// Only rules of this bus [default: every bus].
        #[arg(long)]
        bus: Option<String>,
        /// Only rules whose name starts with this.
        #[arg(long)]
        prefix: Option<String>,
        /// Print the node's JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show one rule in full: its pattern and each target's retry policy.
    Show {
        name: String,
        #[arg(long, default_value = DEFAULT_BUS)]
        bus: String,
        /// Print the node's JSON.
        #[arg(long)]
        json: bool,
    },
    /// Create or replace a rule.
    Put(PutRule),
    /// Delete a rule. A rule with targets is kept unless --force is given.
    Delete {
        name: String,
        #[arg(long, default_value = DEFAULT_BUS)]
        bus: String,
        /// Remove the rule's targets first, then delete it.
        #[arg(long)]
        force: bool,
    },
    /// Enable a rule: matching events are delivered again.
    Enable {
        name: String,
        #[arg(long, default_value = DEFAULT_BUS)]
        bus: String,
    },
    /// Disable a rule: it stays defined but matches nothing.
    Disable {
        name: String,
        #[arg(long, default_value = DEFAULT_BUS)]
        bus: String,
    },
}

#[derive(Args, Debug)]
struct PutRule {
    /// The rule's name: letters, digits, `.`, `-` and `_`.
    name: String,
    /// The event pattern (EventBridge pattern language): JSON text or @FILE.
    #[arg(long, value_name = "JSON|@FILE")]
    pattern: String,
    /// Deliver matching events to this plugin. Without it the rule keeps the targets it has.
    #[arg(long)]
    plugin: Option<String>,
    /// The target's id within the rule [default: the plugin's name].
    #[arg(long, value_name = "ID", requires = "plugin")]
    target_id: Option<String>,
    #[arg(long, default_value = DEFAULT_BUS)]
    bus: String,
    /// Define the rule disabled.
    #[arg(long)]
    disabled: bool,
    /// A note on what the rule is for.
    #[arg(long)]
    description: Option<String>,
    /// Print the node's JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(args: RulesArgs) -> Result<ExitCode, Error> {
    let client = Client::new(&args.connect)?;
    match args.command {
        RulesCommand::List { bus, prefix, json } => list(&client, bus, prefix, json),
        RulesCommand::Show { name, bus, json } => show(&client, &name, &bus, json),
        RulesCommand::Put(p) => put(&client, p),
        RulesCommand::Delete { name, bus, force } => delete(&client, &name, &bus, force),
        RulesCommand::Enable { name, bus } => set_state(&client, &name, &bus, true),
        RulesCommand::Disable { name, bus } => set_state(&client, &name, &bus, false),
    }
}

fn list(
    client: &Client,
    bus: Option<String>,
    prefix: Option<String>,
    json: bool,
) -> Result<ExitCode, Error> {
    let mut query = Vec::new();
    if let Some(b) = &bus {
        query.push(("bus", b.clone()));
    }
    if let Some(p) = prefix {
        query.push(("prefix", p));
    }
    let answer = client.get(&["v1", "rules"], &query)?;
    if json {
        print_json(&answer);
        return Ok(ExitCode::SUCCESS);
    }
    let rules = answer
        .get("rules")
        .and_then(Value::as_array)
        .ok_or_else(|| Error::Protocol("the node's rule list has no \"rules\" array".into()))?;
    if rules.is_empty() {
        match &bus {
            Some(b) => eprintln!("no rules on bus {b}"),
            None => eprintln!("no rules"),
        }
        return Ok(ExitCode::SUCCESS);
    }
    print_str(&rules_table(rules).render());
    Ok(ExitCode::SUCCESS)
}

fn rules_table(rules: &[Value]) -> Table {
    let mut t = Table::new(&["NAME", "BUS", "STATE", "TARGETS", "ORIGIN", "PATTERN"]);
    for r in rules {
        t.row(vec![
            cell(r.get("name")),
            cell(r.get("bus")),
            cell(r.get("state")),
            targets_cell(r),
            cell(r.get("origin")),
            truncate(&compact_pattern(r.get("pattern")), 60),
        ]);
    }
    t
}

/// Plugin names, with the target id when it differs (`audit=notification`).
fn targets_cell(rule: &Value) -> String {
    let targets = rule
        .get("targets")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    if targets.is_empty() {
        return "-".into();
    }
    targets
        .iter()
        .map(|t| {
            let plugin = cell(t.get("plugin"));
            match t.get("id").and_then(Value::as_str) {
                Some(id) if id != plugin => format!("{id}={plugin}"),
                _ => plugin,
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// The pattern as one line; the node stores it as JSON text.
fn compact_pattern(pattern: Option<&Value>) -> String {
    match pattern {
        Some(Value::String(text)) => serde_json::from_str::<Value>(text)
            .map(|v| v.to_string())
            .unwrap_or_else(|_| text.clone()),
        Some(other) => other.to_string(),
        None => "-".into(),
    }
}

fn pretty_pattern(pattern: Option<&Value>) -> String {
    let value = match pattern {
        Some(Value::String(text)) => match serde_json::from_str::<Value>(text) {
            Ok(v) => v,
            Err(_) => return text.clone(),
        },
        Some(other) => other.clone(),
        None => return "-".into(),
    };
    serde_json::to_string_pretty(&value).unwrap_or_else(|_| value.to_string())
}

fn rule_path<'a>(bus: &'a str, name: &'a str) -> [&'a str; 4] {
    ["v1", "rules", bus, name]
}

fn not_found_hint(name: &str, bus: &str) -> String {
    format!(
        "rule {name} was looked up on bus {bus}: `busbar rules list` shows every rule, --bus picks another bus"
    )
}

fn show(client: &Client, name: &str, bus: &str, json: bool) -> Result<ExitCode, Error> {
    let rule = client
        .get(&rule_path(bus, name), &[])
        .map_err(|e| e.hint_on(StatusCode::NOT_FOUND, not_found_hint(name, bus)))?;
    if json {
        print_json(&rule);
    } else {
        print_str(&describe(&rule));
    }
    Ok(ExitCode::SUCCESS)
}

/// A rule for reading: fields, the pattern indented, one line per target.
fn describe(rule: &Value) -> String {
    let mut out = String::new();
    let mut line = |k: &str, v: String| out.push_str(&format!("{k:<12} {v}\n"));
    line("name:", cell(rule.get("name")));
    line("bus:", cell(rule.get("bus")));
    line("state:", cell(rule.get("state")));
    let origin = cell(rule.get("origin"));
    line(
        "origin:",
        if origin == "config" {
            "config (change it in the config file)".into()
        } else {
            origin
        },
    );
    if let Some(d) = rule.get("description").and_then(Value::as_str) {
        line("description:", d.to_string());
    }
    out.push_str("pattern:\n");
    for l in pretty_pattern(rule.get("pattern")).lines() {
        out.push_str(&format!("  {l}\n"));
    }
    let targets = rule
        .get("targets")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    if targets.is_empty() {
        out.push_str("targets:     none (matching events go nowhere)\n");
    } else {
        out.push_str("targets:\n");
        for t in targets {
            out.push_str(&format!("  {}\n", describe_target(t)));
        }
    }
    out
}

fn describe_target(t: &Value) -> String {
    let mut parts = vec![format!(
        "{}: plugin {}",
        cell(t.get("id")),
        cell(t.get("plugin"))
    )];
    if let Some(r) = t.get("retry") {
        parts.push(format!(
            "up to {} retries within {} s",
            cell(r.get("max_retry_attempts")),
            cell(r.get("max_event_age_secs"))
        ));
    }
    if let Some(dl) = t.get("dead_letter").and_then(Value::as_bool) {
        parts.push(if dl {
            "then dead-letter".into()
        } else {
            "then drop".into()
        });
    }
    for (key, label) in [
        ("input", "input"),
        ("input_path", "input path"),
        ("input_transformer", "input transformer"),
    ] {
        if let Some(v) = t.get(key).filter(|v| !v.is_null()) {
            parts.push(format!(
                "{label} {}",
                truncate(&compact_pattern(Some(v)), 40)
            ));
        }
    }
    parts.join(", ")
}

fn put(client: &Client, p: PutRule) -> Result<ExitCode, Error> {
    let pattern = json_arg("--pattern", &p.pattern)?;
    if !pattern.is_object() {
        return Err(Error::input(format!(
            "--pattern must be a JSON object, got {}",
            crate::event::json_kind(&pattern)
        )));
    }
    let mut body = Map::new();
    body.insert("pattern".into(), pattern);
    body.insert(
        "state".into(),
        json!(if p.disabled { "DISABLED" } else { "ENABLED" }),
    );
    if let Some(d) = &p.description {
        body.insert("description".into(), json!(d));
    }
    if let Some(plugin) = &p.plugin {
        let id = p.target_id.clone().unwrap_or_else(|| plugin.clone());
        body.insert("targets".into(), json!([{"id": id, "plugin": plugin}]));
    }
    let answer = client.put(&rule_path(&p.bus, &p.name), &Value::Object(body))?;
    if p.json {
        print_json(&answer);
    } else {
        let state = answer
            .get("state")
            .and_then(Value::as_str)
            .unwrap_or(if p.disabled { "DISABLED" } else { "ENABLED" });
        let targets = match targets_cell(&answer).as_str() {
            "-" if answer.get("targets").is_some() => "no targets".to_string(),
            "-" => match &p.plugin {
                Some(plugin) => format!("target {plugin}"),
                None => "targets unchanged".to_string(),
            },
            t => format!("targets {t}"),
        };
        println!(
            "rule {} on bus {}: {}, {targets}",
            p.name,
            p.bus,
            state.to_lowercase()
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn delete(client: &Client, name: &str, bus: &str, force: bool) -> Result<ExitCode, Error> {
    if force {
        let rule = client
            .get(&rule_path(bus, name), &[])
            .map_err(|e| e.hint_on(StatusCode::NOT_FOUND, not_found_hint(name, bus)))?;
        let ids: Vec<Value> = rule
            .get("targets")
            .and_then(Value::as_array)
            .map(|ts| ts.iter().filter_map(|t| t.get("id").cloned()).collect())
            .unwrap_or_default();
        if !ids.is_empty() {
            let n = ids.len() as u64;
            client.aws(
                "RemoveTargets",
                &json!({"Rule": name, "EventBusName": bus, "Ids": ids}),
            )?;
            eprintln!(
                "removed {} from rule {name}",
                plural(n, "target", "targets")
            );
        }
    }
    client
        .delete(&rule_path(bus, name))
        .map_err(|e| {
            e.hint_on(
                StatusCode::CONFLICT,
                "`--force` removes the rule's targets and deletes it; rules from the config file are deleted there",
            )
            .hint_on(StatusCode::NOT_FOUND, not_found_hint(name, bus))
        })?;
    println!("deleted rule {name} from bus {bus}");
    Ok(ExitCode::SUCCESS)
}

/// EnableRule / DisableRule: one call that changes only the state, so a target
/// added meanwhile by someone else is not overwritten.
fn set_state(client: &Client, name: &str, bus: &str, enable: bool) -> Result<ExitCode, Error> {
    let op = if enable { "EnableRule" } else { "DisableRule" };
    client
        .aws(op, &json!({"Name": name, "EventBusName": bus}))
        .map_err(|e| {
            // The EventBridge API reports every refusal as HTTP 400; the code says which.
            match &e {
                Error::Api { code, .. } if code == "ResourceNotFoundException" => {
                    e.hint_on(StatusCode::BAD_REQUEST, not_found_hint(name, bus))
                }
                _ => e,
            }
        })?;
    println!(
        "rule {name} on bus {bus} is now {}",
        if enable { "enabled" } else { "disabled" }
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule() -> Value {
        json!({
            "name": "big-orders", "bus": "default", "state": "ENABLED", "origin": "api",
            "pattern": "{\"source\": [\"shop\"]}",
            "targets": [
                {"id": "payment-check", "plugin": "payment-check",
                 "retry": {"max_retry_attempts": 3, "max_event_age_secs": 60}, "dead_letter": true},
                {"id": "audit", "plugin": "notification", "input_path": "$.detail"}
            ]
        })
    }

    #[test]
    fn table_row_shows_targets_and_a_compact_pattern() {
        let text = rules_table(&[rule()]).render();
        let row = text.lines().nth(1).unwrap();
        assert!(row.contains("payment-check,audit=notification"), "{row}");
        assert!(row.ends_with(r#"{"source":["shop"]}"#), "{row}");
    }

    #[test]
    fn description_indents_the_pattern_and_lists_targets() {
        let text = describe(&rule());
        assert!(
            text.contains("pattern:\n  {\n    \"source\": [\n"),
            "{text}"
        );
        assert!(
            text.contains("  payment-check: plugin payment-check, up to 3 retries within 60 s, then dead-letter\n"),
            "{text}"
        );
        assert!(
            text.contains("audit: plugin notification, input path $.detail"),
            "{text}"
        );
        let mut config = rule();
        config["origin"] = json!("config");
        config["targets"] = json!([]);
        let text = describe(&config);
        assert!(
            text.contains("config (change it in the config file)"),
            "{text}"
        );
        assert!(text.contains("targets:     none"), "{text}");
    }
}
