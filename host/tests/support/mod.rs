//! Runs `busbar serve` as a child process on a free loopback port, for tests
//! that need a real process: crash safety (kill -9), restarts, several nodes.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A built plugin or fixture, e.g. `plugin_wasm("plugins/fixtures/testkit.wasm")`.
pub fn built(rel: &str) -> PathBuf {
    let p = repo_root().join(rel);
    assert!(
        p.exists(),
        "{} is missing: run plugins/build.sh first",
        p.display()
    );
    p
}

/// One compiled-plugin cache for every test process, so the large JavaScript and
/// Python components compile once per machine rather than once per test.
pub fn shared_cache() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/busbar-test-cache");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A node's directory: config, plugins and data live under one temp dir.
pub struct NodeDir {
    pub dir: tempfile::TempDir,
    pub port: u16,
}

impl NodeDir {
    /// `rules` is TOML appended to a config that listens on a free port.
    pub fn new(rules: &str) -> NodeDir {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        std::fs::create_dir_all(dir.path().join("plugins")).unwrap();
        let config = format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\nplugins_dir = \"{}\"\ndata_dir = \"{}\"\ncache_dir = \"{}\"\n{rules}",
            dir.path().join("plugins").display(),
            dir.path().join("data").display(),
            shared_cache().display()
        );
        std::fs::write(dir.path().join("busbar.toml"), config).unwrap();
        NodeDir { dir, port }
    }

    pub fn plugins(&self) -> PathBuf {
        self.dir.path().join("plugins")
    }

    /// Copies a built component into the plugins dir under `name`.
    pub fn add_plugin(&self, wasm: &Path, name: &str, manifest: Option<&str>) {
        std::fs::copy(wasm, self.plugins().join(format!("{name}.wasm"))).unwrap();
        if let Some(m) = manifest {
            std::fs::write(self.plugins().join(format!("{name}.toml")), m).unwrap();
        }
    }

    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Starts `busbar serve` on this directory and waits until it answers.
    pub fn start(&self) -> Server {
        self.start_with_env(&[])
    }

    /// Gives this node a compiled-plugin cache of its own, empty: its plugins
    /// compile at start as on a fresh machine.
    pub fn own_cache(&self) {
        let path = self.dir.path().join("busbar.toml");
        let config = std::fs::read_to_string(&path).unwrap().replace(
            &shared_cache().display().to_string(),
            &self.dir.path().join("cache").display().to_string(),
        );
        std::fs::write(path, config).unwrap();
    }

    /// Like [`NodeDir::start`], with extra environment variables for the server.
    pub fn start_with_env(&self, env: &[(&str, &str)]) -> Server {
        let server = self.spawn(env);
        server.wait_ready();
        server
    }

    /// Starts `busbar serve` without waiting for anything.
    pub fn spawn(&self, env: &[(&str, &str)]) -> Server {
        let log = std::fs::File::create(self.dir.path().join("server.log")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_busbar"))
            .arg("serve")
            .arg("--config")
            .arg(self.dir.path().join("busbar.toml"))
            .env("BUSBAR_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start busbar serve");
        Server {
            child,
            base: self.base(),
            log: self.dir.path().join("server.log"),
        }
    }
}

pub struct Server {
    pub child: Child,
    pub base: String,
    pub log: PathBuf,
}

impl Server {
    /// Waits until `/readyz` answers 200: the store is open and the plugins are loaded.
    pub fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(120);
        let client = reqwest::blocking::Client::new();
        while Instant::now() < deadline {
            if let Ok(r) = client.get(format!("{}/readyz", self.base)).send()
                && r.status().is_success()
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "busbar did not come up on {}; its log:\n{}",
            self.base,
            std::fs::read_to_string(&self.log).unwrap_or_default()
        );
    }

    /// SIGKILL: no shutdown code runs, as in a crash.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
