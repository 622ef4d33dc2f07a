//! The config file (`examples/busbar.toml` is a complete, commented example).
//!
//! Every field has a default, so an empty file (or none) is a working node.
//! Rules and buses declared here are hot-reloaded when the file changes; the
//! rest is read at start-up.

use crate::rules::{BusInfo, Rule, RuleOrigin, RuleState, Target};
use serde::Deserialize;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub limits: LimitsConfig,
    #[serde(default)]
    pub delivery: DeliveryConfig,
    #[serde(default)]
    pub archive: ArchiveConfig,
    #[serde(default)]
    pub metrics: MetricsConfig,
    #[serde(default)]
    pub buses: Vec<BusConfig>,
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address to listen on. Loopback by default: exposing busbar is a decision.
    pub listen: String,
    /// The directory watched for `NAME.wasm` plugins and `NAME.toml` manifests.
    pub plugins_dir: PathBuf,
    /// Where the embedded store and the compiled-plugin cache live.
    pub data_dir: PathBuf,
    /// Compiled plugins are cached here, keyed by content and engine (default: DATA_DIR/cache).
    /// Several nodes or test runs may share one.
    pub cache_dir: Option<PathBuf>,
    /// `nats://host:port` to run on NATS JetStream instead of the embedded store.
    pub bus: Option<String>,
    /// Memory the embedded store may use to cache its file, in MiB. It is most of
    /// a busy node's resident memory once the archive outgrows it.
    pub store_cache_mib: usize,
    /// Bearer token for publishing (also accepted: the admin token). None: open.
    /// Surrounding whitespace is ignored; an empty or blank token is refused at
    /// start-up. While `admin_token` is unset, this token also guards `/v1`.
    pub publish_token: Option<String>,
    /// Bearer token for `/v1` and every rule-changing call. None: open, unless
    /// `publish_token` is set (then that one guards `/v1` too). Surrounding
    /// whitespace is ignored; an empty or blank token is refused at start-up.
    pub admin_token: Option<String>,
    /// Most HTTP connections open at once. A connection beyond it gets a short
    /// 503 and is closed at once, so those already admitted keep being served.
    /// Lowered at start-up to what the process's file-descriptor limit allows.
    pub max_connections: usize,
    /// A client must send a complete request head (request line and headers)
    /// within this many ms of connecting, or of its first byte on a kept-alive
    /// connection; otherwise the connection is closed.
    pub header_read_timeout_ms: u64,
    /// A request's whole body must arrive within this many ms of its head;
    /// otherwise the answer is 408 and the connection is closed.
    pub body_read_timeout_ms: u64,
    /// A kept-alive connection with no request in progress is closed after
    /// this many ms without a byte from the client.
    pub idle_timeout_ms: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "127.0.0.1:8080".into(),
            plugins_dir: "plugins".into(),
            data_dir: "data".into(),
            cache_dir: None,
            bus: None,
            store_cache_mib: 256,
            publish_token: None,
            admin_token: None,
            max_connections: 10_000,
            header_read_timeout_ms: 10_000,
            body_read_timeout_ms: 60_000,
            idle_timeout_ms: 60_000,
        }
    }
}

impl ServerConfig {
    /// Refuses settings that would make the node unsafe or unusable, naming
    /// the field and what to do.
    pub fn validate(&self) -> anyhow::Result<()> {
        for (field, env, token) in [
            ("publish_token", "BUSBAR_PUBLISH_TOKEN", &self.publish_token),
            ("admin_token", "BUSBAR_ADMIN_TOKEN", &self.admin_token),
        ] {
            // An empty token would let in any request that sends an empty one.
            if token.as_deref().is_some_and(|t| t.trim().is_empty()) {
                anyhow::bail!(
                    "server.{field} (or {env}) is empty or only whitespace: set it to a secret, \
                     or remove it to leave that surface open"
                );
            }
        }
        if self.max_connections == 0 {
            anyhow::bail!("server.max_connections is 0: at least one connection must be allowed");
        }
        for (field, ms) in [
            ("header_read_timeout_ms", self.header_read_timeout_ms),
            ("body_read_timeout_ms", self.body_read_timeout_ms),
            ("idle_timeout_ms", self.idle_timeout_ms),
        ] {
            if ms == 0 {
                anyhow::bail!("server.{field} is 0: give a time in milliseconds, such as 10000");
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest request body accepted, in bytes (413 above).
    pub max_body_bytes: usize,
    /// Most events in one native or CloudEvents batch request (PutEvents is fixed at 10).
    pub max_entries_per_request: usize,
    /// Largest event entry, computed as EventBridge does.
    pub max_entry_bytes: usize,
    /// Deepest JSON nesting accepted in a request.
    pub max_depth: usize,
    /// Longest event pattern, in characters.
    pub max_pattern_chars: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_body_bytes: 4 * 1024 * 1024,
            max_entries_per_request: 100,
            max_entry_bytes: crate::event::DEFAULT_MAX_ENTRY_BYTES,
            max_depth: crate::event::DEFAULT_MAX_DEPTH,
            max_pattern_chars: 2048,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeliveryConfig {
    /// Plugin-emitted events past this many hops are dead-lettered, not published.
    pub hop_limit: u32,
    /// Waiting deliveries per (rule, target) before publishers get 429.
    pub max_queue_backlog: usize,
    /// Waiting deliveries over all targets before publishers get 429.
    pub max_total_backlog: usize,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            hop_limit: 16,
            max_queue_backlog: 100_000,
            max_total_backlog: 1_000_000,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ArchiveConfig {
    /// Archived events older than this are deleted (0: keep forever).
    pub retention_days: u64,
}

impl Default for ArchiveConfig {
    fn default() -> Self {
        ArchiveConfig { retention_days: 7 }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Seconds between `Target Metrics` events (0: off).
    pub interval_secs: u64,
    /// Serve Prometheus metrics at `/metrics` (false: record nothing).
    pub prometheus: bool,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            interval_secs: 5,
            prometheus: true,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BusConfig {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
}

/// A rule in the config file. `pattern` is JSON text or a TOML table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    pub name: String,
    #[serde(default = "default_bus")]
    pub bus: String,
    /// The event pattern (TOML table or JSON text); absent on a scheduled rule.
    #[serde(default)]
    pub pattern: Option<toml::Value>,
    /// `rate(5 minutes)` or `cron(0 3 * * ? *)` (UTC): the targets get a
    /// `Scheduled Event` per tick instead of matching events.
    #[serde(default)]
    pub schedule: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default)]
    pub targets: Vec<Target>,
}

fn default_bus() -> String {
    crate::event::DEFAULT_BUS.into()
}

fn yes() -> bool {
    true
}

impl Config {
    /// Reads and checks a config file; the error names the file and the problem.
    pub fn load(path: &Path) -> anyhow::Result<Config> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read config file {}: {e}", path.display()))?;
        Config::parse(&text).map_err(|e| anyhow::anyhow!("config file {}: {e}", path.display()))
    }

    pub fn parse(text: &str) -> anyhow::Result<Config> {
        let config: Config = toml::from_str(text)?;
        Ok(config)
    }

    /// The rules this file declares, in the store's shape.
    pub fn rules(&self) -> anyhow::Result<Vec<Rule>> {
        self.rules
            .iter()
            .map(|r| {
                let pattern = match &r.pattern {
                    None if r.schedule.is_some() => String::new(),
                    None => anyhow::bail!("rule {} needs a pattern or a schedule", r.name),
                    Some(toml::Value::String(s)) => s.clone(),
                    Some(other) => serde_json::to_string(other)?,
                };
                Ok(Rule {
                    name: r.name.clone(),
                    bus: r.bus.clone(),
                    pattern,
                    schedule: r.schedule.clone(),
                    region: None,
                    state: if r.enabled {
                        RuleState::Enabled
                    } else {
                        RuleState::Disabled
                    },
                    description: r.description.clone(),
                    targets: r.targets.clone(),
                    origin: RuleOrigin::Config,
                })
            })
            .collect()
    }

    pub fn buses(&self) -> Vec<BusInfo> {
        self.buses
            .iter()
            .map(|b| BusInfo {
                name: b.name.clone(),
                description: b.description.clone(),
                created: crate::event::now_rfc3339(),
                tags: Default::default(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_is_all_defaults() {
        let c = Config::parse("").unwrap();
        assert_eq!(c.server.listen, "127.0.0.1:8080");
        assert_eq!(c.limits.max_pattern_chars, 2048);
    }

    #[test]
    fn rules_take_json_or_toml_patterns() {
        let c = Config::parse(
            r#"
            [[rules]]
            name = "a"
            pattern = '{"source": ["x"]}'
            [[rules.targets]]
            id = "t"
            plugin = "p"

            [[rules]]
            name = "b"
            pattern = { source = ["y"], detail = { amount = [{ numeric = [">", 5] }] } }
            "#,
        )
        .unwrap();
        let rules = c.rules().unwrap();
        assert_eq!(rules[0].pattern, r#"{"source": ["x"]}"#);
        assert_eq!(rules[0].targets[0].plugin, "p");
        let v: serde_json::Value = serde_json::from_str(&rules[1].pattern).unwrap();
        assert_eq!(v["detail"]["amount"][0]["numeric"][1], 5);
    }

    #[test]
    fn blank_tokens_and_zero_limits_are_refused() {
        assert!(ServerConfig::default().validate().is_ok());
        let blank = ServerConfig {
            admin_token: Some(" \n".into()),
            ..Default::default()
        };
        let err = blank.validate().unwrap_err().to_string();
        assert!(err.contains("server.admin_token"), "{err}");
        let zero = ServerConfig {
            idle_timeout_ms: 0,
            ..Default::default()
        };
        let err = zero.validate().unwrap_err().to_string();
        assert!(err.contains("server.idle_timeout_ms"), "{err}");
    }

    #[test]
    fn unknown_keys_are_named() {
        let err = Config::parse("[server]\nlisten_addr = \"x\"").unwrap_err();
        assert!(err.to_string().contains("listen_addr"), "{err}");
    }
}
