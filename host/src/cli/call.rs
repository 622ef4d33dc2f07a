//! `busbar call`: one call of a plugin's `handle`, on this machine, with no
//! node. The plugin goes through the very runtime `busbar serve` uses (the
//! same engine, limits, imports, type check and output checks): it is staged
//! in a private plugins directory of its own with its manifest, loaded,
//! called once, and everything the call did is printed.

use crate::bus::embedded::RedbKv;
use crate::event::{EventInput, EventLimits};
use crate::runtime::{
    CallError, Delivery, Manifest, NewEvent, RecordedRequest, Runtime, RuntimeConfig, valid_name,
};
use clap::Args;
use parking_lot::Mutex;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

const ABOUT: &str = "\
Runs one call of a plugin's `handle` locally, through the same runtime as
`busbar serve`: same engine, manifest limits, imports and type check. Prints
the events the plugin returned, or its error, then its log lines (the `log`
import and its stdout/stderr), the HTTP requests it made, and the call's time
and linear memory.

PLUGIN is a .wasm file (its manifest is the .toml beside it, if any) or the
NAME of a plugin in --plugins. The plugin's name is the file's stem, as in a
plugins directory.

Exit status:
  0  the handler returned events (possibly none); with --check: it loads
  1  the handler returned an error: retry(...) or reject(...), or events the
     host refuses (a reject)
  2  the command line is wrong: unreadable or malformed event, bad --config
  3  the plugin does not load: not a component, not the `handler` world,
     an import busbar does not provide, a bad manifest
  4  the call did not complete: a trap, a panic, a blown limit";

#[derive(Args, Debug)]
#[command(after_help = ABOUT)]
pub struct CallArgs {
    /// The plugin: PATH.wasm, or the NAME of a plugin in --plugins.
    plugin: String,
    /// The event, as `POST /events` takes one entry: JSON text, or @FILE (@- for stdin).
    #[arg(long, required_unless_present = "check")]
    event: Option<String>,
    /// The manifest [default: the .toml beside the .wasm, if any].
    #[arg(long)]
    manifest: Option<PathBuf>,
    /// Sets `[config]` KEY to VALUE over the manifest's (repeatable).
    #[arg(long = "config", value_name = "KEY=VALUE")]
    config: Vec<String>,
    /// Keeps the plugin's kv store in DIR/kv.redb between runs [default: empty on every run].
    #[arg(long, value_name = "DIR")]
    kv_dir: Option<PathBuf>,
    /// Adds HOST or HOST:PORT to the manifest's http.allowed_hosts (repeatable).
    #[arg(long = "http-allow", value_name = "HOST[:PORT]")]
    http_allow: Vec<String>,
    /// Records outbound HTTP requests instead of sending them: each allowed
    /// request is answered 200 with an empty body and listed in the output.
    #[arg(long)]
    http_record: bool,
    /// Only load and type-check the plugin (and its manifest); call nothing.
    #[arg(long)]
    check: bool,
    /// The plugins directory a NAME is looked up in.
    #[arg(long, default_value = "plugins")]
    plugins: PathBuf,
    /// Compiled-plugin cache [default: $XDG_CACHE_HOME/busbar or ~/.cache/busbar].
    #[arg(long, value_name = "DIR")]
    cache: Option<PathBuf>,
    /// The delivery's rule name.
    #[arg(long, default_value = "busbar-call")]
    rule: String,
    /// The delivery's target id [default: the plugin's name].
    #[arg(long)]
    target: Option<String>,
    /// The delivery's attempt number (1 is the first try).
    #[arg(long, default_value_t = 1)]
    attempt: u32,
    /// The delivery id [default: a new UUID].
    #[arg(long)]
    delivery_id: Option<String>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// Why `busbar call` stopped, with its exit status.
#[derive(Debug)]
enum Stop {
    Usage(String),
    Load(String),
}

impl Stop {
    fn code(&self) -> u8 {
        match self {
            Stop::Usage(_) => 2,
            Stop::Load(_) => 3,
        }
    }
}

pub fn run(args: CallArgs) -> ExitCode {
    let logs = Capture::install();
    match call(&args, &logs) {
        Ok(code) => code,
        Err(stop) => {
            let (Stop::Usage(m) | Stop::Load(m)) = &stop;
            if args.json {
                let outcome = match stop {
                    Stop::Usage(_) => "usage",
                    Stop::Load(_) => "load_failed",
                };
                println!("{}", json!({"outcome": outcome, "error": m}));
            } else {
                eprintln!("busbar call: {m}");
            }
            ExitCode::from(stop.code())
        }
    }
}

/// The plugin to call: its name and where its files are.
struct Target {
    name: String,
    wasm: PathBuf,
    manifest: Option<PathBuf>,
}

fn resolve(args: &CallArgs) -> Result<Target, Stop> {
    let as_path = Path::new(&args.plugin);
    let (name, wasm) = if args.plugin.ends_with(".wasm") || args.plugin.contains('/') {
        let stem = as_path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .to_string();
        (stem, as_path.to_path_buf())
    } else {
        (
            args.plugin.clone(),
            args.plugins.join(format!("{}.wasm", args.plugin)),
        )
    };
    if !valid_name(&name) {
        return Err(Stop::Usage(format!(
            "{:?} cannot be a plugin name: a plugin's name is its file's stem, 1 to 64 letters, \
             digits, `-` or `_` (rules name it as `plugin = \"NAME\"`); rename the file",
            name
        )));
    }
    if !wasm.is_file() {
        return Err(Stop::Usage(format!(
            "{} does not exist (PLUGIN is a .wasm file or the name of one in --plugins {})",
            wasm.display(),
            args.plugins.display()
        )));
    }
    let manifest = args
        .manifest
        .clone()
        .or_else(|| Some(wasm.with_extension("toml")).filter(|p| p.is_file()));
    Ok(Target {
        name,
        wasm,
        manifest,
    })
}

/// The manifest the plugin runs with: the file's, with the command line's
/// `--config` and `--http-allow` on top, checked as the server checks it.
fn manifest(args: &CallArgs, target: &Target) -> Result<Manifest, Stop> {
    let mut manifest = match &target.manifest {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                Stop::Usage(format!("cannot read the manifest {}: {e}", path.display()))
            })?;
            Manifest::parse(&text, &path.display().to_string())
                .map_err(|e| Stop::Load(format!("{e:#}")))?
        }
        None => Manifest::default(),
    };
    for pair in &args.config {
        let Some((key, value)) = pair.split_once('=') else {
            return Err(Stop::Usage(format!("--config {pair:?} is not KEY=VALUE")));
        };
        manifest.config.insert(key.to_string(), value.to_string());
    }
    manifest.http.allowed_hosts.extend(args.http_allow.clone());
    // Round-trip through the parser so that --http-allow entries meet the
    // same checks as the file's own.
    let text = toml::to_string(&manifest)
        .map_err(|e| Stop::Usage(format!("cannot write the manifest: {e}")))?;
    Manifest::parse(&text, "the manifest with --config/--http-allow applied")
        .map_err(|e| Stop::Usage(format!("{e:#}")))
}

fn call(args: &CallArgs, logs: &Capture) -> Result<ExitCode, Stop> {
    let target = resolve(args)?;
    let manifest = manifest(args, &target)?;
    // The event is read before anything is compiled: a typo in it should not
    // cost a compile.
    let event = match &args.event {
        Some(text) => Some(read_event(text)?),
        None => None,
    };
    let stage = Stage::new(&target.name)?;
    std::fs::copy(&target.wasm, stage.path(&format!("{}.wasm", target.name)))
        .map_err(|e| Stop::Usage(format!("cannot read {}: {e}", target.wasm.display())))?;
    let text = toml::to_string(&manifest)
        .map_err(|e| Stop::Usage(format!("cannot write the manifest: {e}")))?;
    std::fs::write(stage.path(&format!("{}.toml", target.name)), text)
        .map_err(|e| Stop::Usage(format!("cannot write to {}: {e}", stage.0.display())))?;
    let kv_file = match &args.kv_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir).map_err(|e| {
                Stop::Usage(format!("cannot create --kv-dir {}: {e}", dir.display()))
            })?;
            dir.join("kv.redb")
        }
        None => stage.path("kv.redb"),
    };
    let kv = RedbKv::open(&kv_file)
        .map_err(|e| Stop::Usage(format!("cannot open {}: {e:#}", kv_file.display())))?;
    let config = RuntimeConfig {
        plugins_dir: stage.0.clone(),
        cache_dir: args.cache.clone().unwrap_or_else(default_cache),
        watch: false,
    };
    let rt = Runtime::new(config, Arc::new(kv)).map_err(|e| Stop::Load(format!("{e:#}")))?;
    let recorder = args.http_record.then(|| rt.record_http());
    let io = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Stop::Usage(format!("cannot start the async runtime: {e}")))?;
    io.block_on(rt.rescan())
        .map_err(|e| Stop::Load(format!("{e:#}")))?;
    drop(io);
    if !rt.is_loaded(&target.name) {
        let why = rt
            .status()
            .into_iter()
            .find(|s| s.name == target.name)
            .and_then(|s| s.last_error)
            .unwrap_or_else(|| format!("{}.wasm did not load", target.name));
        return Err(Stop::Load(rename_stage(&why, &stage, &target)));
    }
    let imports = rt.imports(&target.name).unwrap_or_default();
    let Some(event) = event else {
        report_check(args, &target, &imports);
        return Ok(ExitCode::SUCCESS);
    };
    let delivery = Delivery {
        rule: args.rule.clone(),
        target: args.target.clone().unwrap_or_else(|| target.name.clone()),
        attempt: args.attempt,
        id: args
            .delivery_id
            .clone()
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
    };
    logs.clear();
    let started = Instant::now();
    let result = rt.call_blocking(&target.name, &event, &delivery);
    let elapsed = started.elapsed();
    let report = Report {
        result,
        elapsed,
        memory: rt.memory_high_water(&target.name).unwrap_or(0),
        logs: logs.take(),
        http: recorder.map(|r| r.take()),
    };
    if args.json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.to_text());
    }
    Ok(ExitCode::from(report.code()))
}

fn read_event(text: &str) -> Result<crate::event::Event, Stop> {
    let raw = super::read_arg(text)
        .map_err(|e| Stop::Usage(format!("cannot read the event from {text}: {e}")))?;
    let value: Value = serde_json::from_str(&raw)
        .map_err(|e| Stop::Usage(format!("the event is not valid JSON: {e}")))?;
    EventInput::from_json(value)
        .and_then(|input| input.into_event(&EventLimits::default()))
        .map_err(|e| Stop::Usage(format!("the event is not valid: {e}")))
}

/// Load errors name the staged copy's path; the author knows the file by theirs.
fn rename_stage(message: &str, stage: &Stage, target: &Target) -> String {
    let staged = stage.0.display().to_string();
    let mut out = message.replace(
        &format!("{staged}/{}.wasm", target.name),
        &target.wasm.display().to_string(),
    );
    if let Some(m) = &target.manifest {
        out = out.replace(
            &format!("{staged}/{}.toml", target.name),
            &m.display().to_string(),
        );
    }
    out
}

fn report_check(args: &CallArgs, target: &Target, imports: &[String]) {
    if args.json {
        println!(
            "{}",
            json!({"outcome": "loaded", "plugin": target.name, "imports": imports})
        );
    } else {
        println!(
            "{}: loads as plugin {:?}: a component of the busbar:plugin@0.1.0 `handler` world",
            target.wasm.display(),
            target.name
        );
        println!("imports:");
        for i in imports {
            println!("  {i}");
        }
    }
}

/// What one call did.
struct Report {
    result: Result<Vec<NewEvent>, CallError>,
    elapsed: Duration,
    memory: u64,
    logs: Vec<LogLine>,
    /// `Some` when requests were recorded instead of sent.
    http: Option<Vec<RecordedRequest>>,
}

impl Report {
    fn code(&self) -> u8 {
        match &self.result {
            Ok(_) => 0,
            Err(CallError::Retry { .. } | CallError::Reject { .. }) => 1,
            Err(CallError::NotLoaded { .. }) => 3,
            Err(CallError::Failed { .. }) => 4,
        }
    }

    fn to_json(&self) -> Value {
        let mut out = json!({
            "elapsed_ms": self.elapsed.as_secs_f64() * 1000.0,
            "memory_bytes": self.memory,
            "logs": self.logs,
        });
        match &self.result {
            Ok(events) => {
                out["outcome"] = json!("ok");
                out["events"] = events.iter().map(event_json).collect();
            }
            Err(e) => {
                out["outcome"] = json!(e.reason());
                out["error"] = json!(error_message(e));
                out["retryable"] = json!(e.is_retryable());
            }
        }
        if let Some(http) = &self.http {
            out["http"] = json!(http);
        }
        out
    }

    fn to_text(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let timing = format!(
            "{:.2} ms, {:.1} MiB linear memory",
            self.elapsed.as_secs_f64() * 1000.0,
            self.memory as f64 / f64::from(1 << 20)
        );
        match &self.result {
            Ok(events) => {
                let _ = writeln!(s, "ok: {} event(s) returned ({timing})", events.len());
                for e in events {
                    let _ = writeln!(s, "{}", event_json(e));
                }
            }
            Err(e) => {
                let _ = writeln!(s, "{} ({timing}):", e.reason());
                for line in error_message(e).lines() {
                    let _ = writeln!(s, "  {line}");
                }
            }
        }
        if !self.logs.is_empty() {
            let _ = writeln!(s, "log:");
            for l in &self.logs {
                let _ = writeln!(s, "  {:<5} {}{}", l.level, l.stream_prefix(), l.message);
            }
        }
        if let Some(http) = &self.http {
            let _ = writeln!(s, "http (recorded, not sent):");
            for r in http {
                let _ = writeln!(s, "  {} {}", r.method, r.url);
                if let Some(body) = &r.body {
                    let _ = writeln!(s, "    {body}");
                }
            }
        }
        s
    }
}

/// The handler's own words, without the plugin/export preamble the server's
/// log needs.
fn error_message(e: &CallError) -> String {
    match e {
        CallError::Retry { message, .. } | CallError::Reject { message, .. } => message.clone(),
        CallError::Failed { message, .. } => message.clone(),
        CallError::NotLoaded { .. } => e.to_string(),
    }
}

/// A returned event in the shape `POST /events` takes.
fn event_json(e: &NewEvent) -> Value {
    let mut v = json!({
        "source": e.source,
        "detail-type": e.detail_type,
        "detail": e.detail,
    });
    if !e.resources.is_empty() {
        v["resources"] = json!(e.resources);
    }
    if let Some(bus) = &e.bus {
        v["bus"] = json!(bus);
    }
    v
}

/// A private plugins directory for one run, removed afterwards.
struct Stage(PathBuf);

impl Stage {
    fn new(name: &str) -> Result<Stage, Stop> {
        let dir = std::env::temp_dir().join(format!(
            "busbar-call-{name}-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&dir)
            .map_err(|e| Stop::Usage(format!("cannot create {}: {e}", dir.display())))?;
        Ok(Stage(dir))
    }

    fn path(&self, file: &str) -> PathBuf {
        self.0.join(file)
    }
}

impl Drop for Stage {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `$XDG_CACHE_HOME/busbar`, else `~/.cache/busbar`, else the temp directory's.
fn default_cache() -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir)
        .join("busbar")
        .join("plugin-cache")
}

/// One line the plugin wrote: through the `log` import, or on stdout/stderr.
#[derive(Debug, Clone, serde::Serialize)]
struct LogLine {
    level: String,
    /// `stdout` or `stderr` for the guest's own output; absent for `log` calls.
    #[serde(skip_serializing_if = "Option::is_none")]
    stream: Option<String>,
    message: String,
}

impl LogLine {
    fn stream_prefix(&self) -> String {
        self.stream
            .as_ref()
            .map(|s| format!("[{s}] "))
            .unwrap_or_default()
    }
}

/// Collects what the runtime's imports log about the plugin (its `log`
/// calls, its stdout and stderr, HTTP refusals) instead of printing it.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<LogLine>>>);

impl Capture {
    fn install() -> Capture {
        use tracing_subscriber::layer::SubscriberExt;
        let capture = Capture::default();
        let subscriber = tracing_subscriber::registry().with(capture.clone());
        // Only fails when a subscriber is already set, and then the lines go there.
        let _ = tracing::subscriber::set_global_default(subscriber);
        capture
    }

    fn clear(&self) {
        self.0.lock().clear();
    }

    fn take(&self) -> Vec<LogLine> {
        std::mem::take(&mut *self.0.lock())
    }
}

/// The module whose events are the plugin's own doing.
const IMPORTS_TARGET: &str = "busbar::runtime::imports";

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Capture {
    fn on_event(
        &self,
        event: &tracing::Event<'_>,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let meta = event.metadata();
        if !meta.target().starts_with(IMPORTS_TARGET) {
            return;
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        self.0.lock().push(LogLine {
            level: meta.level().as_str().to_ascii_lowercase(),
            stream: fields.stream,
            message: fields.message,
        });
    }
}

#[derive(Default)]
struct Fields {
    message: String,
    stream: Option<String>,
}

impl tracing::field::Visit for Fields {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        match field.name() {
            "message" => self.message = value.to_string(),
            "stream" => self.stream = Some(value.to_string()),
            _ => {}
        }
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "message" => self.message = format!("{value:?}"),
            "stream" => self.stream = Some(format!("{value:?}")),
            _ => {}
        }
    }
}
