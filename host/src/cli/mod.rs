//! The command line: `busbar serve` runs a node, `busbar test-pattern` checks a
//! pattern locally, and the other subcommands are small clients of a running
//! node's HTTP API.

mod serve;
mod test_pattern;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(
    name = "busbar",
    version,
    about = "An event router: EventBridge patterns in, sandboxed WebAssembly plugins out",
    long_about = "busbar accepts events over HTTP (native JSON, the EventBridge API, CloudEvents), \
matches them against rules written in the EventBridge pattern language, and delivers them to \
WebAssembly components hot-loaded from a plugins directory."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run a node: HTTP ingest, rules, delivery to plugins.
    Serve(serve::ServeArgs),
    /// Check whether an event matches a pattern (exit 0 match, 1 no match, 2 bad pattern, 3 bad event).
    TestPattern(test_pattern::TestPatternArgs),
}

pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::TestPattern(args) => test_pattern::run(args),
    }
}

/// Reads `@file` arguments; anything else is the value itself.
pub fn read_arg(value: &str) -> std::io::Result<String> {
    match value.strip_prefix('@') {
        Some("-") => std::io::read_to_string(std::io::stdin()),
        Some(path) => std::fs::read_to_string(path),
        None => Ok(value.to_string()),
    }
}
