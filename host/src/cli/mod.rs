//! The command line: `busbar serve` runs a node, `busbar test-pattern` checks a
//! pattern locally, and the other subcommands are small clients of a running
//! node's HTTP API.

mod call;
pub mod client;
mod dlq;
pub mod output;
mod plugins;
mod put;
mod replay;
mod rules;
mod schedules;
mod serve;
mod tail;
mod test_pattern;
pub mod wit;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(
    name = "busbar",
    version,
    about = "An event router: EventBridge patterns in, sandboxed WebAssembly plugins out",
    long_about = "busbar accepts events over HTTP (native JSON, the EventBridge API, CloudEvents), \
matches them against rules written in the EventBridge pattern language, and delivers them to \
WebAssembly components hot-loaded from a plugins directory.",
    after_help = GUIDE
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

const GUIDE: &str = "\
Getting started:
  busbar serve                                  run a node on 127.0.0.1:8080
  busbar put --source shop --detail-type OrderPlaced --detail '{\"total\": 250}'
  busbar rules put big --pattern '{\"detail\": {\"total\": [{\"numeric\": [\">\", 200]}]}}' --plugin rewards
  busbar tail                                   watch events and deliveries live

The client commands (put, rules, plugins, schedules, dlq, replay, tail) reach the node at
--url or BUSBAR_URL (default http://127.0.0.1:8080) and send --token or
BUSBAR_TOKEN as a bearer token. Every listing takes --json for scripts.
Writing a plugin:
  busbar wit > plugin.wit                       the contract a plugin implements
  busbar call my-plugin.wasm --event @order.json   one call, locally, no node

Exit status: 0 done, 1 the node refused or could not be reached, 2 the
command line is wrong (test-pattern and call document their own codes).

`busbar help COMMAND` or `busbar COMMAND --help` for more.";

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run a node: HTTP ingest, rules, delivery to plugins.
    Serve(serve::ServeArgs),
    /// Check whether an event matches a pattern (exit 0 match, 1 no match, 2 bad pattern, 3 bad event).
    TestPattern(test_pattern::TestPatternArgs),
    /// Publish events to a node and print their ids.
    Put(put::PutArgs),
    /// List, show, define, delete, enable and disable rules.
    Rules(rules::RulesArgs),
    /// Show the node's plugins: state, version, instances, calls, errors.
    Plugins(plugins::PluginsArgs),
    /// Inspect, redrive and purge dead-lettered deliveries.
    Dlq(dlq::DlqArgs),
    /// Show every schedule: next and last fire, last outcome, missed fires.
    Schedules(schedules::SchedulesArgs),
    /// Replay archived events of a time range, and follow replays.
    Replay(replay::ReplayArgs),
    /// Watch events and delivery outcomes live.
    Tail(tail::TailArgs),
    /// Run one call of a plugin locally, no node needed (exit 0 ok, 1 handler error, 3 load error, 4 trap).
    Call(call::CallArgs),
    /// Print the plugin contract: the WIT package busbar:plugin@0.1.0.
    Wit,
}

pub fn run(cli: Cli) -> ExitCode {
    let result = match cli.command {
        Command::Serve(args) => return serve::run(args),
        Command::TestPattern(args) => return test_pattern::run(args),
        Command::Call(args) => return call::run(args),
        Command::Wit => {
            print!("{}", wit::PLUGIN_WIT);
            return ExitCode::SUCCESS;
        }
        Command::Put(args) => put::run(args),
        Command::Rules(args) => rules::run(args),
        Command::Plugins(args) => plugins::run(args),
        Command::Dlq(args) => dlq::run(args),
        Command::Replay(args) => replay::run(args),
        Command::Schedules(args) => schedules::run(args),
        Command::Tail(args) => tail::run(args),
    };
    result.unwrap_or_else(|e| {
        eprintln!("busbar: {e}");
        e.exit_code()
    })
}

/// Reads `@file` arguments; anything else is the value itself.
pub fn read_arg(value: &str) -> std::io::Result<String> {
    match value.strip_prefix('@') {
        Some("-") => std::io::read_to_string(std::io::stdin()),
        Some(path) => std::fs::read_to_string(path),
        None => Ok(value.to_string()),
    }
}
