//! busbar: an event router. Events arrive over HTTP, rules written in the Amazon
//! EventBridge pattern language pick them up, and sandboxed WebAssembly
//! components handle them.
//!
//! The modules follow the path of one event:
//! `ingest` -> `bus` -> `pattern`/`rules` -> `dispatch` -> `runtime`.

pub mod bus;
pub mod cli;
pub mod clock;
pub mod config;
pub mod control;
pub mod dispatch;
pub mod event;
pub mod ingest;
pub mod node;
pub mod pattern;
pub mod publish;
pub mod rules;
pub mod runtime;
pub mod schedule;
pub mod telemetry;
