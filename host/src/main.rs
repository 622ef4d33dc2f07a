//! The `busbar` command line: parses arguments and calls into the library.

use busbar::cli;
use clap::Parser;

fn main() -> std::process::ExitCode {
    let args = cli::Cli::parse();
    cli::run(args)
}
