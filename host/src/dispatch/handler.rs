//! What a target's deliveries are handed to: the [`Handler`] trait and the
//! registry ([`Handlers`]) that resolves a target's `plugin` name to one.
//!
//! A name registered as a built-in (node wiring registers the control
//! target this way) resolves to that handler; any other name is a plugin,
//! called through the runtime. The dispatcher only ever asks the resolved
//! handler whether it is ready, what concurrency it wants and to handle an
//! event, so it knows no target by name.

use crate::event::Event;
use crate::runtime::{CallError, Delivery, NewEvent, Runtime};
use async_trait::async_trait;
use dashmap::DashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The worker concurrency a handler asks for; the dispatcher caps it (see
/// [`Bounds::capped`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// The level a target starts at and returns to when scaling is undone.
    pub default: usize,
    pub min: usize,
    pub max: usize,
}

impl Bounds {
    /// Exactly one worker: for a handler that must take its events one at a
    /// time, in the order they were delivered.
    pub const SERIAL: Bounds = Bounds {
        default: 1,
        min: 1,
        max: 1,
    };

    /// A target whose handler is not ready has no bounds yet: it starts at one
    /// worker with room for up to 16, and takes its handler's bounds once ready.
    pub fn unknown(cap: usize) -> Bounds {
        Bounds {
            default: 1,
            min: 1,
            max: cap.clamp(1, 16),
        }
    }

    /// The bounds kept within 1..=`cap` workers (the host's ceiling per
    /// target, whatever a manifest asks for), with `min <= max`. The default
    /// is only raised to 1 here: the pool clamps it into `min..=max`.
    pub fn capped(self, cap: usize) -> Bounds {
        let cap = cap.max(1);
        let min = self.min.clamp(1, cap);
        Bounds {
            default: self.default.max(1),
            min,
            max: self.max.clamp(min, cap),
        }
    }
}

/// Why a handler produced no events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandlerError {
    /// A plugin call failed: retried or dead-lettered by the target's retry
    /// policy and `dead_letter` setting.
    Call(CallError),
    /// A built-in handler refused the event for good. It is dead-lettered
    /// with this reason and always kept, whatever the target's `dead_letter`
    /// says: a refusal (such as an unauthorised scaling decision) is for an
    /// operator to see, not to drop silently.
    Refused(String),
}

impl std::fmt::Display for HandlerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HandlerError::Call(e) => e.fmt(f),
            HandlerError::Refused(reason) => f.write_str(reason),
        }
    }
}

/// What a target's deliveries are handed to.
#[async_trait]
pub trait Handler: Send + Sync {
    /// Whether deliveries can be handed over now. While not ready, the
    /// target's deliveries stay queued (until they outgrow their maximum age).
    fn ready(&self) -> bool;

    /// Whether the handler does not exist at all (a plugin with no `.wasm`
    /// file), as opposed to not being ready yet.
    fn missing(&self) -> bool {
        false
    }

    /// The concurrency this handler wants; `None` while that is not known
    /// (a plugin not loaded yet).
    fn bounds(&self) -> Option<Bounds>;

    /// Handles one event (already transformed for the target); the events
    /// returned are published with the delivery's acknowledgement.
    async fn handle(&self, event: Event, delivery: Delivery)
    -> Result<Vec<NewEvent>, HandlerError>;

    /// Handles several events in order, answering each (in the same order)
    /// with how long its own handling took. A handler that can run a batch in
    /// one go overrides this: a plugin hands the whole batch to one blocking
    /// thread instead of one hand-off per event.
    async fn handle_batch(&self, calls: Vec<(Event, Delivery)>) -> Vec<Handled> {
        let mut out = Vec::with_capacity(calls.len());
        for (event, delivery) in calls {
            let started = Instant::now();
            let result = self.handle(event, delivery).await;
            out.push((result, started.elapsed()));
        }
        out
    }
}

/// One answer of [`Handler::handle_batch`]: the result and the time it took.
pub type Handled = (Result<Vec<NewEvent>, HandlerError>, Duration);

/// A plugin in the runtime, by name: ready while a version of it is loaded,
/// bounded by its manifest's `[scaling]`.
struct PluginHandler {
    runtime: Arc<Runtime>,
    plugin: String,
}

#[async_trait]
impl Handler for PluginHandler {
    fn ready(&self) -> bool {
        self.runtime.is_loaded(&self.plugin)
    }

    fn missing(&self) -> bool {
        !self.runtime.has_plugin_file(&self.plugin)
    }

    fn bounds(&self) -> Option<Bounds> {
        let s = &self.runtime.manifest(&self.plugin)?.scaling;
        Some(Bounds {
            default: s.concurrency as usize,
            min: s.min_concurrency as usize,
            max: s.max_concurrency as usize,
        })
    }

    async fn handle(
        &self,
        event: Event,
        delivery: Delivery,
    ) -> Result<Vec<NewEvent>, HandlerError> {
        self.runtime
            .call(&self.plugin, event, delivery)
            .await
            .map_err(HandlerError::Call)
    }

    async fn handle_batch(&self, calls: Vec<(Event, Delivery)>) -> Vec<Handled> {
        self.runtime
            .call_batch(&self.plugin, calls)
            .await
            .into_iter()
            .map(|(result, took)| (result.map_err(HandlerError::Call), took))
            .collect()
    }
}

/// Resolves a target's `plugin` name to its handler.
pub struct Handlers {
    runtime: Arc<Runtime>,
    builtin: DashMap<String, Arc<dyn Handler>>,
    /// One handler per plugin name asked for, so that resolving (once per
    /// delivery) costs a map look-up, not an allocation. Names come from
    /// rule targets; an entry is a name and two pointers, and a name that
    /// returns later finds its entry again.
    plugins: DashMap<String, Arc<dyn Handler>>,
}

impl Handlers {
    pub fn new(runtime: Arc<Runtime>) -> Handlers {
        Handlers {
            runtime,
            builtin: DashMap::new(),
            plugins: DashMap::new(),
        }
    }

    /// Makes `name` resolve to `handler` instead of a plugin. Register before
    /// the dispatcher starts: its pools read a handler's bounds when made.
    pub fn register(&self, name: &str, handler: Arc<dyn Handler>) {
        self.builtin.insert(name.to_string(), handler);
    }

    pub fn resolve(&self, name: &str) -> Arc<dyn Handler> {
        if let Some(h) = self.builtin.get(name) {
            return h.clone();
        }
        if let Some(h) = self.plugins.get(name) {
            return h.clone();
        }
        self.plugins
            .entry(name.to_string())
            .or_insert_with(|| {
                Arc::new(PluginHandler {
                    runtime: self.runtime.clone(),
                    plugin: name.to_string(),
                })
            })
            .clone()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::bus::embedded::RedbKv;
    use crate::runtime::RuntimeConfig;

    /// A runtime over an empty plugins directory: no plugin is ever loaded.
    pub(crate) fn empty_runtime(dir: &tempfile::TempDir) -> Arc<Runtime> {
        let plugins = dir.path().join("plugins");
        std::fs::create_dir_all(&plugins).unwrap();
        let kv = Arc::new(RedbKv::open(&dir.path().join("kv.redb")).unwrap());
        let config = RuntimeConfig {
            plugins_dir: plugins,
            cache_dir: dir.path().join("cache"),
            watch: false,
        };
        Runtime::new(config, kv).unwrap()
    }

    /// A built-in that answers every event with one fixed event.
    struct Fixed;

    #[async_trait]
    impl Handler for Fixed {
        fn ready(&self) -> bool {
            true
        }
        fn bounds(&self) -> Option<Bounds> {
            Some(Bounds {
                default: 2,
                min: 1,
                max: 4,
            })
        }
        async fn handle(&self, _: Event, _: Delivery) -> Result<Vec<NewEvent>, HandlerError> {
            Ok(vec![NewEvent {
                source: "fixed".into(),
                detail_type: "Answered".into(),
                detail: serde_json::json!({}),
                resources: vec![],
                bus: None,
            }])
        }
    }

    fn delivery() -> Delivery {
        Delivery {
            rule: "r".into(),
            target: "t".into(),
            attempt: 1,
            id: "d".into(),
        }
    }

    fn event() -> Event {
        crate::event::EventInput {
            source: Some("s".into()),
            detail_type: Some("t".into()),
            detail: Some(serde_json::json!({})),
            ..Default::default()
        }
        .into_event(&Default::default())
        .unwrap()
    }

    #[tokio::test]
    async fn an_unknown_name_is_a_plugin_that_is_not_ready() {
        let dir = tempfile::tempdir().unwrap();
        let handlers = Handlers::new(empty_runtime(&dir));
        let h = handlers.resolve("no-such-plugin");
        assert!(!h.ready());
        assert_eq!(h.bounds(), None);
        match h.handle(event(), delivery()).await {
            Err(HandlerError::Call(CallError::NotLoaded { plugin })) => {
                assert_eq!(plugin, "no-such-plugin")
            }
            other => panic!("expected the runtime's NotLoaded, got {other:?}"),
        }
        // The same handler is handed out again: no allocation per delivery.
        assert!(Arc::ptr_eq(&h, &handlers.resolve("no-such-plugin")));
    }

    #[tokio::test]
    async fn a_registered_name_resolves_to_its_builtin() {
        let dir = tempfile::tempdir().unwrap();
        let handlers = Handlers::new(empty_runtime(&dir));
        handlers.register("busbar:fixed", Arc::new(Fixed));
        let h = handlers.resolve("busbar:fixed");
        assert!(h.ready());
        assert_eq!(h.bounds().map(|b| b.max), Some(4));
        let out = h.handle(event(), delivery()).await.unwrap();
        assert_eq!(out[0].source, "fixed");
        // Other names are still plugins.
        assert!(!handlers.resolve("busbar:other").ready());
    }

    #[test]
    fn bounds_are_capped() {
        let asked = Bounds {
            default: 0,
            min: 0,
            max: 1000,
        };
        assert_eq!(
            asked.capped(256),
            Bounds {
                default: 1,
                min: 1,
                max: 256
            }
        );
        let inverted = Bounds {
            default: 4,
            min: 8,
            max: 2,
        };
        assert_eq!(inverted.capped(256).max, 8, "max is raised to min");
        assert_eq!(Bounds::unknown(256).max, 16);
        assert_eq!(Bounds::unknown(4).max, 4);
    }
}
