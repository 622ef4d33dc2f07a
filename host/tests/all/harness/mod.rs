//! What every topic shares: the one `eventually`, where the repo and its built
//! plugins are, free ports, the `busbar` binary, one HTTP client, and the
//! harnesses a test starts busbar with:
//!
//! - [`server`]: a node in this process, served on a free port (fast; its
//!   clock can be advanced);
//! - [`process`]: `busbar serve` as a child process (for kill -9, restarts and
//!   several nodes);
//! - [`runtime`]: the plugin runtime alone, without a node;
//! - [`nats`]: a real `nats-server -js` for the JetStream backend.
#![allow(dead_code)] // not every helper is used by every feature set (otlp)

pub mod nats;
pub mod process;
pub mod runtime;
pub mod server;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// How often [`eventually`] looks again: often enough that a test ends soon
/// after its condition holds, rarely enough not to load the 2 cores it shares.
const POLL_EVERY: Duration = Duration::from_millis(50);

/// Polls `f` until it gives a value; panics naming `what` after `limit`.
/// The limit is a bound against hanging, not a timing assertion.
pub fn eventually<T>(what: &str, limit: Duration, f: impl FnMut() -> Option<T>) -> T {
    poll_until(limit, f).unwrap_or_else(|| panic!("gave up waiting for {what} after {limit:?}"))
}

/// [`eventually`] for a caller with more to say when it gives up (a server's
/// log, what did arrive): `None` once `limit` has passed.
pub fn poll_until<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(POLL_EVERY);
    }
}

/// [`eventually`] for async tests: sleeps on the tokio timer, so the tasks the
/// test waits for keep running on the same runtime meanwhile.
pub async fn eventually_async<T>(
    what: &str,
    limit: Duration,
    mut f: impl AsyncFnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "gave up waiting for {what} after {limit:?}"
        );
        tokio::time::sleep(POLL_EVERY).await;
    }
}

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A built plugin or fixture by its path in the repo, e.g.
/// `built("plugins/fixtures/testkit.wasm")`.
pub fn built(rel: &str) -> PathBuf {
    let p = repo_root().join(rel);
    assert!(
        p.exists(),
        "{} is missing: run plugins/build.sh first",
        p.display()
    );
    p
}

/// A built plugin by name: `plugins/NAME.wasm`, else `plugins/fixtures/NAME.wasm`.
pub fn wasm(name: &str) -> PathBuf {
    let root = repo_root().join("plugins");
    [
        root.join(format!("{name}.wasm")),
        root.join("fixtures").join(format!("{name}.wasm")),
    ]
    .into_iter()
    .find(|p| p.exists())
    .unwrap_or_else(|| {
        panic!(
            "plugin {name}.wasm not found under {}: run plugins/build.sh first",
            root.display()
        )
    })
}

/// The manifest shipped beside an example plugin.
pub fn shipped_manifest(name: &str) -> String {
    let path = repo_root().join("plugins").join(format!("{name}.toml"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// One compiled-plugin cache for every runtime and child process of the run,
/// so the large JavaScript and Python components compile once, not per test.
pub fn plugin_cache() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("busbar-plugin-cache");
    std::fs::create_dir_all(&dir).expect("create the shared plugin cache");
    dir
}

/// A loopback port nothing listens on (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a free port on 127.0.0.1")
        .port()
}

/// The `busbar` binary under test, copied once per test run: a child process
/// may run for minutes (crash rounds, restarts), and another build into the
/// same target directory meanwhile must not swap a different `busbar` under
/// it. Copies from runs over an hour old are removed (no run lasts that long).
pub fn busbar_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"));
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten() {
                let stale = e
                    .metadata()
                    .and_then(|m| m.modified())
                    .is_ok_and(|t| t.elapsed().unwrap_or_default() > Duration::from_secs(3600));
                if stale && e.file_name().to_string_lossy().starts_with("busbar-run-") {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        // Named `busbar` still: help and usage text print the program's name.
        let run = dir.join(format!("busbar-run-{}", std::process::id()));
        std::fs::create_dir_all(&run).expect("create a directory in CARGO_TARGET_TMPDIR");
        let path = run.join("busbar");
        std::fs::copy(env!("CARGO_BIN_EXE_busbar"), &path)
            .expect("copy the busbar binary into CARGO_TARGET_TMPDIR");
        path
    })
}

/// A blocking HTTP client for tests that speak to a node by URL.
pub fn http() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("http client")
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}
