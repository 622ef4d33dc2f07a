//! `busbar test-pattern`: the EventBridge TestEventPattern call, offline.

use crate::pattern::{Limits, Pattern};
use clap::Args;
use std::process::ExitCode;

#[derive(Args, Debug)]
pub struct TestPatternArgs {
    /// The event pattern: JSON text, or @FILE (@- for stdin).
    #[arg(long)]
    pattern: String,
    /// The event: JSON text, or @FILE (@- for stdin).
    #[arg(long)]
    event: String,
    /// Longest pattern accepted, in characters.
    #[arg(long, default_value_t = 2048)]
    max_pattern_chars: usize,
}

pub fn run(args: TestPatternArgs) -> ExitCode {
    let pattern_text = match super::read_arg(&args.pattern) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("cannot read the pattern from {}: {e}", args.pattern);
            return ExitCode::from(2);
        }
    };
    let limits = Limits {
        max_pattern_chars: args.max_pattern_chars,
    };
    let pattern = match Pattern::parse_with(&pattern_text, &limits) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("invalid pattern: {e}");
            return ExitCode::from(2);
        }
    };
    let event_text = match super::read_arg(&args.event) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("cannot read the event from {}: {e}", args.event);
            return ExitCode::from(3);
        }
    };
    let event: serde_json::Value = match serde_json::from_str(&event_text) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("malformed event JSON: {e}");
            return ExitCode::from(3);
        }
    };
    if !event.is_object() {
        eprintln!("malformed event: it must be a JSON object");
        return ExitCode::from(3);
    }
    if pattern.matches(&event) {
        println!("true");
        ExitCode::SUCCESS
    } else {
        println!("false");
        ExitCode::from(1)
    }
}
