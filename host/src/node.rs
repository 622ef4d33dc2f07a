//! One busbar node: the bus, the rule set, the plugin runtime and the
//! dispatcher wired together, plus the background loops (config reload,
//! archive retention). `busbar serve` builds a [`Node`] and serves HTTP on it;
//! the integration tests do the same in-process or as a child process.

use crate::bus::embedded::{EmbeddedBus, EmbeddedConfig};
use crate::bus::{Bus, PublishError};
use crate::config::Config;
use crate::control::metrics::MetricsLoop;
use crate::control::{ControlHandler, Scaler};
use crate::dispatch::{DeliveryOutcome, DispatchConfig, Dispatcher, Superseded};
use crate::event::{Event, EventLimits};
use crate::pattern::Limits;
use crate::publish::{PublishOptions, Publisher};
use crate::rules::admin::RuleAdmin;
use crate::rules::{RuleOrigin, RuleSet};
use crate::runtime::{Runtime, RuntimeConfig};
use anyhow::Context;
use serde::Serialize;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast;

/// One line of the live tail: an event as it was accepted, or a delivery as it ended.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum TailItem {
    Event {
        event: Box<Event>,
        rules: Vec<Arc<str>>,
    },
    Delivery(DeliveryOutcome),
}

pub struct Node {
    pub config: Config,
    pub config_path: Option<PathBuf>,
    pub bus: Arc<dyn Bus>,
    pub rules: Arc<RuleSet>,
    /// API rule and bus changes: validate, persist, then apply.
    pub admin: Arc<RuleAdmin>,
    /// The one way events become durable (see [`crate::publish`]).
    pub publisher: Arc<Publisher>,
    pub runtime: Arc<Runtime>,
    pub dispatcher: Arc<Dispatcher>,
    /// The control target's handler (registered with the dispatcher).
    pub control: Arc<ControlHandler>,
    pub replays: Arc<crate::publish::replay::Replays>,
    /// busbar's own `Target Metrics` events, the autoscaler's input.
    pub metrics: Arc<MetricsLoop>,
    pub event_limits: EventLimits,
    pub tail: broadcast::Sender<TailItem>,
    /// Set once the plugins found at start are loaded (or failed to load).
    pub plugins_loaded: Arc<std::sync::atomic::AtomicBool>,
    /// This node's time, shared by its store and dispatcher (tests advance it).
    pub clock: Arc<crate::clock::Clock>,
    /// Scheduled rules and schedules: one timer for all of them.
    pub scheduler: Arc<crate::schedule::Scheduler>,
    /// The Scheduler API's schedules and groups.
    pub schedules: Arc<crate::schedule::api::Schedules>,
}

/// How [`Node::start_with`] starts.
#[derive(Debug, Clone, Copy, Default)]
pub struct StartOptions {
    /// Return before the plugins found at start are loaded. Compiling a large
    /// component takes seconds on a fresh cache; meanwhile the node accepts events
    /// and their deliveries wait in their queues, and `/readyz` answers 503.
    pub load_plugins_in_background: bool,
}

impl Node {
    /// Opens the store, loads rules (stored, then the config file's), starts the
    /// plugin runtime and the dispatcher; returns once the plugins are loaded.
    pub async fn start(config: Config, config_path: Option<PathBuf>) -> anyhow::Result<Arc<Node>> {
        Self::start_with(config, config_path, StartOptions::default()).await
    }

    pub async fn start_with(
        config: Config,
        config_path: Option<PathBuf>,
        options: StartOptions,
    ) -> anyhow::Result<Arc<Node>> {
        config.server.validate()?;
        let limits = Limits {
            max_pattern_chars: config.limits.max_pattern_chars,
        };
        let rules = RuleSet::new(limits);
        let data_dir = config.server.data_dir.clone();
        let clock = Arc::new(crate::clock::Clock::default());
        let bus: Arc<dyn Bus> = match &config.server.bus {
            None => {
                let mut ec = EmbeddedConfig::new(&data_dir);
                ec.cache_bytes = config.server.store_cache_mib << 20;
                ec.max_queue_backlog = config.delivery.max_queue_backlog;
                ec.max_total_backlog = config.delivery.max_total_backlog;
                ec.clock = clock.clone();
                EmbeddedBus::open(ec)
                    .with_context(|| format!("opening the store in {}", data_dir.display()))?
            }
            Some(url) => {
                let mut nc = crate::bus::nats::NatsConfig::from_url(url)?;
                nc.max_queue_backlog = config.delivery.max_queue_backlog;
                nc.max_total_backlog = config.delivery.max_total_backlog;
                nc.archive_retention = Duration::from_secs(config.archive.retention_days * 86_400);
                nc.clock = clock.clone();
                crate::bus::nats::NatsBus::connect(nc)
                    .await
                    .with_context(|| format!("starting the JetStream bus on {url}"))?
            }
        };
        let tail = broadcast::channel(4096).0;
        bus.observe_commits(Arc::new(TailObserver { tail: tail.clone() }));
        rules.load(bus.rules().await?, bus.buses().await?);
        if let Some(changes) = bus.watch_rules().await? {
            tokio::spawn(follow_stored_rules(rules.clone(), changes));
        }
        rules
            .replace_config(config.rules()?, config.buses())
            .context("rules in the config file")?;
        // Before the dispatcher starts: the rules of plugin-targeted schedules
        // must be there when their queued deliveries are looked at.
        let schedules = crate::schedule::api::Schedules::new(bus.kv(), rules.clone());
        let schedule_jobs = {
            let s = schedules.clone();
            tokio::task::spawn_blocking(move || s.reload(true))
                .await?
                .context("reading the schedules")?
                .unwrap_or_default()
        };
        let runtime = Runtime::new(
            RuntimeConfig {
                plugins_dir: config.server.plugins_dir.clone(),
                cache_dir: config
                    .server
                    .cache_dir
                    .clone()
                    .unwrap_or_else(|| data_dir.join("cache")),
                watch: true,
            },
            bus.kv(),
        )?;
        runtime.watch().context("watching the plugins directory")?;
        let plugins_loaded = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let initial_load = {
            let runtime = runtime.clone();
            let loaded = plugins_loaded.clone();
            async move {
                let started = std::time::Instant::now();
                if let Err(e) = runtime.rescan().await {
                    tracing::error!(error = %format!("{e:#}"), "cannot read the plugins directory");
                }
                loaded.store(true, std::sync::atomic::Ordering::SeqCst);
                tracing::info!(
                    plugins = runtime.loaded_count(),
                    ms = started.elapsed().as_millis() as u64,
                    "plugins loaded"
                );
            }
        };
        if options.load_plugins_in_background {
            tracing::info!(
                "loading plugins in the background; deliveries wait until their plugin is loaded"
            );
            tokio::spawn(initial_load);
        } else {
            initial_load.await;
        }
        let event_limits = EventLimits {
            max_entry_bytes: config.limits.max_entry_bytes,
            max_depth: config.limits.max_depth,
        };
        let dispatcher = Dispatcher::new(
            bus.clone(),
            runtime.clone(),
            rules.clone(),
            DispatchConfig {
                hop_limit: config.delivery.hop_limit,
                event_limits,
                clock: clock.clone(),
                // Two intervals: one late metrics event still counts, older ones are history.
                superseded: (config.metrics.interval_secs > 0).then(|| Superseded {
                    source: crate::control::METRICS_SOURCE,
                    detail_type: crate::control::METRICS_DETAIL_TYPE,
                    after: Duration::from_secs(2 * config.metrics.interval_secs),
                }),
                ..Default::default()
            },
        );
        // The control target is a built-in handler that scales the dispatcher's
        // targets; it holds the dispatcher weakly, since the dispatcher holds it.
        let scaler: std::sync::Weak<dyn Scaler> = Arc::<Dispatcher>::downgrade(&dispatcher);
        let control = Arc::new(ControlHandler::new(scaler, runtime.clone()));
        dispatcher.register_handler(crate::control::CONTROL_PLUGIN, control.clone());
        crate::control::start(&control, &runtime);
        dispatcher.start();
        let publisher = Arc::new(Publisher::new(rules.clone(), bus.clone()));
        let scheduler = crate::schedule::Scheduler::new(
            clock.clone(),
            bus.kv(),
            Arc::new(crate::schedule::fire::NodeSink {
                publisher: publisher.clone(),
                schedules: schedules.clone(),
            }),
        );
        scheduler.start();
        scheduler
            .replace(crate::schedule::api::JOB_PREFIX, schedule_jobs)
            .await;
        tokio::spawn(follow_scheduled_rules(rules.clone(), scheduler.clone()));
        tokio::spawn(follow_schedules(schedules.clone(), scheduler.clone()));
        let node = Arc::new(Node {
            config,
            config_path,
            admin: Arc::new(RuleAdmin::new(
                rules.clone(),
                Arc::new(crate::bus::RuleStoreOf(bus.clone())),
            )),
            replays: Arc::new(crate::publish::replay::Replays::new(publisher.clone())),
            metrics: Arc::new(MetricsLoop {
                dispatcher: dispatcher.clone(),
                runtime: runtime.clone(),
                publisher: publisher.clone(),
                limits: event_limits,
            }),
            publisher,
            bus,
            rules,
            runtime,
            control,
            dispatcher,
            event_limits,
            tail,
            plugins_loaded,
            clock,
            scheduler,
            schedules,
        });
        node.spawn_tail_forwarder();
        node.spawn_retention();
        node.spawn_config_watch();
        node.metrics.spawn(node.config.metrics.interval_secs);
        Ok(node)
    }

    /// Publishes validated events: durable when this returns Ok for an entry.
    pub async fn publish(&self, events: Vec<Event>) -> Vec<Result<(), PublishError>> {
        self.publish_with(events, PublishOptions::default()).await
    }

    pub async fn publish_with(
        &self,
        events: Vec<Event>,
        options: PublishOptions,
    ) -> Vec<Result<(), PublishError>> {
        self.publisher
            .publish(events, &options)
            .await
            .into_iter()
            .map(|r| r.map(|_rules| ()))
            .collect()
    }

    /// Applies the stored schedule definitions now (after this node changed them).
    pub async fn refresh_schedules(&self) -> Result<(), crate::runtime::KvError> {
        refresh_schedules(&self.schedules, &self.scheduler, true).await
    }

    fn spawn_tail_forwarder(self: &Arc<Self>) {
        let mut outcomes = self.dispatcher.subscribe();
        let tail = self.tail.clone();
        tokio::spawn(async move {
            loop {
                match outcomes.recv().await {
                    Ok(o) => {
                        let _ = tail.send(TailItem::Delivery(o));
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => break,
                }
            }
        });
    }

    fn spawn_retention(self: &Arc<Self>) {
        let days = self.config.archive.retention_days;
        if days == 0 {
            return;
        }
        let bus = self.bus.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(600));
            loop {
                tick.tick().await;
                let before = crate::bus::now_ms() - (days as i64) * 86_400_000;
                match bus.expire_archive(before).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(events = n, "expired archived events past retention"),
                    Err(e) => tracing::warn!(error = %e, "archive retention pass failed"),
                }
            }
        });
    }

    /// Re-reads the config file's rules and buses when its content changes. A
    /// broken file keeps the rules already loaded and says why in the log.
    ///
    /// Only writes, creations, renames and removals wake the loop, and a reload
    /// happens only when the bytes differ from the last ones read: reading the
    /// file (our own read included, or another node's sharing it) is an access
    /// event, and reacting to those made every reload trigger the next one.
    fn spawn_config_watch(self: &Arc<Self>) {
        let Some(path) = self.config_path.clone() else {
            return;
        };
        let rules = self.rules.clone();
        let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(16);
        let watched = path.clone();
        let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            if let Ok(ev) = res
                && !matches!(ev.kind, notify::EventKind::Access(_))
                && ev
                    .paths
                    .iter()
                    .any(|p| p.file_name() == watched.file_name())
            {
                let _ = tx.try_send(());
            }
        });
        let mut watcher = match watcher {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(error = %e, "config file changes will not be picked up");
                return;
            }
        };
        let dir = path
            .parent()
            .map(|p| p.to_path_buf())
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or_else(|| ".".into());
        if let Err(e) =
            notify::Watcher::watch(&mut watcher, &dir, notify::RecursiveMode::NonRecursive)
        {
            tracing::warn!(error = %e, dir = %dir.display(), "config file changes will not be picked up");
            return;
        }
        let content_hash = |path: &std::path::Path| {
            use sha2::Digest;
            std::fs::read(path).ok().map(|b| sha2::Sha256::digest(&b))
        };
        let mut last = content_hash(&path);
        tokio::spawn(async move {
            let _keep = watcher;
            while rx.recv().await.is_some() {
                // Editors write in several steps: let the file settle first.
                tokio::time::sleep(Duration::from_millis(150)).await;
                while rx.try_recv().is_ok() {}
                let now = content_hash(&path);
                if now == last {
                    continue;
                }
                last = now;
                ::metrics::counter!("busbar_config_reloads_total").increment(1);
                let loaded = Config::load(&path).and_then(|c| Ok((c.rules()?, c.buses())));
                match loaded.map(|(r, b)| rules.replace_config(r, b)) {
                    Ok(Ok(())) => {
                        tracing::info!(file = %path.display(), "reloaded rules from the config file")
                    }
                    Ok(Err(e)) => {
                        tracing::error!(file = %path.display(), error = %e, "config file rejected; keeping the rules already loaded")
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "config file rejected; keeping the rules already loaded")
                    }
                }
            }
        });
    }
}

/// Puts every committed event on the live tail, those plugins emit included.
/// The store reports an event before its deliveries can be taken, so in the tail
/// an event's line comes before the lines of its deliveries.
struct TailObserver {
    tail: broadcast::Sender<TailItem>,
}

impl crate::bus::CommitObserver for TailObserver {
    fn wants(&self) -> bool {
        self.tail.receiver_count() > 0
    }

    fn committed(&self, c: crate::bus::Committed) {
        let _ = self.tail.send(TailItem::Event {
            event: Box::new(c.event),
            rules: c.rules,
        });
    }
}

/// Keeps the scheduler's jobs in step with the scheduled rules: a new, changed,
/// enabled, disabled or deleted rule is one `replace` away.
async fn follow_scheduled_rules(rules: Arc<RuleSet>, scheduler: Arc<crate::schedule::Scheduler>) {
    use crate::schedule::fire::{RULE_PREFIX, rule_jobs};
    let mut changes = rules.subscribe();
    loop {
        scheduler.replace(RULE_PREFIX, rule_jobs(&rules)).await;
        if changes.changed().await.is_err() {
            break;
        }
    }
}

/// Follows the schedules' revision counter: a schedule changed through any
/// node (on JetStream, any node of the cluster) reaches this node's scheduler
/// within a second.
async fn follow_schedules(
    schedules: Arc<crate::schedule::api::Schedules>,
    scheduler: Arc<crate::schedule::Scheduler>,
) {
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if let Err(e) = refresh_schedules(&schedules, &scheduler, false).await {
            tracing::warn!(error = %e, "cannot read the schedules; trying again");
        }
    }
}

async fn refresh_schedules(
    schedules: &Arc<crate::schedule::api::Schedules>,
    scheduler: &crate::schedule::Scheduler,
    force: bool,
) -> Result<(), crate::runtime::KvError> {
    let s = schedules.clone();
    let jobs = tokio::task::spawn_blocking(move || s.reload(force))
        .await
        .map_err(|e| crate::runtime::KvError::Store(e.to_string()))??;
    if let Some(jobs) = jobs {
        scheduler
            .replace(crate::schedule::api::JOB_PREFIX, jobs)
            .await;
    }
    Ok(())
}

/// Applies rule and bus changes made through other nodes to this node's rule
/// set. Changes this node made itself come back too and are already applied.
async fn follow_stored_rules(
    rules: Arc<RuleSet>,
    mut changes: tokio::sync::mpsc::Receiver<crate::bus::StoredChange>,
) {
    use crate::bus::StoredChange;
    while let Some(change) = changes.recv().await {
        let result = match change {
            StoredChange::Rule(rule) => {
                if rules.get(&rule.bus, &rule.name).as_ref() == Some(&rule) {
                    continue;
                }
                rules.put(rule, false).map(|_| ())
            }
            StoredChange::RuleDeleted { bus, name } => match rules.get(&bus, &name) {
                Some(r) if r.origin == RuleOrigin::Api => rules.remove(&bus, &name).map(|_| ()),
                _ => continue,
            },
            StoredChange::Bus(info) => {
                if rules.has_bus(&info.name) {
                    continue;
                }
                rules.put_bus(info)
            }
            StoredChange::BusDeleted(name) => {
                if !rules.has_bus(&name) {
                    continue;
                }
                rules.remove_bus(&name)
            }
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, "a rule change from another node was not applied here");
        }
    }
}
