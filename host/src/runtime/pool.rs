//! One loaded plugin version and its instances: the warm pool for `reuse`,
//! a new instance per call for `fresh`, the per-plugin bound on live
//! instances, and the engine-wide [`InstanceBudget`] every plugin draws from.
//!
//! When `max_instances` instances of a plugin are alive, a call waits up to
//! [`SLOT_WAIT`] for one to be released and then fails with
//! `TooManyInstances` (retryable). The dispatcher keeps its concurrency at or
//! below the limit, so the wait only covers the moment between one call's
//! end and the next one's start.
//!
//! The engine's pool has a fixed number of slots ([`engine::TOTAL_INSTANCES`])
//! while the plugins' `max_instances` add up to far more, so the slots are
//! shared under three rules: every loaded plugin holds one slot in reserve
//! (its first instance never waits for another plugin), a plugin that needs a
//! slot beyond that releases an idle warm instance of another plugin when
//! the engine is full, and a manifest whose `max_instances` could never be
//! granted next to the other plugins' reservations is refused at load.

use super::call_metrics::CallMetrics;
use super::engine::{self, EngineLimits};
use super::errors::{CallError, FailureKind};
use super::imports::bindings::{Handler, HandlerPre};
use super::imports::{CallClock, LimitExceeded, PluginHost, State};
use super::manifest::{Manifest, Policy};
use parking_lot::{Condvar, Mutex, MutexGuard};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};
use wasmtime::component::Component;
use wasmtime::{Store, UpdateDeadline};

/// How long a call waits for a free instance slot before giving up.
pub const SLOT_WAIT: Duration = Duration::from_millis(100);

/// The engine's instance slots, shared by every plugin. All counts change
/// under one lock so that `used` is always the sum over plugins of
/// `max(live, reserved)`: a reserved slot is taken whether or not the plugin
/// runs an instance in it.
pub struct InstanceBudget {
    total: u32,
    counts: Mutex<Counts>,
    /// Signalled whenever an instance ends or a reservation is given back.
    freed: Condvar,
    /// Versions that may hold idle warm instances, for [`InstanceBudget::reclaim`].
    versions: Mutex<Vec<Weak<Version>>>,
}

#[derive(Default)]
struct Counts {
    /// Instances alive in the engine (what wasmtime's pool holds).
    live: u32,
    /// Slots spoken for: live instances plus unused reservations.
    used: u32,
    /// Loaded plugins, one reserved slot each.
    reserved: u32,
}

/// Why no slot was granted within [`SLOT_WAIT`].
enum Refusal {
    /// The plugin's own `limits.max_instances` are all alive.
    PluginLimit,
    /// Every engine slot is live or reserved and no idle instance of another
    /// plugin could be released.
    EngineFull { reserved: u32 },
}

impl InstanceBudget {
    pub fn new(total: u32) -> Arc<InstanceBudget> {
        Arc::new(InstanceBudget {
            total,
            counts: Mutex::new(Counts::default()),
            freed: Condvar::new(),
            versions: Mutex::new(Vec::new()),
        })
    }

    fn track(&self, version: &Arc<Version>) {
        let mut versions = self.versions.lock();
        versions.retain(|v| v.strong_count() > 0);
        versions.push(Arc::downgrade(version));
    }

    /// Drops one idle warm instance of a plugin other than `wanted_by`, the
    /// least recently used one of the plugin with the most idle instances.
    /// Returns whether one was released.
    fn reclaim(&self, wanted_by: &str) -> bool {
        let victim = {
            let versions = self.versions.lock();
            versions
                .iter()
                .filter_map(Weak::upgrade)
                .filter(|v| &*v.name != wanted_by)
                .max_by_key(|v| v.idle_count())
        };
        let Some(victim) = victim else { return false };
        let instance = {
            let mut idle = victim.idle.lock();
            if idle.is_empty() {
                return false;
            }
            // Idle instances are pushed and popped at the end: the front is coldest.
            idle.remove(0)
        };
        tracing::debug!(plugin = %victim.name, for_plugin = wanted_by, "releasing an idle instance for another plugin");
        // Dropping the store gives the slot back to wasmtime, then to the budget.
        drop(instance);
        true
    }
}

/// Live instances of one plugin, over all its versions: an old version's
/// instances still finishing calls count until they are dropped.
pub struct Slots {
    name: Arc<str>,
    budget: Arc<InstanceBudget>,
    /// Changed only under `budget.counts`; atomics so status reads need no lock.
    live: AtomicU32,
    reserved: AtomicBool,
    gauge: metrics::Gauge,
}

impl Slots {
    pub fn new(plugin: &str, budget: &Arc<InstanceBudget>) -> Arc<Slots> {
        Arc::new(Slots {
            name: plugin.into(),
            budget: budget.clone(),
            live: AtomicU32::new(0),
            reserved: AtomicBool::new(false),
            gauge: metrics::gauge!("busbar_plugin_instances", "plugin" => plugin.to_string()),
        })
    }

    pub fn live(&self) -> u32 {
        self.live.load(Ordering::Relaxed)
    }

    /// Holds one engine slot for this plugin for as long as it is loaded,
    /// after checking that `max_instances` can be granted next to the other
    /// loaded plugins' reservations. Idempotent; a reload only re-checks.
    pub fn reserve(&self, max_instances: u32) -> anyhow::Result<()> {
        let total = self.budget.total;
        let mut counts = self.budget.counts.lock();
        let mine = self.reserved.load(Ordering::Relaxed);
        let others = counts.reserved - u32::from(mine);
        let room = total - others.min(total);
        if max_instances > room {
            anyhow::bail!(
                "{}.toml: limits.max_instances = {max_instances} cannot fit: the engine has {total} instance slots \
                 and {others} are reserved, one for each other loaded plugin, so at most {room} can be granted; \
                 lower limits.max_instances or remove a plugin",
                self.name
            );
        }
        if !mine {
            self.reserved.store(true, Ordering::Relaxed);
            counts.reserved += 1;
            // A live instance already occupies the slot the reservation names.
            // Otherwise `used` may pass `total` for a moment: other plugins'
            // instances then get no new slots until enough of theirs end.
            if self.live() == 0 {
                counts.used += 1;
            }
        }
        Ok(())
    }

    /// Gives the reserved slot back (the plugin was unloaded).
    pub fn unreserve(&self) {
        let mut counts = self.budget.counts.lock();
        if self.reserved.swap(false, Ordering::Relaxed) {
            counts.reserved -= 1;
            if self.live() == 0 {
                counts.used -= 1;
            }
            self.budget.freed.notify_all();
        }
    }

    /// Takes a slot for a new instance, waiting up to [`SLOT_WAIT`] for one.
    fn acquire(self: &Arc<Self>, max: u32) -> Result<SlotGuard, Refusal> {
        let budget = &*self.budget;
        let deadline = Instant::now() + SLOT_WAIT;
        let mut counts = budget.counts.lock();
        let mut timed_out = false;
        loop {
            let refusal = match self.take(&mut counts, max) {
                Ok(guard) => return Ok(guard),
                Err(refusal) => refusal,
            };
            // The engine is full: make room from another plugin's idle
            // instances before waiting for a call to end.
            if matches!(refusal, Refusal::EngineFull { .. })
                && MutexGuard::unlocked(&mut counts, || budget.reclaim(&self.name))
            {
                continue;
            }
            if timed_out {
                return Err(refusal);
            }
            timed_out = budget.freed.wait_until(&mut counts, deadline).timed_out();
        }
    }

    /// A slot now, if the plugin's limit and the engine's slots allow it. A
    /// plugin's first instance uses its reservation; any further one needs a
    /// slot nobody has reserved, and every new instance needs a physically
    /// free slot (a reservation made while the engine was full waits for one).
    fn take(self: &Arc<Self>, counts: &mut Counts, max: u32) -> Result<SlotGuard, Refusal> {
        let total = self.budget.total;
        let live = self.live();
        if live >= max {
            return Err(Refusal::PluginLimit);
        }
        let within_reserve = live < u32::from(self.reserved.load(Ordering::Relaxed));
        if counts.live >= total || (!within_reserve && counts.used >= total) {
            return Err(Refusal::EngineFull {
                reserved: counts.reserved,
            });
        }
        self.live.store(live + 1, Ordering::Relaxed);
        counts.live += 1;
        if !within_reserve {
            counts.used += 1;
        }
        self.gauge.set(f64::from(live + 1));
        Ok(SlotGuard(self.clone()))
    }

    fn release(&self) {
        let mut counts = self.budget.counts.lock();
        let live = self.live();
        if live > u32::from(self.reserved.load(Ordering::Relaxed)) {
            counts.used -= 1;
        }
        counts.live -= 1;
        self.live.store(live - 1, Ordering::Relaxed);
        self.gauge.set(f64::from(live - 1));
        // Waiters of this plugin and of others alike may proceed now.
        self.budget.freed.notify_all();
    }
}

/// Holds one unit of [`Slots`] for as long as an instance exists.
pub struct SlotGuard(Arc<Slots>);

impl Drop for SlotGuard {
    fn drop(&mut self) {
        self.0.release();
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
    /// The most linear memory an instance held at the end of a call, in bytes.
    pub memory_high_water: AtomicU64,
    pub metrics: CallMetrics,
}

impl Version {
    pub fn new(
        host: Arc<PluginHost>,
        hash: String,
        component: Component,
        pre: HandlerPre<State>,
        slots: Arc<Slots>,
    ) -> Arc<Version> {
        let name = host.name.clone();
        let budget = slots.budget.clone();
        let version = Arc::new(Version {
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
            memory_high_water: AtomicU64::new(0),
        });
        budget.track(&version);
        version
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
        // Our count of slots and wasmtime's can differ on the other limits of
        // the pool (core instances, memories, tables: a component may use more
        // than the average sized for); idle instances of other plugins are
        // released for those too, a few times at most.
        let mut attempts = 0;
        loop {
            let slot = self.acquire_slot()?;
            match self.instantiate(clock, slot).await {
                Err(InstantiateError::PoolFull(_))
                    if attempts < 3 && self.slots.budget.reclaim(&self.name) =>
                {
                    attempts += 1;
                }
                Err(InstantiateError::PoolFull(limit)) => {
                    return Err(CallError::Failed {
                        plugin: self.name.to_string(),
                        kind: FailureKind::TooManyInstances,
                        message: format!("the engine's instance pool is exhausted: {limit}"),
                    });
                }
                Err(InstantiateError::Failed(e)) => return Err(e),
                Ok(instance) => return Ok(instance),
            }
        }
    }

    fn acquire_slot(&self) -> Result<SlotGuard, CallError> {
        let max = self.manifest.limits.max_instances;
        self.slots.acquire(max).map_err(|refusal| {
            let message = match refusal {
                Refusal::PluginLimit => format!(
                    "{max} instances are busy (limits.max_instances) and none was released within {} ms",
                    SLOT_WAIT.as_millis()
                ),
                Refusal::EngineFull { reserved } => format!(
                    "all {} instance slots of the engine are busy or reserved ({reserved} held in reserve, \
                     one per loaded plugin) and none was released within {} ms",
                    self.slots.budget.total,
                    SLOT_WAIT.as_millis()
                ),
            };
            CallError::Failed {
                plugin: self.name.to_string(),
                kind: FailureKind::TooManyInstances,
                message,
            }
        })
    }

    async fn instantiate(
        &self,
        clock: CallClock,
        slot: SlotGuard,
    ) -> Result<Instance, InstantiateError> {
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
            Err(e) => match e.downcast_ref::<wasmtime::PoolConcurrencyLimitError>() {
                Some(limit) => Err(InstantiateError::PoolFull(limit.to_string())),
                None => Err(InstantiateError::Failed(instantiate_error(
                    &self.name, e, &store,
                ))),
            },
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

/// How creating an instance failed: the pool (worth another try once an
/// idle instance is released) or anything else.
enum InstantiateError {
    PoolFull(String),
    Failed(CallError),
}

fn instantiate_error(plugin: &str, e: wasmtime::Error, store: &Store<State>) -> CallError {
    let mut failure = super::classify::classify(plugin, e, store.data());
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
