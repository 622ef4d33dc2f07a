//! The in-process harness: a real busbar node serving HTTP on 127.0.0.1:0.
//!
//! The node runs on its own thread and tokio runtime, so tests speak to it with
//! blocking clients (reqwest, the awscli, boto3) exactly as outside callers do,
//! and reach into it (`server.node`) where they need to: its clock, its publish path.

use busbar::config::Config;
use busbar::node::Node;
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;

pub struct TestServer {
    /// `http://127.0.0.1:PORT`, no trailing slash.
    pub url: String,
    pub node: Arc<Node>,
    stop: Option<tokio::sync::watch::Sender<bool>>,
    thread: Option<std::thread::JoinHandle<()>>,
    _data: tempfile::TempDir,
    plugins_dir: tempfile::TempDir,
}

impl TestServer {
    /// A node with the default config, an empty data dir and an empty plugins dir.
    pub fn start() -> TestServer {
        Self::start_with(|_| {})
    }

    /// Like [`TestServer::start`], with `tweak` applied to the config first.
    pub fn start_with(tweak: impl FnOnce(&mut Config)) -> TestServer {
        Self::start_from(Config::default(), tweak)
    }

    /// A node configured by `toml` (a `busbar.toml`'s text: rules, metrics...)
    /// and then `tweak`; its directories and address are the test's own.
    pub fn start_toml(toml: &str, tweak: impl FnOnce(&mut Config)) -> TestServer {
        let config = Config::parse(toml).unwrap_or_else(|e| panic!("test config: {e:#}"));
        Self::start_from(config, tweak)
    }

    fn start_from(mut config: Config, tweak: impl FnOnce(&mut Config)) -> TestServer {
        let data = tempfile::tempdir().expect("temp data dir");
        let plugins = tempfile::tempdir().expect("temp plugins dir");
        config.server.data_dir = data.path().to_path_buf();
        config.server.plugins_dir = plugins.path().to_path_buf();
        config.server.listen = "127.0.0.1:0".into();
        tweak(&mut config);
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("tokio runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind 127.0.0.1:0");
                let addr = listener.local_addr().expect("local addr");
                let node = match Node::start(config, None).await {
                    Ok(n) => n,
                    Err(e) => {
                        let _ = ready_tx.send(Err(format!("{e:#}")));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok((format!("http://{addr}"), node.clone())));
                let mut on_stop = stop_rx;
                let signal = async move {
                    let _ = on_stop.wait_for(|s| *s).await;
                };
                if let Err(e) = busbar::ingest::serve_with_shutdown(node, listener, signal).await {
                    eprintln!("test server: {e:#}");
                }
            });
            rt.shutdown_timeout(Duration::from_secs(2));
        });
        let (url, node) = ready_rx
            .recv()
            .expect("test server thread")
            .unwrap_or_else(|e| panic!("node did not start: {e}"));
        TestServer {
            url,
            node,
            stop: Some(stop_tx),
            thread: Some(thread),
            _data: data,
            plugins_dir: plugins,
        }
    }

    pub fn client(&self) -> reqwest::blocking::Client {
        super::http()
    }

    /// The plugins directory the node watches (unless the config moved it).
    pub fn plugins(&self) -> &std::path::Path {
        self.plugins_dir.path()
    }

    pub fn get(&self, path: &str) -> Reply {
        Reply::from(self.client().get(format!("{}{path}", self.url)).send())
    }

    pub fn post_json(&self, path: &str, body: &Value) -> Reply {
        self.post_raw(path, "application/json", body.to_string().into_bytes())
    }

    pub fn post_raw(&self, path: &str, content_type: &str, body: Vec<u8>) -> Reply {
        Reply::from(
            self.client()
                .post(format!("{}{path}", self.url))
                .header("content-type", content_type)
                .body(body)
                .send(),
        )
    }

    /// One EventBridge operation over AWS JSON 1.1.
    pub fn aws(&self, op: &str, body: &Value) -> Reply {
        Reply::from(
            self.client()
                .post(format!("{}/", self.url))
                .header("content-type", "application/x-amz-json-1.1")
                .header("x-amz-target", format!("AWSEvents.{op}"))
                .body(body.to_string())
                .send(),
        )
    }

    /// Every archived event (no pattern: matching is not needed for this).
    pub fn archived(&self) -> Vec<Value> {
        let r = self.get("/v1/archive?limit=10000");
        assert_eq!(r.status, 200, "{}", r.text);
        r.json()["events"].as_array().cloned().unwrap_or_default()
    }

    pub fn archived_ids(&self) -> Vec<String> {
        self.archived()
            .iter()
            .map(|e| e["id"].as_str().unwrap_or_default().to_string())
            .collect()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(true);
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A response read whole: status, body text and headers.
pub struct Reply {
    pub status: u16,
    pub text: String,
    pub headers: reqwest::header::HeaderMap,
}

impl Reply {
    pub fn from(r: reqwest::Result<reqwest::blocking::Response>) -> Reply {
        let r = r.expect("request to the test server");
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let text = r.text().expect("response body");
        Reply {
            status,
            text,
            headers,
        }
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("response is not JSON ({e}): {}", self.text))
    }

    /// `error.code` of a native/admin error body.
    pub fn error_code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    pub fn error_message(&self) -> String {
        self.json()["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// `__type` of an AWS JSON error body.
    pub fn aws_type(&self) -> String {
        self.json()["__type"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

impl TestServer {
    /// `PUT /v1/rules/BUS/NAME` with `body`; panics unless it is accepted.
    pub fn put_rule(&self, bus: &str, name: &str, body: &Value) -> Value {
        let r = Reply::from(
            self.client()
                .put(format!("{}/v1/rules/{bus}/{name}", self.url))
                .json(body)
                .send(),
        );
        assert_eq!(r.status, 200, "rule {name}: {}", r.text);
        r.json()
    }

    /// This target's entry in `/v1/targets` (queue `bus/rule/target`).
    pub fn target(&self, queue: &str) -> Option<Value> {
        let all = self.get("/v1/targets").json();
        all["targets"]
            .as_array()?
            .iter()
            .find(|t| t["queue"] == queue)
            .cloned()
    }

    /// The dead letters waiting, as `/v1/dlq` lists them.
    pub fn dead_letters(&self) -> Vec<Value> {
        let r = self.get("/v1/dlq");
        assert_eq!(r.status, 200, "{}", r.text);
        r.json()["dead_letters"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }
}
