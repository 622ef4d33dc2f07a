//! The WASI 0.2 base a plugin sees: clocks, random, and stdout/stderr that go
//! to busbar's log. Language runtimes (Rust std, StarlingMonkey, CPython)
//! import the whole `wasi:cli` world, so every interface is linked, but the
//! context is locked down: no preopened directories (every path open fails),
//! an empty environment and argument list, a closed stdin, and no sockets or
//! name lookups.

use bytes::Bytes;
use parking_lot::Mutex;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder};

/// Guest output logged per call at most; the rest is counted and dropped so a
/// chatty or hostile plugin cannot flood the host's log.
const MAX_LOGGED_BYTES_PER_CALL: usize = 64 * 1024;
/// A longer line is logged in pieces of this size.
const MAX_LINE: usize = 4096;
/// How much of the latest stderr output is kept to explain a crash.
const TAIL: usize = 4096;

#[derive(Clone, Copy, Debug)]
pub enum StreamName {
    Stdout,
    Stderr,
}

struct OutputBuf {
    plugin: Arc<str>,
    stream: StreamName,
    line: Vec<u8>,
    logged: usize,
    dropped: usize,
    /// This call's most recent output, for error messages.
    tail: Vec<u8>,
}

impl OutputBuf {
    fn emit(&mut self, line: &[u8]) {
        if self.logged >= MAX_LOGGED_BYTES_PER_CALL {
            self.dropped += line.len();
            return;
        }
        self.logged += line.len();
        let text = String::from_utf8_lossy(line);
        let text = text.trim_end_matches('\r');
        match self.stream {
            StreamName::Stdout => {
                tracing::info!(plugin = %self.plugin, stream = "stdout", "{text}")
            }
            StreamName::Stderr => {
                tracing::warn!(plugin = %self.plugin, stream = "stderr", "{text}")
            }
        }
    }

    fn write(&mut self, mut bytes: &[u8]) {
        self.tail.extend_from_slice(bytes);
        if self.tail.len() > TAIL {
            let cut = self.tail.len() - TAIL;
            self.tail.drain(..cut);
        }
        while let Some(nl) = bytes.iter().position(|&b| b == b'\n') {
            let mut line = std::mem::take(&mut self.line);
            line.extend_from_slice(&bytes[..nl]);
            for piece in line.chunks(MAX_LINE) {
                self.emit(piece);
            }
            bytes = &bytes[nl + 1..];
        }
        self.line.extend_from_slice(bytes);
        while self.line.len() >= MAX_LINE {
            let rest = self.line.split_off(MAX_LINE);
            let piece = std::mem::replace(&mut self.line, rest);
            self.emit(&piece);
        }
    }

    fn finish_call(&mut self) {
        if !self.line.is_empty() {
            let line = std::mem::take(&mut self.line);
            self.emit(&line);
        }
        if self.dropped > 0 {
            tracing::warn!(
                plugin = %self.plugin,
                dropped_bytes = self.dropped,
                "plugin output over {MAX_LOGGED_BYTES_PER_CALL} bytes in one call was not logged"
            );
        }
        self.logged = 0;
        self.dropped = 0;
    }
}

/// A guest stdout or stderr: complete lines go to the log under the plugin's
/// name, and the latest stderr bytes are kept to explain a panic.
#[derive(Clone)]
pub struct GuestOutput(Arc<Mutex<OutputBuf>>);

impl GuestOutput {
    pub fn new(plugin: Arc<str>, stream: StreamName) -> GuestOutput {
        GuestOutput(Arc::new(Mutex::new(OutputBuf {
            plugin,
            stream,
            line: Vec::new(),
            logged: 0,
            dropped: 0,
            tail: Vec::new(),
        })))
    }

    /// Forgets the previous call's output tail.
    pub fn start_call(&self) {
        self.0.lock().tail.clear();
    }

    /// Logs a pending partial line and resets the per-call budget.
    pub fn finish_call(&self) {
        self.0.lock().finish_call();
    }

    /// What this call wrote most recently (lossy UTF-8, at most a few KiB).
    pub fn tail(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().tail).into_owned()
    }
}

impl IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for GuestOutput {
    async fn ready(&mut self) {}
}

impl OutputStream for GuestOutput {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.0.lock().write(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        // Always writable: output beyond the log budget is counted and dropped.
        Ok(64 * 1024)
    }
}

impl tokio::io::AsyncWrite for GuestOutput {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.0.lock().write(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// The locked-down WASI context for one instance.
pub fn context(stdout: &GuestOutput, stderr: &GuestOutput) -> WasiCtx {
    let mut b = WasiCtxBuilder::new();
    // Spelled out although most are the builder's defaults: the sandbox must
    // not loosen if a default changes in a later wasmtime-wasi.
    b.stdout(stdout.clone())
        .stderr(stderr.clone())
        .envs(&[] as &[(&str, &str)])
        .args(&[] as &[&str])
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        .socket_addr_check(|_, _| Box::pin(async { false }));
    b.build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_a_bounded_tail_and_splits_lines() {
        let out = GuestOutput::new("p".into(), StreamName::Stderr);
        let mut w = out.clone();
        w.write(Bytes::from_static(
            b"thread panicked at src/lib.rs:3:5:\nboom",
        ))
        .unwrap();
        assert!(out.tail().contains("panicked at"));
        assert!(out.0.lock().line == b"boom");
        out.finish_call();
        assert!(out.0.lock().line.is_empty());
        w.write(Bytes::from(vec![b'x'; 3 * TAIL])).unwrap();
        assert_eq!(out.tail().len(), TAIL);
        assert!(out.0.lock().line.len() < MAX_LINE);
        out.start_call();
        assert!(out.tail().is_empty());
    }
}
