//! How a plugin call can fail, in terms the dispatcher acts on: retry later,
//! dead-letter now, or a failure of the sandboxed code itself.

use serde::Serialize;
use std::fmt;

/// The export every plugin implements; named in errors so a message read in
/// isolation says what was running.
pub const EXPORT: &str = "handle";

/// What went wrong inside a call that did not return normally.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// A WebAssembly trap (unreachable, out-of-bounds access, ...).
    Trap,
    /// The call used more CPU time than `limits.cpu_ms`.
    CpuBudget,
    /// The call took longer than `limits.timeout_ms` of wall-clock time.
    Timeout,
    /// Linear memory would have grown past `limits.memory_mib`.
    OutOfMemory,
    /// The guest exhausted its WebAssembly stack.
    StackOverflow,
    /// The guest language runtime panicked / raised an uncaught error.
    Panic,
    /// `limits.max_instances` (or the engine's instance pool) is exhausted.
    TooManyInstances,
    /// The handler returned more events or bytes than the host accepts.
    OutputTooLarge,
}

impl FailureKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Trap => "trap",
            FailureKind::CpuBudget => "cpu_budget",
            FailureKind::Timeout => "timeout",
            FailureKind::OutOfMemory => "out_of_memory",
            FailureKind::StackOverflow => "stack_overflow",
            FailureKind::Panic => "panic",
            FailureKind::TooManyInstances => "too_many_instances",
            FailureKind::OutputTooLarge => "output_too_large",
        }
    }
}

impl fmt::Display for FailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why [`Runtime::call`](super::Runtime::call) did not produce events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// No plugin of that name is loaded (never was, was deleted, or failed to load).
    NotLoaded { plugin: String },
    /// The handler returned `retry(message)`.
    Retry { plugin: String, message: String },
    /// The handler returned `reject(message)`, or returned events the host refuses.
    Reject { plugin: String, message: String },
    /// The call did not complete: a trap, a limit, a panic. `message` carries the
    /// wasm backtrace where there is one.
    Failed {
        plugin: String,
        kind: FailureKind,
        message: String,
    },
}

impl CallError {
    /// Whether delivering again later can succeed. A trap or a blown limit is
    /// retryable: the instance is thrown away, and the cause may be transient
    /// (a slow upstream, a busy host); the retry policy bounds the attempts.
    pub fn is_retryable(&self) -> bool {
        match self {
            CallError::NotLoaded { .. } | CallError::Retry { .. } => true,
            CallError::Reject { .. } => false,
            CallError::Failed { kind, .. } => !matches!(kind, FailureKind::OutputTooLarge),
        }
    }

    /// A short machine-readable reason, e.g. for a metric label or a DLQ entry.
    pub fn reason(&self) -> String {
        match self {
            CallError::NotLoaded { .. } => "not_loaded".into(),
            CallError::Retry { .. } => "retry".into(),
            CallError::Reject { .. } => "reject".into(),
            CallError::Failed { kind, .. } => kind.as_str().into(),
        }
    }

    pub fn plugin(&self) -> &str {
        match self {
            CallError::NotLoaded { plugin }
            | CallError::Retry { plugin, .. }
            | CallError::Reject { plugin, .. }
            | CallError::Failed { plugin, .. } => plugin,
        }
    }

    pub fn kind(&self) -> Option<FailureKind> {
        match self {
            CallError::Failed { kind, .. } => Some(*kind),
            _ => None,
        }
    }
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallError::NotLoaded { plugin } => {
                write!(
                    f,
                    "plugin {plugin:?} is not loaded (no {plugin}.wasm in the plugins directory, or it failed to load)"
                )
            }
            CallError::Retry { plugin, message } => {
                write!(
                    f,
                    "plugin {plugin:?} export `{EXPORT}` asked for a retry: {message}"
                )
            }
            CallError::Reject { plugin, message } => {
                write!(
                    f,
                    "plugin {plugin:?} export `{EXPORT}` rejected the event: {message}"
                )
            }
            CallError::Failed {
                plugin,
                kind,
                message,
            } => {
                write!(
                    f,
                    "plugin {plugin:?} export `{EXPORT}` failed ({kind}): {message}"
                )
            }
        }
    }
}

impl std::error::Error for CallError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_plugin_export_and_kind() {
        let e = CallError::Failed {
            plugin: "p".into(),
            kind: FailureKind::CpuBudget,
            message: "used 501 ms of CPU; the limit is 500 ms".into(),
        };
        assert_eq!(
            e.to_string(),
            "plugin \"p\" export `handle` failed (cpu_budget): used 501 ms of CPU; the limit is 500 ms"
        );
        assert!(e.is_retryable());
        assert_eq!(e.reason(), "cpu_budget");
        let r = CallError::Reject {
            plugin: "p".into(),
            message: "no amount".into(),
        };
        assert!(!r.is_retryable());
        assert!(r.to_string().contains("rejected"));
    }
}
