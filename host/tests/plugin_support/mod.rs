//! Shared set-up for the runtime tests: the real plugins built by
//! `plugins/build.sh`, a plugins directory of the test's own, one compiled
//! cache for the whole test run, and a real redb file.

#![allow(dead_code)] // each test binary uses a different subset

use busbar::event::{Event, EventInput, EventLimits};
use busbar::runtime::{Delivery, RedbKv, Runtime, RuntimeConfig};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A built plugin: `plugins/NAME.wasm`, else `plugins/fixtures/NAME.wasm`.
pub fn wasm(name: &str) -> PathBuf {
    let root = repo_root().join("plugins");
    for p in [
        root.join(format!("{name}.wasm")),
        root.join("fixtures").join(format!("{name}.wasm")),
    ] {
        if p.exists() {
            return p;
        }
    }
    panic!(
        "plugin {name}.wasm not found under {}: run plugins/build.sh first",
        root.display()
    );
}

/// The manifest shipped beside an example plugin.
pub fn shipped_manifest(name: &str) -> String {
    let path = repo_root().join("plugins").join(format!("{name}.toml"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Shared by every test so the big JavaScript and Python components compile once per run.
pub fn cache_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("busbar-plugin-cache")
}

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
        cache_dir: cache_dir(),
        watch,
    };
    Runtime::new(config, kv).unwrap()
}

/// Copies built plugin `built` into `dir` as `name.wasm`, with `manifest` as `name.toml`.
pub fn install(dir: &Path, name: &str, built: &str, manifest: Option<&str>) {
    std::fs::copy(wasm(built), dir.join(format!("{name}.wasm"))).unwrap();
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

/// Polls `f` every 10 ms until it is true; panics with `what` after 30 s.
/// (A bound against hanging, not a timing assertion.)
pub async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "gave up waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
