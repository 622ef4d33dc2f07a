//! Hardening: what a hostile client, a greedy plugin or a careless operator
//! could do, each tried against the real server (or the real runtime) and
//! shown to be contained. One test binary, a module per area.

#[path = "../common/mod.rs"]
mod common;
#[path = "../plugin_support/mod.rs"]
mod plugin_support;
#[path = "../support/mod.rs"]
mod support;

mod archive;
mod edges;
mod input;
mod operator;
mod runtime;
