//! The plugin manifest, `plugins/NAME.toml`: instance policy, limits, scaling
//! defaults, outbound HTTP allow-list and free-form config.
//!
//! Every field has a safe default, so a plugin without a manifest runs with
//! 64 MiB of memory, 500 ms of CPU and 1 s of wall-clock time per call, and no
//! outbound HTTP. Unknown keys are refused so a typo never silently falls back
//! to a default.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// Upper bounds that keep a manifest from asking for more than one host can give.
const MAX_MEMORY_MIB: u64 = 4096;
const MAX_CPU_MS: u64 = 60_000;
const MAX_TIMEOUT_MS: u64 = 300_000;
const MAX_INSTANCES: u32 = 256;
const MAX_CONCURRENCY: u32 = 1024;
/// A manifest is a few lines; anything this big is not one.
const MAX_MANIFEST_BYTES: u64 = 1 << 20;

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    #[serde(default)]
    pub instances: Instances,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub scaling: Scaling,
    #[serde(default)]
    pub http: Http,
    /// What the plugin may do beyond handling events; everything is off unless granted.
    #[serde(default)]
    pub capabilities: Capabilities,
    /// Values the plugin reads through the `config` import.
    #[serde(default)]
    pub config: BTreeMap<String, String>,
}

/// `[capabilities]`: powers over busbar itself, each granted by the operator
/// who installs the manifest, none by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Capabilities {
    /// The built-in control target (`busbar:control`) applies the `ScaleTarget`
    /// decisions this plugin publishes; from any other producer they are refused.
    pub control: bool,
}

/// How instances are reused between calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Policy {
    /// A warm pool: an instance serves many calls (its linear memory and globals
    /// persist between them) until it is recycled.
    #[default]
    Reuse,
    /// A new instance per call: no state can leak from one event to the next.
    Fresh,
}

impl Policy {
    pub fn as_str(self) -> &'static str {
        match self {
            Policy::Reuse => "reuse",
            Policy::Fresh => "fresh",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Instances {
    pub policy: Policy,
    /// `reuse` only: an instance is dropped after this many calls (and after any trap),
    /// which bounds slow leaks inside a guest.
    pub recycle_after_calls: u64,
}

impl Default for Instances {
    fn default() -> Self {
        Instances {
            policy: Policy::Reuse,
            recycle_after_calls: 10_000,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Linear memory cap per instance, in MiB.
    pub memory_mib: u64,
    /// CPU budget per call (time the calling thread spends running), in ms.
    pub cpu_ms: u64,
    /// Wall-clock budget per call, including time blocked in host calls, in ms.
    pub timeout_ms: u64,
    /// Maximum live instances of this plugin at once (all targets together).
    pub max_instances: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_mib: 64,
            cpu_ms: 500,
            timeout_ms: 1000,
            max_instances: 16,
        }
    }
}

/// Delivery workers per (rule, target) that uses this plugin; read by the dispatcher.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Scaling {
    pub concurrency: u32,
    pub min_concurrency: u32,
    pub max_concurrency: u32,
}

impl Default for Scaling {
    fn default() -> Self {
        Scaling {
            concurrency: 2,
            min_concurrency: 1,
            max_concurrency: 16,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Http {
    /// `host` or `host:port` entries; empty means no outbound HTTP at all. A
    /// bare `host` allows the URL scheme's default port only (80, 443).
    pub allowed_hosts: Vec<String>,
    /// IP addresses or CIDR blocks (`"127.0.0.1"`, `"10.0.0.0/8"`) that an
    /// allowed host may resolve to although they are loopback, private,
    /// link-local or otherwise internal; such addresses are refused otherwise.
    /// An IP literal in `allowed_hosts` allows its own address.
    pub allowed_networks: Vec<super::imports::AllowedNetwork>,
}

impl Http {
    /// Whether a request to `host` (lower-cased, IPv6 without brackets) on
    /// `port` may go out, `default_port` being its URL scheme's. A bare
    /// `host` entry allows only `default_port`; `host:port` only that port.
    pub fn allows(&self, host: &str, port: u16, default_port: u16) -> bool {
        self.allowed_hosts.iter().any(|entry| {
            let (h, p) = split_host_port(entry);
            h.eq_ignore_ascii_case(host) && p.unwrap_or(default_port) == port
        })
    }
}

/// Splits `host`, `host:port`, `[v6]` or `[v6]:port`.
fn split_host_port(entry: &str) -> (&str, Option<u16>) {
    if let Some(rest) = entry.strip_prefix('[') {
        if let Some((h, tail)) = rest.split_once(']') {
            let port = tail.strip_prefix(':').and_then(|p| p.parse().ok());
            return (h, port);
        }
        return (entry, None);
    }
    match entry.rsplit_once(':') {
        // More than one colon and no brackets: a bare IPv6 address.
        Some((h, _)) if h.contains(':') => (entry, None),
        Some((h, p)) => match p.parse() {
            Ok(port) => (h, Some(port)),
            Err(_) => (entry, None),
        },
        None => (entry, None),
    }
}

impl Manifest {
    /// Parses and checks manifest text; `origin` names the file in errors.
    /// A syntax or type error is reported by line and column with the
    /// parser's description, never with the text of the line: the file may
    /// not be what the operator thinks it is.
    pub fn parse(text: &str, origin: &str) -> anyhow::Result<Manifest> {
        let manifest: Manifest = toml::from_str(text)
            .map_err(|e| anyhow::anyhow!("{origin}: {}", describe_toml_error(&e, text)))?;
        manifest
            .validate()
            .map_err(|e| anyhow::anyhow!("{origin}: {e}"))?;
        Ok(manifest)
    }

    /// Reads `path`, a file of the plugins directory; a missing file is the
    /// default manifest. See [`read_plugin_file`] for what is refused.
    pub fn load(path: &Path) -> anyhow::Result<Manifest> {
        match read_plugin_file(path, MAX_MANIFEST_BYTES)? {
            None => Ok(Manifest::default()),
            Some(bytes) => {
                let origin = path.display().to_string();
                let text = String::from_utf8(bytes).map_err(|e| {
                    anyhow::anyhow!(
                        "{origin}: not UTF-8 text (byte {} is invalid)",
                        e.utf8_error().valid_up_to()
                    )
                })?;
                Manifest::parse(&text, &origin)
            }
        }
    }

    fn validate(&self) -> Result<(), String> {
        let l = &self.limits;
        check_range("limits.memory_mib", l.memory_mib, 1, MAX_MEMORY_MIB)?;
        check_range("limits.cpu_ms", l.cpu_ms, 1, MAX_CPU_MS)?;
        check_range("limits.timeout_ms", l.timeout_ms, 1, MAX_TIMEOUT_MS)?;
        check_range(
            "limits.max_instances",
            l.max_instances.into(),
            1,
            MAX_INSTANCES.into(),
        )?;
        if self.instances.recycle_after_calls == 0 {
            return Err("instances.recycle_after_calls must be at least 1".into());
        }
        let s = &self.scaling;
        check_range(
            "scaling.max_concurrency",
            s.max_concurrency.into(),
            1,
            MAX_CONCURRENCY.into(),
        )?;
        if s.min_concurrency < 1 || s.min_concurrency > s.max_concurrency {
            return Err(format!(
                "scaling.min_concurrency must be between 1 and max_concurrency ({}), got {}",
                s.max_concurrency, s.min_concurrency
            ));
        }
        if s.concurrency < s.min_concurrency || s.concurrency > s.max_concurrency {
            return Err(format!(
                "scaling.concurrency must be between min_concurrency ({}) and max_concurrency ({}), got {}",
                s.min_concurrency, s.max_concurrency, s.concurrency
            ));
        }
        for (i, entry) in self.http.allowed_hosts.iter().enumerate() {
            let (host, _) = split_host_port(entry);
            let bad = host.is_empty()
                || entry.contains("://")
                || entry.contains('/')
                || host.chars().any(char::is_whitespace);
            if bad {
                return Err(format!(
                    "http.allowed_hosts[{i}] = {entry:?} is not a host or host:port (no scheme, no path)"
                ));
            }
        }
        Ok(())
    }
}

/// Reads a plugin's file (`NAME.wasm`, `NAME.toml`) from the plugins
/// directory, its parent; `None` when it does not exist. A symbolic link is
/// followed only to a file inside that directory (a link out of it would let
/// anyone who can write there show other files through the plugin status),
/// and only regular files up to `max_bytes` are read (a FIFO would block the
/// loader forever).
pub(super) fn read_plugin_file(path: &Path, max_bytes: u64) -> anyhow::Result<Option<Vec<u8>>> {
    let shown = path.display();
    let linked = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta.file_type().is_symlink(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => anyhow::bail!("cannot read {shown}: {e}"),
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    let dir_real = dir
        .canonicalize()
        .map_err(|e| anyhow::anyhow!("cannot read the plugins directory {}: {e}", dir.display()))?;
    // The resolved path is what gets read, so the link cannot be swapped
    // between the check and the read.
    let real = path.canonicalize().map_err(|e| {
        if linked {
            anyhow::anyhow!("{shown} is a symbolic link that cannot be followed ({e}); replace it with the file itself")
        } else {
            anyhow::anyhow!("cannot read {shown}: {e}")
        }
    })?;
    if !real.starts_with(&dir_real) {
        anyhow::bail!(
            "{shown} is a symbolic link to {}, outside the plugins directory {}; busbar does not follow links \
             out of it: copy the file into the directory instead",
            real.display(),
            dir_real.display()
        );
    }
    let meta = std::fs::metadata(&real).map_err(|e| anyhow::anyhow!("cannot read {shown}: {e}"))?;
    if !meta.is_file() {
        anyhow::bail!("{shown} is not a regular file");
    }
    if meta.len() > max_bytes {
        anyhow::bail!(
            "{shown} is {} bytes, over the limit of {max_bytes} bytes for this kind of file",
            meta.len()
        );
    }
    std::fs::read(&real)
        .map(Some)
        .map_err(|e| anyhow::anyhow!("cannot read {shown}: {e}"))
}

/// `line L, column C: message` for a TOML error. The toml crate's own
/// `Display` quotes the offending line of the file; only the position and
/// the parser's description are kept, with quoted values in the description
/// (serde's `invalid type: string "..."`) replaced by `"..."`. Key and variant
/// names, which the description shows in backticks, stay: they are what a
/// typo is about.
fn describe_toml_error(e: &toml::de::Error, text: &str) -> String {
    let message = redact_quoted(e.message().trim_end());
    let Some(span) = e.span() else {
        return message;
    };
    let before = text.get(..span.start).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
    format!("line {line}, column {column}: {message}")
}

/// Replaces every double-quoted string (with Rust/serde escapes) by `"..."`.
fn redact_quoted(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut chars = message.chars();
    while let Some(c) = chars.next() {
        out.push(c);
        if c == '"' {
            let mut escaped = false;
            for c in chars.by_ref() {
                match c {
                    '\\' if !escaped => escaped = true,
                    '"' if !escaped => break,
                    _ => escaped = false,
                }
            }
            out.push_str("...\"");
        }
    }
    out
}

fn check_range(field: &str, value: u64, min: u64, max: u64) -> Result<(), String> {
    if value < min || value > max {
        return Err(format!(
            "{field} must be between {min} and {max}, got {value}"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_manifest_is_all_defaults() {
        let m = Manifest::parse("", "x.toml").unwrap();
        assert_eq!(m, Manifest::default());
        assert_eq!(m.instances.policy, Policy::Reuse);
        assert_eq!(m.instances.recycle_after_calls, 10_000);
        assert_eq!(m.limits.memory_mib, 64);
        assert_eq!(m.limits.cpu_ms, 500);
        assert_eq!(m.limits.timeout_ms, 1000);
        assert_eq!(m.limits.max_instances, 16);
        assert_eq!(
            (
                m.scaling.concurrency,
                m.scaling.min_concurrency,
                m.scaling.max_concurrency
            ),
            (2, 1, 16)
        );
        assert!(m.http.allowed_hosts.is_empty());
    }

    #[test]
    fn the_documented_example_parses() {
        let text = r#"
[instances]
policy = "fresh"
recycle_after_calls = 50

[limits]
memory_mib = 32
cpu_ms = 100
timeout_ms = 2000
max_instances = 4

[scaling]
concurrency = 3
min_concurrency = 1
max_concurrency = 8

[http]
allowed_hosts = ["127.0.0.1:9000", "hooks.example.com"]

[config]
webhook_url = "http://127.0.0.1:9000/notify"
"#;
        let m = Manifest::parse(text, "n.toml").unwrap();
        assert_eq!(m.instances.policy, Policy::Fresh);
        assert_eq!(m.limits.timeout_ms, 2000);
        assert_eq!(m.scaling.concurrency, 3);
        assert_eq!(m.config["webhook_url"], "http://127.0.0.1:9000/notify");
        assert!(m.http.allows("127.0.0.1", 9000, 80));
        assert!(!m.http.allows("127.0.0.1", 9001, 80));
        assert!(m.http.allows("HOOKS.example.com", 443, 443));
        assert!(!m.http.allows("hooks.example.com", 8080, 80));
        assert!(!m.http.allows("evil.example.com", 80, 80));
    }

    #[test]
    fn partial_tables_keep_other_defaults() {
        let m = Manifest::parse("[limits]\nmemory_mib = 8\n", "p.toml").unwrap();
        assert_eq!(m.limits.memory_mib, 8);
        assert_eq!(m.limits.cpu_ms, 500);
    }

    #[test]
    fn errors_name_the_file_and_field() {
        let err = Manifest::parse("[limits]\nmemroy_mib = 8\n", "p.toml")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("p.toml:") && err.contains("memroy_mib"),
            "{err}"
        );
        let err = Manifest::parse("[limits]\nmemory_mib = 0\n", "p.toml")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("limits.memory_mib must be between 1 and 4096, got 0"),
            "{err}"
        );
        let err = Manifest::parse("[instances]\npolicy = \"sometimes\"\n", "p.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("sometimes"), "{err}");
        let err = Manifest::parse("[scaling]\nconcurrency = 40\n", "p.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("scaling.concurrency"), "{err}");
        let err = Manifest::parse("[http]\nallowed_hosts = [\"http://x.com/\"]\n", "p.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("http.allowed_hosts[0]"), "{err}");
        let err = Manifest::parse("[config]\nn = 3\n", "p.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("p.toml"), "{err}");
    }

    #[test]
    fn errors_give_the_position_not_the_text() {
        let err = Manifest::parse("[limits]\nmemory_mib = \"s3cr3t\"\n", "p.toml")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("p.toml: line 2, column 14: "), "{err}");
        assert!(!err.contains("s3cr3t"), "{err}");
        let err = Manifest::parse("x = 1\nroot:x:0:0:root:/root:/bin/bash\n", "p.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 2, column"), "{err}");
        assert!(!err.contains("/bin/bash") && !err.contains("root"), "{err}");
        assert_eq!(redact_quoted(r#"a "b\"c" d"#), r#"a "..." d"#);
    }

    #[test]
    fn host_port_forms() {
        assert_eq!(split_host_port("a.com"), ("a.com", None));
        assert_eq!(split_host_port("a.com:81"), ("a.com", Some(81)));
        assert_eq!(split_host_port("[::1]:81"), ("::1", Some(81)));
        assert_eq!(split_host_port("::1"), ("::1", None));
        let http = Http {
            allowed_hosts: vec!["[::1]:8080".into()],
            ..Http::default()
        };
        assert!(http.allows("::1", 8080, 80));
        assert!(!http.allows("::1", 8081, 80));
    }
}
