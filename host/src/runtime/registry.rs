//! The set of plugins: loading a `NAME.wasm` (+ `NAME.toml`) into a new
//! [`Version`], swapping it in atomically, unloading, and the status shown
//! by `GET /v1/plugins`.
//!
//! A load never replaces a good version with a bad one: the new file is
//! compiled (or fetched from the compiled cache) on a blocking thread and
//! type-checked against the `handler` world first. On any error the old
//! version keeps serving and the error is logged, kept as `last_error`,
//! broadcast as [`RegistryChange::Failed`] and counted.

use super::Runtime;
use super::cache::{Origin, sha256_hex};
use super::imports::PluginHost;
use super::imports::bindings::HandlerPre;
use super::manifest::{Limits, Manifest, read_plugin_file};
use super::pool::{InstanceBudget, Slots, Version, check_memory};
use arc_swap::ArcSwapOption;
use parking_lot::Mutex;
use serde::Serialize;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// What happened to a plugin; sent to every [`Runtime::subscribe`] receiver.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum RegistryChange {
    /// A new version serves from now on; `hash` is the `.wasm` file's SHA-256.
    Loaded { name: String, hash: String },
    /// The `.wasm` file is gone; calls fail with `NotLoaded`.
    Unloaded { name: String },
    /// A file could not be loaded; any previous version keeps serving.
    Failed { name: String, error: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PluginState {
    /// A version is serving (it may be older than the files if the last load failed:
    /// see `last_error`).
    Loaded,
    /// No version could be loaded.
    Failed,
    /// The `.wasm` file was removed.
    Unloaded,
}

/// One plugin, as `GET /v1/plugins` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct PluginStatus {
    pub name: String,
    pub state: PluginState,
    /// The first 12 hex digits of the serving `.wasm` file's SHA-256.
    pub version: Option<String>,
    /// RFC 3339 time the serving version was loaded.
    pub loaded_at: Option<String>,
    pub policy: Option<&'static str>,
    pub limits: Option<Limits>,
    /// Instances alive now (idle in the pool or running a call).
    pub instances: u32,
    /// Of those, warm instances of the serving version waiting in the pool.
    pub idle_instances: usize,
    pub calls: u64,
    pub errors: u64,
    /// Why the last load failed (cleared by the next successful load).
    pub last_error: Option<String>,
    /// The most recent failed call.
    pub last_call_error: Option<String>,
}

pub(crate) struct Entry {
    pub name: Arc<str>,
    pub current: ArcSwapOption<Version>,
    pub slots: Arc<Slots>,
    /// Serialises loads of this plugin (watcher and `rescan` may race).
    load_lock: tokio::sync::Mutex<()>,
    pub calls: AtomicU64,
    pub errors: AtomicU64,
    info: Mutex<Info>,
}

struct Info {
    state: PluginState,
    last_error: Option<String>,
    last_call_error: Option<String>,
    /// (wasm hash, manifest) of the last failed load, so an unchanged bad
    /// file is not recompiled on every event about it.
    failed: Option<(String, Manifest)>,
}

impl Entry {
    pub fn new(name: &str, budget: &Arc<InstanceBudget>) -> Entry {
        Entry {
            name: name.into(),
            current: ArcSwapOption::empty(),
            slots: Slots::new(name, budget),
            load_lock: tokio::sync::Mutex::new(()),
            calls: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            info: Mutex::new(Info {
                state: PluginState::Unloaded,
                last_error: None,
                last_call_error: None,
                failed: None,
            }),
        }
    }

    pub fn record_call_error(&self, error: &super::CallError) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        self.info.lock().last_call_error = Some(error.to_string());
    }

    pub fn status(&self) -> PluginStatus {
        let current = self.current.load_full();
        let info = self.info.lock();
        PluginStatus {
            name: self.name.to_string(),
            state: info.state,
            version: current.as_ref().map(|v| v.hash[..12].to_string()),
            loaded_at: current.as_ref().map(|v| {
                v.loaded_at
                    .format(&time::format_description::well_known::Rfc3339)
                    .unwrap_or_default()
            }),
            policy: current
                .as_ref()
                .map(|v| v.manifest.instances.policy.as_str()),
            limits: current.as_ref().map(|v| v.manifest.limits),
            instances: self.slots.live(),
            idle_instances: current.as_ref().map_or(0, |v| v.idle_count()),
            calls: self.calls.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            last_error: info.last_error.clone(),
            last_call_error: info.last_call_error.clone(),
        }
    }
}

/// Plugin names are file stems: letters, digits, `-` and `_`.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

impl Runtime {
    /// From now on, plugins loaded by this runtime record their outbound
    /// HTTP requests in the returned recorder instead of sending them (the
    /// allow-list still applies). For local tries of a plugin
    /// (`busbar call --http-record`), never for a serving node.
    pub fn record_http(&self) -> Arc<super::HttpRecorder> {
        self.http_recorder.get_or_init(Default::default).clone()
    }

    /// The most linear memory one instance of `plugin`'s serving version has
    /// held at the end of a call, in bytes (every memory of the instance).
    pub fn memory_high_water(&self, plugin: &str) -> Option<u64> {
        let entry = self.plugins.get(plugin)?;
        let v = entry.current.load_full()?;
        Some(v.memory_high_water.load(Ordering::Relaxed))
    }

    /// What the serving version of `plugin` imports, by name (e.g.
    /// `wasi:io/streams@0.2.6`), sorted.
    pub fn imports(&self, plugin: &str) -> Option<Vec<String>> {
        let entry = self.plugins.get(plugin)?;
        let v = entry.current.load_full()?;
        let ty = v.component.component_type();
        let mut names: Vec<String> = ty
            .imports(&self.engine)
            .map(|(n, _)| n.to_string())
            .collect();
        names.sort();
        Some(names)
    }

    /// Whether `NAME.wasm` is in the plugins directory (loaded or not).
    pub fn has_plugin_file(&self, plugin: &str) -> bool {
        valid_name(plugin)
            && std::fs::symlink_metadata(self.config.plugins_dir.join(format!("{plugin}.wasm")))
                .is_ok()
    }

    fn entry(&self, name: &str) -> Arc<Entry> {
        self.plugins
            .entry(name.to_string())
            .or_insert_with(|| Arc::new(Entry::new(name, &self.budget)))
            .clone()
    }

    /// Brings plugin `name` in line with the files on disk: load, reload,
    /// unload, or nothing when they are unchanged.
    pub(crate) async fn reconcile(self: &Arc<Self>, name: &str) {
        let wasm_path = self.config.plugins_dir.join(format!("{name}.wasm"));
        let toml_path = self.config.plugins_dir.join(format!("{name}.toml"));
        // A manifest alone is not a plugin (the default plugins directory is
        // also where plugin sources keep their `Cargo.toml`): a name gets an
        // entry once its `.wasm` exists, and its manifest is read then.
        let entry = match self.plugins.get(name).map(|e| e.clone()) {
            Some(entry) => entry,
            None if std::fs::symlink_metadata(&wasm_path).is_ok() => self.entry(name),
            None => return,
        };
        let _guard = entry.load_lock.lock().await;
        let read = tokio::task::spawn_blocking({
            let (w, t) = (wasm_path.clone(), toml_path.clone());
            move || read_files(&w, &t)
        })
        .await;
        let (bytes, manifest) = match read {
            Ok(Ok(Some(files))) => files,
            Ok(Ok(None)) => return self.unload(&entry),
            Ok(Err(e)) => return self.fail(&entry, format!("{e:#}"), None),
            Err(e) => {
                return self.fail(
                    &entry,
                    format!("reading the plugin files panicked: {e}"),
                    None,
                );
            }
        };
        let hash = sha256_hex(&bytes);
        let current = entry.current.load_full();
        if let Some(v) = &current
            && v.hash == hash
            && *v.manifest == manifest
        {
            // Unchanged (e.g. a bad file was put back to the good one): the
            // serving version matches the files again, so the error is over.
            let mut info = entry.info.lock();
            info.state = PluginState::Loaded;
            info.last_error = None;
            info.failed = None;
            return;
        }
        if entry.info.lock().failed.as_ref() == Some(&(hash.clone(), manifest.clone())) {
            return;
        }
        if let Err(e) = check_memory(&manifest, &self.engine_limits, name)
            .and_then(|()| check_component_header(name, &bytes))
        {
            return self.fail(&entry, format!("{e:#}"), Some((hash, manifest)));
        }
        let started = Instant::now();
        // Same component, new manifest: reuse the compiled code.
        let component = match &current {
            Some(v) if v.hash == hash => Ok((v.component.clone(), Origin::Cache)),
            _ => {
                let this = self.clone();
                let h = hash.clone();
                tokio::task::spawn_blocking(move || {
                    this.cache.load_or_compile(&this.engine, &bytes, &h)
                })
                .await
                .unwrap_or_else(|e| Err(anyhow::anyhow!("compilation panicked: {e}")))
            }
        };
        let (component, origin) = match component {
            Ok(c) => c,
            Err(e) => {
                let msg = format!("{name}.wasm is not a valid component: {e:#}");
                return self.fail(&entry, msg, Some((hash, manifest)));
            }
        };
        let pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| format!("{e:#}"))
            .and_then(|pre| HandlerPre::new(pre).map_err(|e| format!("{e:#}")));
        let pre = match pre {
            Ok(p) => p,
            Err(e) => {
                let msg = super::world_check::explain(name, &self.engine, &component, &e);
                return self.fail(&entry, msg, Some((hash, manifest)));
            }
        };
        let host = Arc::new(PluginHost {
            name: entry.name.clone(),
            manifest: Arc::new(manifest),
            kv: self.kv.clone(),
            http: self.http.clone(),
            http_recorder: self.http_recorder.get().cloned(),
        });
        // Checked last, with the reservation made in the same step, so loads
        // running side by side cannot reserve more slots than the engine has.
        // Not remembered as a failed attempt: the same files may fit once
        // another plugin is removed.
        if let Err(e) = entry.slots.reserve(host.manifest.limits.max_instances) {
            return self.fail(&entry, format!("{e:#}"), None);
        }
        let version = Version::new(host, hash.clone(), component, pre, entry.slots.clone());
        if let Some(old) = entry.current.swap(Some(version)) {
            old.retire();
        }
        {
            let mut info = entry.info.lock();
            info.state = PluginState::Loaded;
            info.last_error = None;
            info.failed = None;
        }
        metrics::counter!("busbar_plugin_reloads_total", "plugin" => name.to_string()).increment(1);
        tracing::info!(
            plugin = name,
            version = &hash[..12],
            from = if origin == Origin::Cache {
                "cache"
            } else {
                "compiled"
            },
            ms = started.elapsed().as_millis() as u64,
            "plugin loaded"
        );
        let _ = self.changes.send(RegistryChange::Loaded {
            name: name.to_string(),
            hash,
        });
    }

    fn unload(&self, entry: &Entry) {
        let mut info = entry.info.lock();
        info.failed = None;
        let old = entry.current.swap(None);
        if old.is_none() && info.state != PluginState::Failed {
            return;
        }
        info.state = PluginState::Unloaded;
        drop(info);
        if let Some(old) = old {
            old.retire();
        }
        entry.slots.unreserve();
        tracing::info!(plugin = %entry.name, "plugin unloaded: its .wasm file was removed");
        let _ = self.changes.send(RegistryChange::Unloaded {
            name: entry.name.to_string(),
        });
    }

    fn fail(&self, entry: &Entry, error: String, attempt: Option<(String, Manifest)>) {
        {
            let mut info = entry.info.lock();
            info.last_error = Some(error.clone());
            info.failed = attempt;
            info.state = if entry.current.load().is_some() {
                PluginState::Loaded
            } else {
                PluginState::Failed
            };
        }
        let serving = entry
            .current
            .load()
            .as_ref()
            .map(|v| v.hash[..12].to_string());
        tracing::error!(
            plugin = %entry.name,
            serving = serving.as_deref().unwrap_or("nothing"),
            "plugin load failed: {error}"
        );
        metrics::counter!("busbar_plugin_reload_failures_total", "plugin" => entry.name.to_string()).increment(1);
        let _ = self.changes.send(RegistryChange::Failed {
            name: entry.name.to_string(),
            error,
        });
    }

    /// Every plugin name with a file in the directory, plus those known already
    /// (so deletions are seen).
    pub(crate) fn names_to_scan(&self) -> anyhow::Result<Vec<String>> {
        let dir = &self.config.plugins_dir;
        let mut names: Vec<String> = self.plugins.iter().map(|e| e.key().clone()).collect();
        let read = std::fs::read_dir(dir).map_err(|e| {
            anyhow::anyhow!("cannot read the plugins directory {}: {e}", dir.display())
        })?;
        for item in read.flatten() {
            if let Some(name) = plugin_name(&item.path()) {
                names.push(name);
            }
        }
        names.sort();
        names.dedup();
        Ok(names)
    }
}

/// The plugin a path in the plugins directory belongs to, if any
/// (`NAME.wasm` or `NAME.toml`, NAME a valid plugin name).
pub fn plugin_name(path: &Path) -> Option<String> {
    let ext = path.extension()?.to_str()?;
    if ext != "wasm" && ext != "toml" {
        return None;
    }
    let stem = path.file_stem()?.to_str()?;
    valid_name(stem).then(|| stem.to_string())
}

/// The largest `.wasm` file busbar reads (the Python example is about 20 MiB).
const MAX_WASM_BYTES: u64 = 512 << 20;

/// `None` when there is no `.wasm` (the plugin is absent).
fn read_files(wasm: &Path, toml: &Path) -> anyhow::Result<Option<(Vec<u8>, Manifest)>> {
    let Some(bytes) = read_plugin_file(wasm, MAX_WASM_BYTES)? else {
        return Ok(None);
    };
    let manifest = Manifest::load(toml)?;
    Ok(Some((bytes, manifest)))
}

/// The preamble of a component: `\0asm`, binary version 0x0d, layer 1.
const COMPONENT_HEADER: [u8; 8] = *b"\0asm\x0d\0\x01\0";
/// The preamble of a core module: `\0asm`, version 1, layer 0.
const MODULE_HEADER: [u8; 8] = *b"\0asm\x01\0\0\0";

/// Tells what a file is before the compiler sees it, so that something
/// that is not a component gets a message saying so (and what to do)
/// rather than whatever the parser trips over first.
fn check_component_header(name: &str, bytes: &[u8]) -> anyhow::Result<()> {
    let head = bytes.get(..8).unwrap_or(bytes);
    if head == COMPONENT_HEADER {
        return Ok(());
    }
    if head == MODULE_HEADER {
        anyhow::bail!(
            "{name}.wasm is a core WebAssembly module, not a WebAssembly component: wrap it with \
             `wasm-tools component new {name}.wasm --adapt wasi_snapshot_preview1.reactor.wasm \
             -o {name}.wasm` (the adapter is wasmtime's WASI preview 1 reactor adapter, also in the \
             crate wasi-preview1-component-adapter-provider; it must have been linked with the \
             world's type, e.g. wit-bindgen's handler_component_type.o), or build Rust for \
             wasm32-wasip2, which makes a component directly"
        );
    }
    if head.starts_with(b"\0asm") && head.len() == 8 {
        anyhow::bail!(
            "{name}.wasm is not a WebAssembly component this host reads: its header says binary \
             version {:#x}, layer {}; busbar reads components (version 0xd, layer 1)",
            u16::from_le_bytes([head[4], head[5]]),
            u16::from_le_bytes([head[6], head[7]])
        );
    }
    anyhow::bail!(
        "{name}.wasm is not a WebAssembly component: it does not start with the component \
         header (`\\0asm` followed by version 0xd, layer 1)"
    )
}
