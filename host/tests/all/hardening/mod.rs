//! Hardening: what a hostile client, a greedy plugin or a careless operator
//! could do, each tried against the real server (or the real runtime) and
//! shown to be contained. A module per area.

mod archive;
mod edges;
mod input;
mod operator;
mod runtime;
