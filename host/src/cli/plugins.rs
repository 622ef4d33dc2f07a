//! `busbar plugins`: the plugins a node has loaded, and how they are doing (`GET /v1/plugins`).

use super::client::{Client, ConnectArgs, Error};
use super::output::{Color, Style, Table, cell, first, print_json, print_str, truncate};
use clap::Args;
use serde_json::Value;
use std::process::ExitCode;

const ABOUT: &str = "\
One row per plugin in the node's plugins directory. STATE is `loaded` (a
version is serving), `failed` (none could be loaded) or `unloaded` (its file
was removed). VERSION is the start of the serving file's SHA-256. LAST ERROR
is why the last load failed (`load: ...`; an older version may still serve)
or else the most recent failed call (`call: ...`).";

#[derive(Args, Debug)]
#[command(after_help = ABOUT)]
pub struct PluginsArgs {
    /// Print the node's JSON.
    #[arg(long)]
    json: bool,
    /// Never colour the STATE column.
    #[arg(long)]
    no_color: bool,
    #[command(flatten)]
    connect: ConnectArgs,
}

pub fn run(args: PluginsArgs) -> Result<ExitCode, Error> {
    let client = Client::new(&args.connect)?;
    let answer = client.get(&["v1", "plugins"], &[])?;
    if args.json {
        print_json(&answer);
        return Ok(ExitCode::SUCCESS);
    }
    // An array today; a {"plugins": [...]} wrapper is read the same way.
    let plugins = answer
        .as_array()
        .or_else(|| answer.get("plugins").and_then(Value::as_array))
        .ok_or_else(|| Error::Protocol("the node's plugin list is not a JSON array".into()))?;
    if plugins.is_empty() {
        eprintln!(
            "no plugins loaded (drop NAME.wasm into the directory `busbar serve --plugins` watches)"
        );
        return Ok(ExitCode::SUCCESS);
    }
    print_str(&table(plugins, Style::detect(args.no_color)).render());
    Ok(ExitCode::SUCCESS)
}

fn table(plugins: &[Value], style: Style) -> Table {
    let mut t = Table::new(&[
        "NAME",
        "STATE",
        "VERSION",
        "POLICY",
        "INSTANCES",
        "CALLS",
        "ERRORS",
        "LAST ERROR",
    ]);
    for p in plugins {
        let load_error = first(p, &["last_error", "load_error"]).and_then(Value::as_str);
        let call_error = first(p, &["last_call_error"]).and_then(Value::as_str);
        let state = cell(first(p, &["state", "status"]));
        let color = match state.as_str() {
            "loaded" if load_error.is_some() => Color::Yellow,
            "loaded" => Color::Green,
            "failed" => Color::Red,
            _ => Color::Dim,
        };
        let last = match (load_error, call_error) {
            (Some(e), _) => format!("load: {e}"),
            (None, Some(e)) => format!("call: {e}"),
            (None, None) => "-".into(),
        };
        t.row(vec![
            cell(p.get("name")),
            style.paint(color, &state),
            cell(first(p, &["version", "hash"])),
            cell(first(p, &["policy", "instance_policy"])),
            cell(first(p, &["instances"])),
            cell(first(p, &["calls", "calls_total"])),
            cell(first(p, &["errors", "errors_total"])),
            truncate(&last, 70),
        ]);
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rows_read_the_runtime_status_fields() {
        let plugins = [
            json!({"name": "payment-check", "state": "loaded", "version": "3f2a9c1b0d4e",
                   "policy": "reuse", "instances": 2, "idle_instances": 1, "calls": 120,
                   "errors": 3, "last_error": null, "last_call_error": "reject: amount missing"}),
            json!({"name": "broken", "state": "failed", "version": null, "policy": null,
                   "instances": 0, "calls": 0, "errors": 0,
                   "last_error": "broken.wasm does not export handle"}),
        ];
        let text = table(&plugins, Style::plain()).render();
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[0].starts_with("NAME           STATE   VERSION"),
            "{text}"
        );
        assert!(lines[1].contains("loaded  3f2a9c1b0d4e  reuse   2          120    3       call: reject: amount missing"), "{text}");
        assert!(lines[2].contains("failed  -"), "{text}");
        assert!(
            lines[2].ends_with("load: broken.wasm does not export handle"),
            "{text}"
        );
    }

    #[test]
    fn state_is_coloured_by_health() {
        let p = [json!({"name": "a", "state": "loaded", "last_error": "new version rejected"})];
        let text = table(&p, Style::colored()).render();
        assert!(text.contains("\x1b[33mloaded\x1b[0m"), "{text}");
    }
}
