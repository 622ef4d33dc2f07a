//! What went wrong in a guest call that did not return: the plugin's own
//! limits, wasmtime's trap codes and a crashed language runtime's last words,
//! each turned into a [`CallError`] of the right [`FailureKind`]. Used for
//! calls (`call.rs`) and for instantiation (`pool.rs`) alike.

use super::errors::{CallError, FailureKind};
use super::imports::{LimitExceeded, State};

/// Names the failure of a guest call: our own limit errors first (they are
/// exact), then wasmtime's trap codes, then anything else as a plain trap.
pub fn classify(plugin: &str, e: wasmtime::Error, state: &State) -> CallError {
    let backtrace = e
        .downcast_ref::<wasmtime::WasmBacktrace>()
        .map(|bt| format!("\n{bt}"))
        .unwrap_or_default();
    let (kind, what) = if let Some(limit) = e.downcast_ref::<LimitExceeded>() {
        let kind = match limit {
            LimitExceeded::Memory { .. } => FailureKind::OutOfMemory,
            LimitExceeded::Cpu { .. } => FailureKind::CpuBudget,
            LimitExceeded::Timeout { .. } => FailureKind::Timeout,
        };
        (kind, limit.to_string())
    } else if let Some(trap) = e.downcast_ref::<wasmtime::Trap>() {
        let stderr = state.stderr.tail();
        match trap {
            wasmtime::Trap::StackOverflow => (
                FailureKind::StackOverflow,
                "wasm stack overflow (recursion too deep)".to_string(),
            ),
            // Language runtimes abort through `unreachable` after printing why:
            // Rust's panic hook, CPython's traceback, StarlingMonkey's error.
            wasmtime::Trap::UnreachableCodeReached if !stderr.trim().is_empty() => {
                (FailureKind::Panic, panic_message(&stderr))
            }
            wasmtime::Trap::MemoryOutOfBounds if shadow_stack_underflow(&e) => (
                FailureKind::StackOverflow,
                "stack overflow: the guest's stack in linear memory ran below address 0 (recursion too deep)"
                    .to_string(),
            ),
            wasmtime::Trap::Interrupt => (FailureKind::CpuBudget, "interrupted".to_string()),
            other => (FailureKind::Trap, format!("wasm trap: {other}")),
        }
    } else {
        // Canonical ABI violations, a failed `wasi:cli/exit`, host errors.
        (FailureKind::Trap, root_message(&e))
    };
    CallError::Failed {
        plugin: plugin.to_string(),
        kind,
        message: format!("{what}{backtrace}"),
    }
}

/// Rust and C guests keep their data stack in linear memory, below their
/// static data (wasm-ld's `--stack-first`), so running out of it wraps the
/// stack pointer below address 0 and traps as an out-of-bounds access long
/// before the engine's own stack limit. wasmtime does not report the faulting
/// address for such accesses, so the signature used is the backtrace: the
/// captured frames are all deep recursion through at most a few functions.
fn shadow_stack_underflow(e: &wasmtime::Error) -> bool {
    let Some(bt) = e.downcast_ref::<wasmtime::WasmBacktrace>() else {
        return false;
    };
    let frames = bt.frames();
    let mut functions: Vec<u32> = frames.iter().map(|f| f.func_index()).collect();
    functions.sort_unstable();
    functions.dedup();
    frames.len() >= 16 && functions.len() <= 3
}

fn root_message(e: &wasmtime::Error) -> String {
    let mut parts: Vec<String> = e.chain().map(|c| c.to_string()).collect();
    parts.retain(|p| !p.starts_with("error while executing at wasm backtrace"));
    if parts.is_empty() {
        e.to_string()
    } else {
        parts.join(": ")
    }
}

/// The interesting part of a crashed guest's stderr: from Rust's
/// "panicked at" or Python's "Traceback" on, else the whole tail.
fn panic_message(stderr: &str) -> String {
    let from = ["panicked at", "Traceback (most recent call last)"]
        .iter()
        .filter_map(|marker| stderr.rfind(marker))
        .max()
        .map(|i| {
            // Start at the beginning of that line.
            stderr[..i].rfind('\n').map_or(0, |nl| nl + 1)
        })
        .unwrap_or(0);
    stderr[from..].trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panic_message_starts_at_the_panic_line() {
        let stderr = "starting\nthread '<unnamed>' panicked at src/lib.rs:9:5:\nboom\nnote: run with RUST_BACKTRACE=1\n";
        assert!(
            panic_message(stderr)
                .starts_with("thread '<unnamed>' panicked at src/lib.rs:9:5:\nboom")
        );
        assert_eq!(panic_message("something odd\n"), "something odd");
    }
}
