//! The runtime harness: the plugin runtime alone, without a node, over the
//! real plugins built by `plugins/build.sh`, a plugins directory of the test's
//! own, the run's shared compiled cache and a real redb file.

use busbar::bus::embedded::RedbKv;
use busbar::event::{Event, EventInput, EventLimits};
use busbar::runtime::{Delivery, Runtime, RuntimeConfig};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub struct Harness {
    pub plugins: tempfile::TempDir,
    pub data: tempfile::TempDir,
    pub rt: Arc<Runtime>,
}

impl Harness {
    /// A runtime over a fresh plugins dir holding `plugins` (name, manifest text or None).
    pub async fn new(plugins: &[(&str, Option<&str>)], watch: bool) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        for (name, manifest) in plugins {
            install(dir.path(), name, name, *manifest);
        }
        let data = tempfile::tempdir().unwrap();
        let rt = runtime(dir.path(), &data.path().join("kv.redb"), watch);
        rt.start().await.unwrap();
        Harness {
            plugins: dir,
            data,
            rt,
        }
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.plugins.path().join(file)
    }

    pub async fn call(
        &self,
        plugin: &str,
        detail_type: &str,
        detail: Value,
    ) -> Result<Vec<busbar::runtime::NewEvent>, busbar::runtime::CallError> {
        self.rt
            .call(plugin, event("test", detail_type, detail), delivery())
            .await
    }
}

pub fn runtime(plugins: &Path, kv_path: &Path, watch: bool) -> Arc<Runtime> {
    let kv = Arc::new(RedbKv::open(kv_path).unwrap());
    let config = RuntimeConfig {
        plugins_dir: plugins.to_path_buf(),
        cache_dir: super::plugin_cache(),
        watch,
    };
    Runtime::new(config, kv).unwrap()
}

/// Copies built plugin `built` into `dir` as `name.wasm`, with `manifest` as `name.toml`.
pub fn install(dir: &Path, name: &str, built: &str, manifest: Option<&str>) {
    std::fs::copy(super::wasm(built), dir.join(format!("{name}.wasm"))).unwrap();
    if let Some(m) = manifest {
        std::fs::write(dir.join(format!("{name}.toml")), m).unwrap();
    }
}

pub fn event(source: &str, detail_type: &str, detail: Value) -> Event {
    EventInput::from_json(json!({"source": source, "detail-type": detail_type, "detail": detail}))
        .unwrap()
        .into_event(&EventLimits::default())
        .unwrap()
}

pub fn delivery() -> Delivery {
    Delivery {
        rule: "test-rule".into(),
        target: "t1".into(),
        attempt: 1,
        id: uuid::Uuid::new_v4().to_string(),
    }
}
