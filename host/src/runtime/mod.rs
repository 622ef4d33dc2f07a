//! The wasmtime host: engine, plugin registry, manifests, limits, host imports, hot reload.
// Interface placeholder; the runtime replaces this file.
use crate::event::Event;
use std::path::PathBuf;
use std::sync::Arc;
pub mod kv;
pub use kv::{KvBackend, KvError, RedbKv};
pub struct RuntimeConfig {
    pub plugins_dir: PathBuf,
    pub cache_dir: PathBuf,
    pub watch: bool,
}
pub struct Runtime;
#[derive(Debug, Clone)]
pub struct Delivery {
    pub rule: String,
    pub target: String,
    pub attempt: u32,
    pub id: String,
}
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub source: String,
    pub detail_type: String,
    pub detail: serde_json::Value,
    pub resources: Vec<String>,
    pub bus: Option<String>,
}
#[derive(Debug, Clone)]
pub enum CallError {
    NotLoaded { plugin: String },
    Retry { plugin: String, message: String },
    Reject { plugin: String, message: String },
}
impl CallError {
    pub fn is_retryable(&self) -> bool {
        true
    }
    pub fn reason(&self) -> String {
        String::new()
    }
}
#[derive(Debug, Clone, serde::Serialize)]
pub struct PluginStatus {
    pub name: String,
}
#[derive(Debug, Clone, Default)]
pub struct Manifest {
    pub scaling: Scaling,
}
#[derive(Debug, Clone, Default)]
pub struct Scaling {
    pub concurrency: u32,
    pub min_concurrency: u32,
    pub max_concurrency: u32,
}
#[derive(Debug, Clone)]
pub enum RegistryChange {
    Loaded { name: String, hash: String },
    Unloaded { name: String },
    Failed { name: String, error: String },
}
impl Runtime {
    pub fn new(_c: RuntimeConfig, _kv: Arc<dyn KvBackend>) -> anyhow::Result<Arc<Runtime>> {
        Ok(Arc::new(Runtime))
    }
    pub async fn start(self: &Arc<Self>) -> anyhow::Result<()> {
        Ok(())
    }
    pub fn call_blocking(
        &self,
        plugin: &str,
        _e: &Event,
        _d: &Delivery,
    ) -> Result<Vec<NewEvent>, CallError> {
        Err(CallError::NotLoaded {
            plugin: plugin.into(),
        })
    }
    pub async fn call(
        self: &Arc<Self>,
        plugin: &str,
        e: Event,
        d: Delivery,
    ) -> Result<Vec<NewEvent>, CallError> {
        self.call_blocking(plugin, &e, &d)
    }
    pub fn status(&self) -> Vec<PluginStatus> {
        vec![]
    }
    pub fn manifest(&self, _p: &str) -> Option<Arc<Manifest>> {
        None
    }
    pub fn is_loaded(&self, _p: &str) -> bool {
        false
    }
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<RegistryChange> {
        tokio::sync::broadcast::channel(1).1
    }
    pub async fn rescan(&self) -> anyhow::Result<()> {
        Ok(())
    }
}
impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self:?}")
    }
}
