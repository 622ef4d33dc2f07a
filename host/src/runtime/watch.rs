//! Hot reload: watches the top level of the plugins directory and reloads a
//! plugin once its files have stopped changing.
//!
//! Editors and `cp` write in several steps, so an event only marks the plugin
//! as pending; it is reloaded when the size and modification time of both its
//! files have been the same for [`SETTLE`]. A half-written file is therefore
//! never loaded, unless the writer stalls for longer than that mid-file, and
//! then the load fails the type check and the old version keeps serving until
//! the finished file arrives with its own event.

use super::Runtime;
use super::registry::plugin_name;
use notify::{RecursiveMode, Watcher};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::mpsc;

/// How long a plugin's files must stay unchanged before they are loaded.
pub const SETTLE: Duration = Duration::from_millis(50);
/// How often pending plugins are re-examined.
const POLL: Duration = Duration::from_millis(10);

/// What the debouncer compares: (length, mtime) of the `.wasm` and the `.toml`.
type Signature = (Option<(u64, SystemTime)>, Option<(u64, SystemTime)>);

fn signature(dir: &Path, name: &str) -> Signature {
    let meta = |ext: &str| {
        std::fs::metadata(dir.join(format!("{name}.{ext}")))
            .ok()
            .map(|m| (m.len(), m.modified().unwrap_or(SystemTime::UNIX_EPOCH)))
    };
    (meta("wasm"), meta("toml"))
}

/// Starts watching; the returned watcher stops when dropped.
pub fn start(runtime: &Arc<Runtime>) -> anyhow::Result<notify::RecommendedWatcher> {
    let dir: PathBuf = runtime.config.plugins_dir.clone();
    let (tx, rx) = mpsc::unbounded_channel::<String>();
    let mut watcher =
        notify::recommended_watcher(move |res: notify::Result<notify::Event>| match res {
            // Opens and reads (our own included) change nothing.
            Ok(event) if event.kind.is_access() => {}
            Ok(event) => {
                for path in &event.paths {
                    if let Some(name) = plugin_name(path) {
                        let _ = tx.send(name);
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "plugin directory watcher error"),
        })?;
    watcher
        .watch(&dir, RecursiveMode::NonRecursive)
        .map_err(|e| {
            anyhow::anyhow!("cannot watch the plugins directory {}: {e}", dir.display())
        })?;
    tokio::spawn(debounce(Arc::downgrade(runtime), dir, rx));
    Ok(watcher)
}

async fn debounce(runtime: Weak<Runtime>, dir: PathBuf, mut rx: mpsc::UnboundedReceiver<String>) {
    // name -> (last signature seen, when it last changed)
    let mut pending: HashMap<String, (Signature, Instant)> = HashMap::new();
    loop {
        let next = if pending.is_empty() {
            match rx.recv().await {
                Some(name) => Some(name),
                None => return,
            }
        } else {
            match tokio::time::timeout(POLL, rx.recv()).await {
                Ok(Some(name)) => Some(name),
                Ok(None) => return,
                Err(_) => None,
            }
        };
        let now = Instant::now();
        if let Some(name) = next {
            let sig = signature(&dir, &name);
            pending.insert(name, (sig, now));
            // Drain whatever else arrived in the same burst.
            while let Ok(name) = rx.try_recv() {
                let sig = signature(&dir, &name);
                pending.insert(name, (sig, now));
            }
            continue;
        }
        let mut ready = Vec::new();
        for (name, (sig, since)) in pending.iter_mut() {
            let current = signature(&dir, name);
            if current != *sig {
                *sig = current;
                *since = now;
            } else if now.duration_since(*since) >= SETTLE {
                ready.push(name.clone());
            }
        }
        for name in ready {
            pending.remove(&name);
            let Some(rt) = runtime.upgrade() else { return };
            tokio::spawn(async move { rt.reconcile(&name).await });
        }
    }
}
