//! `busbar wit`: the plugin contract, compiled into the binary so that a
//! plugin project outside this repository can vendor the exact WIT its busbar
//! runs (`busbar wit > wit/plugin.wit`).

/// `wit/plugin.wit`, the one source of truth for the `busbar:plugin` package.
pub const PLUGIN_WIT: &str = include_str!("../../../wit/plugin.wit");
