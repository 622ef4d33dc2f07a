//! busbar's integration tests: ONE test binary, a module per topic, one
//! harness (`harness/`) they all share. One binary links wasmtime, axum and
//! async-nats once instead of once per topic.
//!
//! Run one topic with `cargo test -p busbar --test all <topic>::`, e.g.
//! `cargo test -p busbar --test all http_api::`. The tests run as threads of one
//! process: a test must not change process-global state (environment, current
//! directory, rlimits); what a node needs differently goes into its config or a
//! child process's environment.
//!
//! The OTLP export is a cargo feature, and so is its test:
//! `cargo test -p busbar --features otlp --test all otlp::`.

mod harness;

mod autoscale;
mod aws_cli;
mod cli;
mod cli_e2e;
mod cluster;
mod console;
mod crash;
mod e2e;
mod hardening;
mod http_api;
#[cfg(feature = "otlp")]
mod otlp;
mod pattern_conformance;
mod pattern_props;
mod plugin_authors;
mod runtime;
mod schedules;
mod single_pass;
