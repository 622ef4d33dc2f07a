//! The wasmtime host: engine, plugin registry, manifests, limits, host imports, hot reload.
//!
//! A [`Runtime`] owns one wasmtime engine and every loaded plugin. Plugins are
//! `NAME.wasm` components (world `handler` of `wit/plugin.wit`) with an
//! optional `NAME.toml` manifest ([`Manifest`]) in the plugins directory,
//! which is watched and hot-reloaded. Each call runs under the plugin's
//! limits; a trap, a blown limit or a guest panic fails that call only.
//!
//! Files, one job each: `engine.rs` (engine + epoch ticker), `cache.rs`
//! (compiled cache), `manifest.rs`, `registry.rs` (load / swap / status),
//! `watch.rs` (notify + debounce), `pool.rs` (versions and instances),
//! `call.rs` (one call, limits), `classify.rs` (naming a failed call),
//! `call_metrics.rs`, `imports/` (what guests can call), `kv.rs` (the plugin
//! state seam; its stores live in `bus/`), `errors.rs`.
//!
//! Calls are executed on async fibers, driven by a `block_on` on the calling
//! thread: that is what lets the wall-clock timeout cancel a guest that is
//! blocked in a host call (a WASI sleep, an HTTP request), while CPU-bound
//! guest code is stopped by epoch interruption.

mod cache;
mod call;
mod call_metrics;
mod classify;
mod engine;
mod errors;
mod imports;
mod kv;
mod manifest;
mod pool;
mod registry;
mod watch;
mod world_check;

pub use call::{MAX_OUTPUT_BYTES, MAX_OUTPUT_EVENTS};
pub use errors::{CallError, EXPORT, FailureKind};
pub use imports::{HttpRecorder, RecordedRequest};
pub use kv::{KvBackend, KvError};
pub use manifest::{Http, Instances, Limits, Manifest, Policy, Scaling};
pub use registry::{PluginState, PluginStatus, RegistryChange, valid_name};

use crate::event::Event;
use dashmap::DashMap;
use parking_lot::Mutex;
use serde::Serialize;
use std::path::PathBuf;
use std::sync::{Arc, LazyLock, Weak};
use tokio::sync::broadcast;

/// Where plugins come from and where their compiled code is kept.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// The directory holding `NAME.wasm` and `NAME.toml` (top level only).
    pub plugins_dir: PathBuf,
    /// Compiled components, keyed by content hash and engine; safe to share
    /// between runs and between processes.
    pub cache_dir: PathBuf,
    /// Reload plugins when their files change.
    pub watch: bool,
}

impl RuntimeConfig {
    /// `plugins_dir` with its compiled cache in `data_dir/plugin-cache`, watched.
    pub fn new(plugins_dir: impl Into<PathBuf>, data_dir: impl Into<PathBuf>) -> RuntimeConfig {
        RuntimeConfig {
            plugins_dir: plugins_dir.into(),
            cache_dir: data_dir.into().join("plugin-cache"),
            watch: true,
        }
    }
}

impl Default for RuntimeConfig {
    /// busbar's defaults: `./plugins`, cache under `./data`, watched.
    fn default() -> Self {
        RuntimeConfig::new("plugins", "data")
    }
}

/// Why and how an event reaches a plugin (the WIT `delivery` record).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Delivery {
    /// Name of the rule whose pattern matched.
    pub rule: String,
    /// Id of the target within that rule.
    pub target: String,
    /// 1 on the first try.
    pub attempt: u32,
    /// Stable across retries of this (event, rule, target).
    pub id: String,
}

/// An event a plugin publishes. Validated: source and detail-type are 1–256
/// bytes, detail is a JSON object, the bus name (if any) is valid.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NewEvent {
    pub source: String,
    pub detail_type: String,
    /// Always a JSON object.
    pub detail: serde_json::Value,
    pub resources: Vec<String>,
    /// The bus to publish to; the incoming event's bus when `None`.
    pub bus: Option<String>,
}

/// The plugin host. Cheap to share as `Arc<Runtime>`; every method takes `&self`.
pub struct Runtime {
    config: RuntimeConfig,
    engine: wasmtime::Engine,
    engine_limits: engine::EngineLimits,
    _ticker: engine::Ticker,
    linker: wasmtime::component::Linker<imports::State>,
    cache: cache::CompiledCache,
    kv: Arc<dyn KvBackend>,
    http: reqwest::Client,
    plugins: DashMap<String, Arc<registry::Entry>>,
    /// The engine's instance slots, shared by every plugin.
    budget: Arc<pool::InstanceBudget>,
    changes: broadcast::Sender<RegistryChange>,
    watcher: Mutex<Option<notify::RecommendedWatcher>>,
    /// Set by [`Runtime::record_http`]: versions loaded after it record
    /// their requests instead of sending them.
    http_recorder: std::sync::OnceLock<Arc<imports::HttpRecorder>>,
    me: Weak<Runtime>,
}

/// Drives calls made from threads outside any tokio runtime (benchmarks,
/// dedicated worker threads). Static, so it is never dropped inside an async
/// context.
static FALLBACK_RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("busbar-plugin-io")
        .enable_all()
        .build()
        .expect("cannot start the plugin I/O runtime")
});

impl Runtime {
    /// Creates the engine (sized from the manifests present now) and the
    /// registry. Nothing is loaded until [`Runtime::start`].
    pub fn new(config: RuntimeConfig, kv: Arc<dyn KvBackend>) -> anyhow::Result<Arc<Runtime>> {
        let (engine, engine_limits) = engine::build(largest_memory_cap(&config.plugins_dir))?;
        let ticker = engine::Ticker::start(&engine)?;
        let linker = imports::linker(&engine)?;
        let cache = cache::CompiledCache::new(&config.cache_dir, &engine)?;
        let (changes, _) = broadcast::channel(256);
        let http = imports::http_client()?;
        Ok(Arc::new_cyclic(|me| Runtime {
            config,
            engine,
            engine_limits,
            _ticker: ticker,
            linker,
            cache,
            kv,
            http,
            plugins: DashMap::new(),
            budget: pool::InstanceBudget::new(engine::TOTAL_INSTANCES),
            changes,
            watcher: Mutex::new(None),
            http_recorder: std::sync::OnceLock::new(),
            me: me.clone(),
        }))
    }

    /// Starts the watcher if `config.watch`, then loads every plugin in the
    /// directory (compiling on blocking threads).
    pub async fn start(self: &Arc<Self>) -> anyhow::Result<()> {
        self.watch()?;
        self.rescan().await
    }

    /// Starts the watcher if `config.watch`. Call it before the first
    /// [`Runtime::rescan`], so a file written while that scan runs is not missed
    /// (an event for a file the scan already loaded is a no-op).
    pub fn watch(self: &Arc<Self>) -> anyhow::Result<()> {
        if self.config.watch {
            let watcher = watch::start(self)?;
            *self.watcher.lock() = Some(watcher);
        }
        Ok(())
    }

    /// Re-reads the plugins directory now and reconciles every plugin with it.
    pub async fn rescan(&self) -> anyhow::Result<()> {
        let this = self.self_arc()?;
        let names = self.names_to_scan()?;
        let loads = names.into_iter().map(|name| {
            let rt = this.clone();
            async move { rt.reconcile(&name).await }
        });
        futures::future::join_all(loads).await;
        Ok(())
    }

    /// Calls plugin `plugin`'s `handle`. Blocks the calling thread for up to the
    /// plugin's `timeout_ms`: call it from a dedicated thread or tokio's blocking
    /// pool, never from an async worker thread.
    pub fn call_blocking(
        &self,
        plugin: &str,
        event: &Event,
        delivery: &Delivery,
    ) -> Result<Vec<NewEvent>, CallError> {
        let Some(entry) = self.plugins.get(plugin).map(|e| e.clone()) else {
            return Err(CallError::NotLoaded {
                plugin: plugin.to_string(),
            });
        };
        // Load the version once: a reload during the call does not affect it.
        let Some(version) = entry.current.load_full() else {
            return Err(CallError::NotLoaded {
                plugin: plugin.to_string(),
            });
        };
        entry
            .calls
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let work = call::run(&version, event, delivery);
        let result = match tokio::runtime::Handle::try_current() {
            Ok(handle) => handle.block_on(work),
            Err(_) => FALLBACK_RUNTIME.block_on(work),
        };
        if let Err(e) = &result {
            entry.record_call_error(e);
        }
        result
    }

    /// [`Runtime::call_blocking`] on tokio's blocking pool.
    pub async fn call(
        self: &Arc<Self>,
        plugin: &str,
        event: Event,
        delivery: Delivery,
    ) -> Result<Vec<NewEvent>, CallError> {
        let mut answers = self.call_batch(plugin, vec![(event, delivery)]).await;
        answers.pop().map_or_else(
            || Err(panicked(plugin, "no answer for the call")),
            |(result, _)| result,
        )
    }

    /// Runs `calls` of plugin `plugin` one after another on ONE blocking
    /// thread: one hand-off for the batch instead of one per call. Each call
    /// keeps its own limits (timeout, CPU budget on that thread's CPU clock,
    /// memory) exactly as alone. Answers come in order, each with the time
    /// its call took.
    pub async fn call_batch(
        self: &Arc<Self>,
        plugin: &str,
        calls: Vec<(Event, Delivery)>,
    ) -> Vec<(Result<Vec<NewEvent>, CallError>, std::time::Duration)> {
        let this = self.clone();
        let name = plugin.to_string();
        let n = calls.len();
        tokio::task::spawn_blocking(move || {
            calls
                .iter()
                .map(|(event, delivery)| {
                    let started = std::time::Instant::now();
                    let result = this.call_blocking(&name, event, delivery);
                    (result, started.elapsed())
                })
                .collect()
        })
        .await
        .unwrap_or_else(|e| {
            // Calls that ran before the panic are answered as failed too: they
            // are delivered again (at least once).
            let message = format!("the host panicked while running the call: {e}");
            (0..n)
                .map(|_| (Err(panicked(plugin, &message)), Default::default()))
                .collect()
        })
    }

    /// Every known plugin, sorted by name.
    pub fn status(&self) -> Vec<PluginStatus> {
        let mut all: Vec<PluginStatus> = self.plugins.iter().map(|e| e.status()).collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    /// The manifest of the version serving now.
    pub fn manifest(&self, plugin: &str) -> Option<Arc<Manifest>> {
        let entry = self.plugins.get(plugin)?;
        entry.current.load().as_ref().map(|v| v.manifest.clone())
    }

    pub fn is_loaded(&self, plugin: &str) -> bool {
        self.plugins
            .get(plugin)
            .is_some_and(|e| e.current.load().is_some())
    }

    /// How many plugins have a version serving now.
    pub fn loaded_count(&self) -> usize {
        self.plugins
            .iter()
            .filter(|e| e.current.load().is_some())
            .count()
    }

    /// Loaded / Unloaded / Failed notifications, from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<RegistryChange> {
        self.changes.subscribe()
    }

    /// The per-instance memory ceiling this engine was sized with, in MiB.
    pub fn memory_ceiling_mib(&self) -> u64 {
        self.engine_limits.slot_mib
    }

    /// Instances created so far by the serving version of `plugin` (fresh
    /// policy: one per call; reuse: one per pool slot and per recycle).
    pub fn instances_created(&self, plugin: &str) -> Option<u64> {
        let entry = self.plugins.get(plugin)?;
        let v = entry.current.load_full()?;
        Some(
            v.instances_created
                .load(std::sync::atomic::Ordering::Relaxed),
        )
    }

    /// Instances of `plugin` alive now, idle or in a call, over all its
    /// versions (`None`: no plugin of that name was ever seen).
    pub fn live_instances(&self, plugin: &str) -> Option<u32> {
        Some(self.plugins.get(plugin)?.slots.live())
    }

    /// Loads run on blocking threads and need an owned handle; every Runtime
    /// lives in the Arc made by `new`, so this only fails while it is being dropped.
    fn self_arc(&self) -> anyhow::Result<Arc<Runtime>> {
        self.me
            .upgrade()
            .ok_or_else(|| anyhow::anyhow!("the plugin runtime is shutting down"))
    }
}

fn panicked(plugin: &str, message: &str) -> CallError {
    CallError::Failed {
        plugin: plugin.to_string(),
        kind: FailureKind::Panic,
        message: message.to_string(),
    }
}

/// The largest `limits.memory_mib` among the plugins' manifests in `dir`
/// (0 if none parse); a `.toml` without its `.wasm` is not a plugin's.
fn largest_memory_cap(dir: &std::path::Path) -> u64 {
    let Ok(read) = std::fs::read_dir(dir) else {
        return 0;
    };
    read.flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml") && p.with_extension("wasm").exists())
        .filter_map(|p| Manifest::load(&p).ok())
        .map(|m| m.limits.memory_mib)
        .max()
        .unwrap_or(0)
}
