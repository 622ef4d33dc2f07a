//! The client commands against a real node: each test starts a node on a free
//! port with its own data and plugins directories and one rule, then runs the
//! `busbar` binary against it. The node runs in this process (its clock can be
//! advanced), except where a test restarts it: then it is a `busbar serve` child.
//!
//! The rule's target names a plugin that is not in the plugins directory: its
//! deliveries wait in the queue until they outgrow the target's maximum event
//! age (60 s, the smallest EventBridge allows) and then go to the dead-letter
//! queue, which is how the dead-letter test gets its dead letter without a
//! plugin, by moving the node's clock past that age.

use crate::harness::process::{NodeDir, Server};
use crate::harness::server::TestServer;
use crate::harness::{built, busbar_bin, eventually, stderr, stdout};
use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, ChildStdout, Command, Output, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

const CONFIG: &str = r#"
[metrics]
# No periodic metrics events: the tests count the events on the bus.
interval_secs = 0

[[rules]]
name = "orders"
pattern = { source = ["shop"] }

[[rules.targets]]
id = "sink"
plugin = "absent-plugin"
retry = { max_retry_attempts = 0, max_event_age_secs = 60 }
"#;

/// A node the CLI talks to, and the directory the CLI runs in.
struct Node {
    url: String,
    kind: Kind,
}

enum Kind {
    InProcess {
        server: TestServer,
        /// The CLI's working directory (where `@file` arguments are written).
        cwd: tempfile::TempDir,
    },
    /// For a test that stops and starts the node on the same port and data.
    Process {
        dir: NodeDir,
        server: Option<Server>,
    },
}

impl Node {
    fn start() -> Node {
        Node::start_with(|_| {})
    }

    fn start_with(tweak: impl FnOnce(&mut busbar::config::Config)) -> Node {
        let server = TestServer::start_toml(CONFIG, tweak);
        Node {
            url: server.url.clone(),
            kind: Kind::InProcess {
                server,
                cwd: tempfile::tempdir().unwrap(),
            },
        }
    }

    fn start_process() -> Node {
        let dir = NodeDir::new(CONFIG);
        let server = dir.start();
        Node {
            url: dir.base(),
            kind: Kind::Process {
                dir,
                server: Some(server),
            },
        }
    }

    fn url(&self) -> String {
        self.url.clone()
    }

    fn dir(&self) -> &Path {
        match &self.kind {
            Kind::InProcess { cwd, .. } => cwd.path(),
            Kind::Process { dir, .. } => dir.dir.path(),
        }
    }

    fn plugins(&self) -> PathBuf {
        match &self.kind {
            Kind::InProcess { server, .. } => server.plugins().to_path_buf(),
            Kind::Process { dir, .. } => dir.plugins(),
        }
    }

    /// What the node logged, for a failure message.
    fn log(&self) -> String {
        match &self.kind {
            Kind::InProcess { .. } => "(the node runs in the test process)".into(),
            Kind::Process { server, .. } => {
                server.as_ref().map(Server::log_text).unwrap_or_default()
            }
        }
    }

    /// Moves an in-process node's clock forward.
    fn advance(&self, by: Duration) {
        match &self.kind {
            Kind::InProcess { server, .. } => server.node.clock.advance(by),
            Kind::Process { .. } => panic!("a child process's clock cannot be advanced"),
        }
    }

    /// Kills a child-process node (SIGKILL).
    fn stop(&mut self) {
        match &mut self.kind {
            Kind::Process { server, .. } => drop(server.take()),
            Kind::InProcess { .. } => panic!("an in-process node is stopped by dropping it"),
        }
    }

    /// Starts a child-process node again, on the same port and data directory.
    fn restart(&mut self) {
        match &mut self.kind {
            Kind::Process { dir, server } => *server = Some(dir.start()),
            Kind::InProcess { .. } => panic!("an in-process node cannot be restarted"),
        }
    }

    /// Runs the CLI against this node.
    fn busbar(&self, args: &[&str]) -> Output {
        self.busbar_with(args, &[])
    }

    fn busbar_with(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut cmd = self.command(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(busbar_bin());
        cmd.args(args)
            .env("BUSBAR_URL", self.url())
            .env_remove("BUSBAR_TOKEN")
            .env_remove("NO_COLOR")
            .current_dir(self.dir());
        cmd
    }

    /// Runs the CLI and insists on exit 0; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.busbar(args);
        assert_eq!(
            out.status.code(),
            Some(0),
            "busbar {args:?} failed:\n{}\nnode log:\n{}",
            stderr(&out),
            self.log()
        );
        stdout(&out)
    }

    fn json(&self, args: &[&str]) -> Value {
        let text = self.ok(args);
        serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("busbar {args:?} printed no JSON ({e}):\n{text}"))
    }

    /// Runs the CLI and insists on exit 1; returns stderr.
    fn fails(&self, args: &[&str]) -> String {
        let out = self.busbar(args);
        assert_eq!(
            out.status.code(),
            Some(1),
            "busbar {args:?} should fail with 1:\nstdout: {}\nstderr: {}",
            stdout(&out),
            stderr(&out)
        );
        stderr(&out)
    }

    fn put_one(&self, source: &str, detail_type: &str) -> String {
        let out = self.ok(&[
            "put",
            "--source",
            source,
            "--detail-type",
            detail_type,
            "--detail",
            r#"{"total": 250}"#,
        ]);
        out.trim().to_string()
    }
}

/// Lines of a child's output, read on a thread so the test can wait with a deadline.
fn lines_of(pipe: impl std::io::Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// The next line containing `needle`, within `limit`.
fn line_with(rx: &Receiver<String>, needle: &str, limit: Duration) -> String {
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line.contains(needle) => return line,
            Ok(_) => {}
            Err(RecvTimeoutError::Timeout) => panic!("no line with {needle:?} within {limit:?}"),
            Err(RecvTimeoutError::Disconnected) => {
                panic!("output ended before a line with {needle:?}")
            }
        }
    }
}

/// A running `busbar tail`; killed when dropped.
struct Tail {
    child: Child,
    out: Receiver<String>,
    err: Receiver<String>,
}

impl Tail {
    fn start(node: &Node, args: &[&str]) -> Tail {
        let mut argv = vec!["tail"];
        argv.extend_from_slice(args);
        let mut child = node
            .command(&argv)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let out: ChildStdout = child.stdout.take().unwrap();
        let err: ChildStderr = child.stderr.take().unwrap();
        let tail = Tail {
            child,
            out: lines_of(out),
            err: lines_of(err),
        };
        line_with(
            &tail.err,
            "tailing http://127.0.0.1",
            Duration::from_secs(20),
        );
        tail
    }

    /// Publishes with `publish` until tail prints a line for one of the ids it
    /// returned (the node may subscribe the stream a moment after the headers).
    fn catch(&self, mut publish: impl FnMut() -> String) -> (String, String) {
        for _ in 0..40 {
            let id = publish();
            let deadline = Instant::now() + Duration::from_millis(500);
            while let Ok(line) = self
                .out
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                if line.contains(&id) {
                    return (id, line);
                }
            }
        }
        panic!("tail printed none of the events published");
    }
}

impl Drop for Tail {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::File::create(&path)
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    format!("@{}", path.display())
}

#[test]
fn put_prints_ids_and_names_refused_entries() {
    let node = Node::start();
    let id = node.put_one("shop", "OrderPlaced");
    assert_eq!(id.len(), 36, "a generated id is a UUID: {id:?}");

    let file = write(
        node.dir(),
        "events.json",
        r#"[
            {"source": "shop", "detail-type": "OrderPlaced", "detail": {"n": 1}},
            {"source": "shop", "detail-type": "Broken", "detail": "not an object"},
            {"source": "shop", "detail-type": "Elsewhere", "detail": {}, "event-bus-name": "no-such-bus"}
        ]"#,
    );
    let out = node.busbar(&["put", &file]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let ids: Vec<String> = stdout(&out).lines().map(String::from).collect();
    assert_eq!(ids.len(), 1, "one id for the one accepted event: {ids:?}");
    let err = stderr(&out);
    assert!(
        err.contains("event 2 of 3 (shop/Broken) was refused: "),
        "{err}"
    );
    assert!(
        err.contains("event 3 of 3 (shop/Elsewhere) was refused: "),
        "{err}"
    );
    assert!(err.contains("no-such-bus"), "{err}");
    assert!(err.contains("2 of 3 events were refused"), "{err}");

    let out = node.busbar(&["put", "--file", &file[1..], "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let answer: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(answer["failed"], 2);
    assert_eq!(answer["entries"].as_array().unwrap().len(), 3);

    let out = node.busbar(&[
        "put",
        "--source",
        "shop",
        "--detail-type",
        "T",
        "--bus",
        "nowhere",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("event shop/T was refused: "),
        "{}",
        stderr(&out)
    );
}

#[test]
fn rules_list_show_put_enable_disable_delete() {
    let node = Node::start();
    let listed = node.ok(&["rules", "list"]);
    let row = listed
        .lines()
        .find(|l| l.starts_with("orders "))
        .unwrap_or_else(|| panic!("the config rule is listed:\n{listed}"));
    assert!(
        row.contains("ENABLED") && row.contains("absent-plugin") && row.contains("config"),
        "{row}"
    );

    let all = node.json(&["rules", "list", "--json"]);
    assert!(
        all["rules"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["name"] == "orders")
    );

    let out = node.ok(&[
        "rules",
        "put",
        "api-rule",
        "--pattern",
        r#"{"source": ["billing"]}"#,
        "--description",
        "billing events",
    ]);
    assert!(
        out.starts_with("rule api-rule on bus default: enabled"),
        "{out}"
    );
    let shown = node.ok(&["rules", "show", "api-rule"]);
    assert!(shown.contains("\"billing\""), "{shown}");
    assert!(shown.contains("billing events"), "{shown}");
    assert!(shown.contains("targets:     none"), "{shown}");

    let filtered = node.json(&["rules", "list", "--prefix", "api-", "--json"]);
    let names: Vec<&Value> = filtered["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["name"])
        .collect();
    assert_eq!(names, vec!["api-rule"]);

    assert!(
        node.ok(&["rules", "disable", "api-rule"])
            .contains("is now disabled")
    );
    assert_eq!(
        node.json(&["rules", "show", "api-rule", "--json"])["state"],
        "DISABLED"
    );
    assert!(
        node.ok(&["rules", "enable", "api-rule"])
            .contains("is now enabled")
    );
    assert_eq!(
        node.json(&["rules", "show", "api-rule", "--json"])["state"],
        "ENABLED"
    );

    node.ok(&[
        "rules",
        "put",
        "api-rule",
        "--pattern",
        r#"{"source": ["billing"]}"#,
        "--plugin",
        "audit",
        "--target-id",
        "a1",
    ]);
    let rule = node.json(&["rules", "show", "api-rule", "--json"]);
    assert_eq!(rule["targets"][0]["id"], "a1");
    assert_eq!(rule["targets"][0]["plugin"], "audit");
    // Without --plugin the targets stay.
    node.ok(&[
        "rules",
        "put",
        "api-rule",
        "--pattern",
        r#"{"source": ["billing", "shop"]}"#,
    ]);
    assert_eq!(
        node.json(&["rules", "show", "api-rule", "--json"])["targets"][0]["id"],
        "a1"
    );

    let err = node.fails(&["rules", "delete", "api-rule"]);
    assert!(err.contains("--force"), "{err}");
    let out = node.busbar(&["rules", "delete", "api-rule", "--force"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("deleted rule api-rule from bus default"));
    assert!(stderr(&out).contains("removed 1 target from rule api-rule"));
    let err = node.fails(&["rules", "show", "api-rule"]);
    assert!(err.contains("HTTP 404"), "{err}");
    assert!(err.contains("busbar rules list"), "{err}");

    // Rules from the config file are changed in the file, and the node says so.
    let err = node.fails(&["rules", "disable", "orders"]);
    assert!(err.contains("config file"), "{err}");
    let err = node.fails(&[
        "rules",
        "put",
        "orders",
        "--pattern",
        "{\"source\": [\"x\"]}",
    ]);
    assert!(err.contains("config file"), "{err}");
}

#[test]
fn plugins_lists_an_empty_directory() {
    let node = Node::start();
    assert_eq!(node.json(&["plugins", "--json"]), serde_json::json!([]));
    let out = node.busbar(&["plugins"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(stdout(&out).is_empty());
    assert!(
        stderr(&out).contains("no plugins loaded"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn dlq_commands_on_an_empty_queue() {
    let node = Node::start();
    assert_eq!(
        node.json(&["dlq", "list", "--json"])["dead_letters"],
        serde_json::json!([])
    );
    let out = node.busbar(&["dlq", "list"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(stderr(&out).contains("the dead-letter queue is empty"));
    let err = node.fails(&["dlq", "show", "424242"]);
    assert!(
        err.contains("HTTP 404") && err.contains("busbar dlq list"),
        "{err}"
    );
    assert_eq!(
        node.ok(&["dlq", "redrive", "--all"]),
        "redrove 0 dead letters\n"
    );
    assert_eq!(
        node.ok(&["dlq", "purge", "--all"]),
        "purged 0 dead letters\n"
    );
    let err = node.fails(&["dlq", "purge", "424242"]);
    assert!(err.contains("no dead letter with id 424242"), "{err}");
}

/// The dead letter appears once the delivery is older than the target's 60 s
/// maximum event age: the node's clock is moved past it. Then the plugin arrives: the redriven delivery
/// reaches it, and a delivery it rejects is dead-lettered at once.
#[test]
fn dead_letters_list_show_redrive_and_purge() {
    let node = Node::start();
    let event_id = node.put_one("shop", "echo");
    node.advance(Duration::from_secs(61));
    let letter = eventually("a dead letter", Duration::from_secs(30), || {
        let list = node.json(&["dlq", "list", "--json"]);
        list["dead_letters"]
            .as_array()
            .and_then(|l| l.first().cloned())
    });
    assert_eq!(letter["event"]["id"], event_id.as_str());
    let id = letter["id"].to_string();

    let table = node.ok(&["dlq", "list"]);
    let row = table.lines().nth(1).unwrap();
    assert!(row.starts_with(&format!("{id} ")), "{table}");
    assert!(
        row.contains("orders/sink") && row.contains("absent-plugin"),
        "{row}"
    );
    assert!(row.contains("shop echo"), "{row}");

    let shown = node.ok(&["dlq", "show", &id]);
    assert!(
        shown.contains("maximum event age of 60 s exceeded"),
        "{shown}"
    );
    assert!(shown.contains(&event_id), "{shown}");

    // The missing plugin arrives (testkit, under the name the rule expects).
    std::fs::copy(
        built("plugins/fixtures/testkit.wasm"),
        node.plugins().join("absent-plugin.wasm"),
    )
    .unwrap();
    eventually("the plugin to load", Duration::from_secs(60), || {
        node.ok(&["plugins"])
            .contains("absent-plugin")
            .then_some(())
    });
    assert_eq!(node.ok(&["dlq", "redrive", &id]), "redrove 1 dead letter\n");
    node.fails(&["dlq", "show", &id]);
    // Back in its queue, the delivery reaches testkit, which echoes it.
    eventually("the redriven event's echo", Duration::from_secs(60), || {
        let archived: Value = reqwest::blocking::Client::new()
            .get(format!("{}/v1/archive", node.url()))
            .query(&[("pattern", r#"{"source": ["testkit"]}"#)])
            .send()
            .ok()?
            .json()
            .ok()?;
        archived["events"]
            .as_array()
            .filter(|l| !l.is_empty())
            .map(|_| ())
    });

    // A delivery the plugin rejects is dead-lettered at once, and purged.
    let rejected = node.put_one("shop", "fail-reject");
    let again = eventually("the rejected delivery", Duration::from_secs(60), || {
        let list = node.json(&["dlq", "list", "--json"]);
        list["dead_letters"]
            .as_array()
            .and_then(|l| l.first().cloned())
    });
    assert_eq!(again["event"]["id"], rejected.as_str());
    assert!(
        again["last_error"]
            .as_str()
            .unwrap()
            .contains("asked to reject"),
        "{again}"
    );
    let again_id = again["id"].to_string();
    assert_eq!(
        node.ok(&["dlq", "purge", &again_id]),
        "purged 1 dead letter\n"
    );
    assert_eq!(
        node.json(&["dlq", "list", "--json"])["dead_letters"],
        serde_json::json!([])
    );
}

#[test]
fn replay_start_wait_and_status() {
    let node = Node::start();
    node.put_one("shop", "OrderPlaced");
    node.put_one("billing", "InvoiceSent");
    let out = node.ok(&[
        "replay", "start", "r1", "--since", "10m", "--until", "now", "--wait",
    ]);
    assert!(
        out.starts_with("replay r1: completed, 2 replayed, 0 failed (bus default"),
        "{out}"
    );
    let table = node.ok(&["replay", "status"]);
    assert!(table.starts_with("NAME"), "{table}");
    assert!(table.lines().nth(1).unwrap().starts_with("r1 "), "{table}");
    let one = node.json(&["replay", "status", "r1", "--json"]);
    assert_eq!(one["state"], "completed");
    assert_eq!(one["replayed"], 2);

    let out = node.ok(&[
        "replay", "start", "r2", "--since", "10m", "--until", "now", "--rule", "orders",
    ]);
    assert!(out.starts_with("started replay r2"), "{out}");
    assert!(out.contains("rules orders"), "{out}");
    let done = node.ok(&["replay", "status", "r2", "--wait"]);
    assert!(done.starts_with("replay r2: completed"), "{done}");

    let err = node.fails(&["replay", "start", "r1", "--since", "10m", "--until", "now"]);
    assert!(err.contains("r1"), "{err}");
    let err = node.fails(&[
        "replay", "start", "r3", "--since", "10m", "--until", "now", "--rule", "nope",
    ]);
    assert!(err.contains("nope"), "{err}");
    let err = node.fails(&["replay", "status", "never-started"]);
    assert!(err.contains("HTTP 404"), "{err}");
}

#[test]
fn tail_prints_events_as_json_lines_and_plain_text() {
    let node = Node::start();
    let tail = Tail::start(&node, &["--json"]);
    let (id, line) = tail.catch(|| node.put_one("shop", "OrderPlaced"));
    let item: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(item["kind"], "event");
    assert_eq!(item["event"]["id"], id.as_str());
    assert_eq!(item["event"]["detail"]["total"], 250);
    drop(tail);

    // Piped, so plain: no colour codes.
    let tail = Tail::start(&node, &[]);
    let (id, line) = tail.catch(|| node.put_one("shop", "OrderPlaced"));
    assert!(line.contains("  event  "), "{line}");
    assert!(
        line.contains(&format!("  {id}  shop OrderPlaced  bus=default")),
        "{line}"
    );
    assert!(!line.contains('\x1b'), "{line:?}");
}

/// Needs the real pattern engine: the tail line names the rule the event matched,
/// and `--pattern` filters on the node.
#[test]
fn tail_shows_matched_rules_and_filters_with_real_engine() {
    let node = Node::start();
    let tail = Tail::start(
        &node,
        &["--json", "--pattern", r#"{"detail-type": ["Wanted"]}"#],
    );
    let (_, line) = tail.catch(|| {
        node.put_one("shop", "Unwanted");
        node.put_one("shop", "Wanted")
    });
    let item: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(item["event"]["detail-type"], "Wanted");
    assert_eq!(item["rules"], serde_json::json!(["orders"]));
    while let Ok(other) = tail.out.try_recv() {
        assert!(
            !other.contains("Unwanted"),
            "the pattern let through {other}"
        );
    }
}

#[test]
fn tail_reconnects_when_the_node_restarts() {
    let mut node = Node::start_process();
    let tail = Tail::start(&node, &["--json"]);
    tail.catch(|| node.put_one("shop", "Before"));
    node.stop();
    line_with(&tail.err, "ended", Duration::from_secs(20));
    node.restart();
    line_with(&tail.err, "reconnected to", Duration::from_secs(60));
    let (_, line) = tail.catch(|| node.put_one("shop", "After"));
    assert!(line.contains("After"), "{line}");
}

#[test]
fn tokens_are_sent_and_refusals_explained() {
    let node = Node::start_with(|c| {
        c.server.admin_token = Some("admin-secret".into());
        c.server.publish_token = Some("publish-secret".into());
    });
    let err = node.fails(&["rules", "list"]);
    assert!(
        err.contains("HTTP 401") && err.contains("BUSBAR_TOKEN"),
        "{err}"
    );
    let out = node.busbar_with(&["rules", "list"], &[("BUSBAR_TOKEN", "admin-secret")]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = node.busbar(&["rules", "list", "--token", "admin-secret"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    let out = node.busbar(&[
        "put",
        "--source",
        "shop",
        "--detail-type",
        "T",
        "--token",
        "publish-secret",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let err = node.fails(&["put", "--source", "shop", "--detail-type", "T"]);
    assert!(err.contains("publish"), "{err}");
    let err = node.fails(&["rules", "list", "--token", "publish-secret"]);
    assert!(err.contains("token"), "{err}");
}
