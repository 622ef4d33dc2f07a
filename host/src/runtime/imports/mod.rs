//! What a plugin can call: busbar's own interfaces (`log`, `kv`, `config`,
//! `http`, one file each) and the locked-down WASI base (`wasi.rs`), plus the
//! per-instance store state they work on.

mod config;
mod http;
pub use http::client as http_client;
pub use http::{AllowedNetwork, HttpRecorder, RecordedRequest};
mod kv;
mod log;
pub mod wasi;

use super::kv::KvBackend;
use super::manifest::Manifest;
use std::sync::Arc;
use std::time::{Duration, Instant};
use wasi::{GuestOutput, StreamName};
use wasmtime::component::{HasSelf, Linker, ResourceTable};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

/// Rust bindings for `wit/plugin.wit`, world `handler`.
pub mod bindings {
    wasmtime::component::bindgen!({
        world: "handler",
        path: "../wit",
        imports: {
            // The one import that waits on the network: async, so the call's
            // wall-clock timeout can cancel it.
            "busbar:plugin/http.send": async,
        },
        exports: { default: async },
    });
}

/// Everything an instance's host functions share for the life of one plugin version.
pub struct PluginHost {
    pub name: Arc<str>,
    pub manifest: Arc<Manifest>,
    pub kv: Arc<dyn KvBackend>,
    pub http: reqwest::Client,
    /// When set, requests are recorded here instead of sent.
    pub http_recorder: Option<Arc<http::HttpRecorder>>,
}

/// Time budget of the call in progress, read by the epoch callback and `http`.
#[derive(Clone, Copy, Debug)]
pub struct CallClock {
    pub start: Instant,
    pub timeout: Duration,
    /// Thread CPU time at the start of the call (see `engine::thread_cpu_time`).
    pub cpu_start: Duration,
    pub cpu_budget: Duration,
}

impl CallClock {
    /// Starts the wall clock. The CPU reading is taken by [`CallClock::start_cpu`]
    /// right before guest code runs.
    pub fn new(timeout: Duration, cpu_budget: Duration) -> CallClock {
        CallClock {
            start: Instant::now(),
            timeout,
            cpu_start: Duration::ZERO,
            cpu_budget,
        }
    }

    pub fn start_cpu(self) -> CallClock {
        CallClock {
            cpu_start: super::engine::cpu_baseline(),
            ..self
        }
    }

    pub fn remaining(&self) -> Duration {
        self.timeout.saturating_sub(self.start.elapsed())
    }
}

/// A limit a guest ran into; raised as the trap's error so the call's failure
/// can be classified exactly (see `call.rs`).
#[derive(Debug, Clone, thiserror::Error)]
pub enum LimitExceeded {
    #[error(
        "linear memory would grow to {desired_mib} MiB; the limit is {limit_mib} MiB (limits.memory_mib)"
    )]
    Memory { desired_mib: u64, limit_mib: u64 },
    #[error("used {used_ms} ms of CPU; the limit is {limit_ms} ms (limits.cpu_ms)")]
    Cpu { used_ms: u128, limit_ms: u128 },
    #[error("ran for {elapsed_ms} ms; the limit is {limit_ms} ms (limits.timeout_ms)")]
    Timeout { elapsed_ms: u128, limit_ms: u128 },
}

/// Caps linear memory at the manifest's `memory_mib`. Growing past it traps
/// (rather than making `memory.grow` return -1) so the failure is always
/// reported as OutOfMemory, whatever the guest language does with a failed grow.
pub struct MemoryLimiter {
    limit_bytes: usize,
    /// Linear memory of every memory of the instance together, in bytes:
    /// wasmtime asks here for a memory's initial size too, so this is what
    /// the instance holds (what `busbar call` reports as the call's memory).
    reserved_bytes: u64,
}

impl MemoryLimiter {
    pub fn reserved_bytes(&self) -> u64 {
        self.reserved_bytes
    }
}

/// Generous, but bounds host-side table growth by a hostile guest.
const MAX_TABLE_ELEMENTS: usize = 1_000_000;

impl wasmtime::ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.limit_bytes {
            return Err(LimitExceeded::Memory {
                desired_mib: (desired as u64).div_ceil(1 << 20),
                limit_mib: (self.limit_bytes >> 20) as u64,
            }
            .into());
        }
        self.reserved_bytes += desired.saturating_sub(current) as u64;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}

/// The data of one instance's `Store`.
pub struct State {
    wasi: WasiCtx,
    table: ResourceTable,
    pub limiter: MemoryLimiter,
    pub host: Arc<PluginHost>,
    pub clock: CallClock,
    pub stdout: GuestOutput,
    pub stderr: GuestOutput,
    /// `log` calls made during the current call (bounded per call).
    log_lines: u32,
}

impl State {
    pub fn new(host: Arc<PluginHost>, clock: CallClock) -> State {
        let stdout = GuestOutput::new(host.name.clone(), StreamName::Stdout);
        let stderr = GuestOutput::new(host.name.clone(), StreamName::Stderr);
        State {
            wasi: wasi::context(&stdout, &stderr),
            table: ResourceTable::new(),
            limiter: MemoryLimiter {
                limit_bytes: usize::try_from(host.manifest.limits.memory_mib << 20)
                    .unwrap_or(usize::MAX),
                reserved_bytes: 0,
            },
            host,
            clock,
            stdout,
            stderr,
            log_lines: 0,
        }
    }

    /// Resets the per-call budgets before a call.
    pub fn start_call(&mut self, clock: CallClock) {
        self.clock = clock;
        self.log_lines = 0;
        self.stdout.start_call();
        self.stderr.start_call();
    }

    pub fn finish_call(&mut self) {
        self.stdout.finish_call();
        self.stderr.finish_call();
    }
}

/// `types` only defines records; there is nothing to implement.
impl bindings::busbar::plugin::types::Host for State {}

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// The linker every plugin version is type-checked and instantiated against.
pub fn linker(engine: &wasmtime::Engine) -> anyhow::Result<Linker<State>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)
        .map_err(|e| anyhow::anyhow!("linking WASI: {e:?}"))?;
    bindings::Handler::add_to_linker::<State, HasSelf<State>>(&mut linker, |s| s)
        .map_err(|e| anyhow::anyhow!("linking the busbar:plugin imports: {e:?}"))?;
    Ok(linker)
}
