//! One loaded plugin version and its instances: the warm pool for `reuse`,
//! a new instance per call for `fresh`, and the per-plugin bound on live
//! instances.
//!
//! When `max_instances` instances are alive, a call waits up to
//! [`SLOT_WAIT`] for one to be released and then fails with
//! `TooManyInstances` (retryable). The dispatcher keeps its concurrency at or
//! below the limit, so the wait only covers the moment between one call's
//! end and the next one's start.

use super::call::CallMetrics;
use super::engine::{self, EngineLimits};
use super::errors::{CallError, FailureKind};
use super::imports::bindings::{Handler, HandlerPre};
use super::imports::{CallClock, LimitExceeded, PluginHost, State};
use super::manifest::{Manifest, Policy};
use parking_lot::{Condvar, Mutex};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use wasmtime::component::Component;
use wasmtime::{Store, UpdateDeadline};

/// How long a call waits for a free instance slot before giving up.
pub const SLOT_WAIT: Duration = Duration::from_millis(100);

/// Live instances of one plugin, over all its versions: an old version's
/// instances still finishing calls count until they are dropped.
pub struct Slots {
    live: Mutex<u32>,
    freed: Condvar,
    gauge: metrics::Gauge,
}

impl Slots {
    pub fn new(plugin: &str) -> Arc<Slots> {
        Arc::new(Slots {
            live: Mutex::new(0),
            freed: Condvar::new(),
            gauge: metrics::gauge!("busbar_plugin_instances", "plugin" => plugin.to_string()),
        })
    }

    pub fn live(&self) -> u32 {
        *self.live.lock()
    }

    fn acquire(self: &Arc<Self>, max: u32) -> Option<SlotGuard> {
        let deadline = Instant::now() + SLOT_WAIT;
        let mut live = self.live.lock();
        while *live >= max {
            if self.freed.wait_until(&mut live, deadline).timed_out() && *live >= max {
                return None;
            }
        }
        *live += 1;
        self.gauge.set(*live as f64);
        Some(SlotGuard(self.clone()))
    }
}

/// Holds one unit of [`Slots`] for as long as an instance exists.
pub struct SlotGuard(Arc<Slots>);

impl Drop for SlotGuard {
    fn drop(&mut self) {
        let mut live = self.0.live.lock();
        *live -= 1;
        self.0.gauge.set(*live as f64);
        self.0.freed.notify_one();
    }
}

/// A live instance with its own store (and so its own linear memory).
pub struct Instance {
    pub store: Store<State>,
    pub handler: Handler,
    pub calls: u64,
    _slot: SlotGuard,
}

/// One compiled, type-checked version of a plugin: component bytes hash +
/// manifest. Replaced as a whole on reload; calls in flight keep theirs.
pub struct Version {
    pub name: Arc<str>,
    /// Hex SHA-256 of the `.wasm` file.
    pub hash: String,
    pub manifest: Arc<Manifest>,
    pub component: Component,
    pub loaded_at: time::OffsetDateTime,
    pre: HandlerPre<State>,
    host: Arc<PluginHost>,
    idle: Mutex<Vec<Instance>>,
    /// Set when a newer version replaced this one: instances are dropped on return.
    retired: AtomicBool,
    slots: Arc<Slots>,
    pub instances_created: AtomicU64,
    pub metrics: CallMetrics,
}

impl Version {
    pub fn new(
        host: Arc<PluginHost>,
        hash: String,
        component: Component,
        pre: HandlerPre<State>,
        slots: Arc<Slots>,
    ) -> Version {
        let name = host.name.clone();
        Version {
            metrics: CallMetrics::new(&name),
            name,
            hash,
            manifest: host.manifest.clone(),
            component,
            loaded_at: time::OffsetDateTime::now_utc(),
            pre,
            host,
            idle: Mutex::new(Vec::new()),
            retired: AtomicBool::new(false),
            slots,
            instances_created: AtomicU64::new(0),
        }
    }

    /// Stops pooling: idle instances go now, busy ones when their call ends.
    pub fn retire(&self) {
        self.retired.store(true, Ordering::SeqCst);
        self.idle.lock().clear();
    }

    pub fn clock(&self) -> CallClock {
        let l = &self.manifest.limits;
        CallClock::new(
            Duration::from_millis(l.timeout_ms),
            Duration::from_millis(l.cpu_ms),
        )
    }

    /// A warm instance if there is one, otherwise a new one.
    pub async fn checkout(&self, clock: CallClock) -> Result<Instance, CallError> {
        if self.manifest.instances.policy == Policy::Reuse
            && let Some(instance) = self.idle.lock().pop()
        {
            return Ok(instance);
        }
        let slot = self.slots.acquire(self.manifest.limits.max_instances).ok_or_else(|| CallError::Failed {
            plugin: self.name.to_string(),
            kind: FailureKind::TooManyInstances,
            message: format!(
                "{} instances are busy (limits.max_instances) and none was released within {} ms",
                self.manifest.limits.max_instances,
                SLOT_WAIT.as_millis()
            ),
        })?;
        // Start functions run guest code under the call's budgets too.
        let clock = clock.start_cpu();
        let mut store = Store::new(self.pre.engine(), State::new(self.host.clone(), clock));
        store.limiter(|s| &mut s.limiter);
        store.epoch_deadline_callback(epoch_check);
        store.set_epoch_deadline(first_deadline(&clock));
        match self.pre.instantiate_async(&mut store).await {
            Ok(handler) => {
                self.instances_created.fetch_add(1, Ordering::Relaxed);
                Ok(Instance {
                    store,
                    handler,
                    calls: 0,
                    _slot: slot,
                })
            }
            Err(e) => Err(instantiate_error(&self.name, e, &store)),
        }
    }

    /// Returns an instance after a call. `healthy` is false when the call may
    /// have left it in a broken state (a trap, a cancelled call).
    pub fn checkin(&self, instance: Instance, healthy: bool) {
        let keep = healthy
            && self.manifest.instances.policy == Policy::Reuse
            && instance.calls < self.manifest.instances.recycle_after_calls
            && !self.retired.load(Ordering::SeqCst);
        if keep {
            self.idle.lock().push(instance);
        }
    }

    pub fn idle_count(&self) -> usize {
        self.idle.lock().len()
    }
}

/// The first epoch deadline of a call: CPU time never runs ahead of wall time,
/// so neither budget can be exhausted before the smaller of the two.
pub fn first_deadline(clock: &CallClock) -> u64 {
    engine::ticks(clock.cpu_budget.min(clock.timeout))
}

/// Runs when the epoch deadline passes while guest code runs: traps with the
/// limit that was hit, or pushes the deadline to the next point either budget
/// could run out.
fn epoch_check(ctx: wasmtime::StoreContextMut<'_, State>) -> wasmtime::Result<UpdateDeadline> {
    let clock = ctx.data().clock;
    let wall = clock.start.elapsed();
    if wall >= clock.timeout {
        return Err(LimitExceeded::Timeout {
            elapsed_ms: wall.as_millis(),
            limit_ms: clock.timeout.as_millis(),
        }
        .into());
    }
    let cpu = engine::thread_cpu_time().saturating_sub(clock.cpu_start);
    if cpu >= clock.cpu_budget {
        return Err(LimitExceeded::Cpu {
            used_ms: cpu.as_millis(),
            limit_ms: clock.cpu_budget.as_millis(),
        }
        .into());
    }
    let next = (clock.cpu_budget - cpu).min(clock.timeout - wall);
    Ok(UpdateDeadline::Continue(engine::ticks(next)))
}

fn instantiate_error(plugin: &str, e: wasmtime::Error, store: &Store<State>) -> CallError {
    if let Some(limit) = e.downcast_ref::<wasmtime::PoolConcurrencyLimitError>() {
        return CallError::Failed {
            plugin: plugin.to_string(),
            kind: FailureKind::TooManyInstances,
            message: format!("the engine's instance pool is exhausted: {limit}"),
        };
    }
    let mut failure = super::call::classify(plugin, e, store.data());
    if let CallError::Failed { message, .. } = &mut failure {
        message.insert_str(0, "while instantiating: ");
    }
    failure
}

/// The memory ceiling a manifest may ask for in this engine.
pub fn check_memory(
    manifest: &Manifest,
    limits: &EngineLimits,
    plugin: &str,
) -> anyhow::Result<()> {
    if manifest.limits.memory_mib > limits.slot_mib {
        anyhow::bail!(
            "{plugin}.toml: limits.memory_mib = {} is over this host's per-instance ceiling of {} MiB, \
             fixed when busbar started (restart busbar to raise it)",
            manifest.limits.memory_mib,
            limits.slot_mib
        );
    }
    Ok(())
}
