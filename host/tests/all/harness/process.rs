//! The child-process harness: `busbar serve` as a real process on a free
//! loopback port, for tests that need one: crash safety (kill -9), restarts,
//! several nodes, the start-up log, the CLI against a node.

use super::{busbar_bin, free_port, plugin_cache};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

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
            plugin_cache().display()
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
            &plugin_cache().display().to_string(),
            &self.dir.path().join("cache").display().to_string(),
        );
        std::fs::write(path, config).unwrap();
    }

    /// Like [`NodeDir::start`], with extra environment variables for the server.
    pub fn start_with_env(&self, env: &[(&str, &str)]) -> Server {
        let mut server = self.spawn(env);
        server.wait_ready();
        server
    }

    /// Starts `busbar serve` without waiting for anything.
    pub fn spawn(&self, env: &[(&str, &str)]) -> Server {
        let child = self
            .command()
            .envs(env.iter().copied())
            .spawn()
            .expect("start busbar serve");
        self.attach(child)
    }

    /// The `busbar serve` command for this directory, its log begun afresh,
    /// for a test that must change how the process starts.
    pub fn command(&self) -> Command {
        let log = std::fs::File::create(self.log()).expect("create the server log");
        let mut command = Command::new(busbar_bin());
        command
            .arg("serve")
            .arg("--config")
            .arg(self.dir.path().join("busbar.toml"))
            // The test runner's own tokens must not leak into a node a test sets up.
            .env_remove("BUSBAR_ADMIN_TOKEN")
            .env_remove("BUSBAR_PUBLISH_TOKEN")
            .env("BUSBAR_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log);
        command
    }

    /// A [`Server`] for a child started from [`NodeDir::command`].
    pub fn attach(&self, child: Child) -> Server {
        Server {
            child,
            base: self.base(),
            log: self.log(),
        }
    }

    /// The log of the latest run of a node on this directory.
    pub fn log(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }
}

pub struct Server {
    pub child: Child,
    pub base: String,
    pub log: PathBuf,
}

impl Server {
    /// Waits until `/readyz` answers 200: the store is open and the plugins are
    /// loaded. Panics with the server's log if it exits or never gets there.
    pub fn wait_ready(&mut self) {
        let client = super::http();
        let (child, base, log) = (&mut self.child, &self.base, &self.log);
        let log_text = || std::fs::read_to_string(log).unwrap_or_default();
        let ready = super::poll_until(Duration::from_secs(120), || {
            if let Some(status) = child.try_wait().expect("poll busbar serve") {
                panic!(
                    "busbar serve exited with {status} before it was ready; its log:\n{}",
                    log_text()
                );
            }
            let r = client.get(format!("{base}/readyz")).send().ok()?;
            r.status().is_success().then_some(())
        });
        if ready.is_none() {
            panic!(
                "busbar did not come up on {base} within 120 s; its log:\n{}",
                log_text()
            );
        }
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
