//! The EventBridge pattern language: parse and validate, compile, match.
