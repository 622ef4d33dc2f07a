//! The one wasmtime [`Engine`] every plugin runs in, and the epoch ticker that
//! lets the host interrupt guest code.

use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// One epoch tick. Guests are interrupted at most this late past a deadline;
/// a shorter tick costs a thread wake-up per tick and nothing on the call path.
pub const TICK: Duration = Duration::from_millis(1);

/// The smallest per-instance memory slot: the default manifest cap with room
/// for manifests added after start-up.
const MIN_SLOT_MIB: u64 = 256;

/// How many component instances can be alive at once, over all plugins.
/// The per-plugin `max_instances` (at most 256) bounds each plugin; this
/// bounds the sum, so a host full of plugins cannot reserve unbounded
/// address space. `pool::InstanceBudget` shares these slots out: one
/// reserved per loaded plugin, the rest to whoever needs them.
pub const TOTAL_INSTANCES: u32 = 512;

/// Engine-wide sizing decided at start-up.
#[derive(Debug, Clone, Copy)]
pub struct EngineLimits {
    /// The largest linear memory an instance may have; a manifest asking for
    /// more is refused (the pool's slots cannot grow after start-up).
    pub slot_mib: u64,
}

/// Builds the engine. `largest_manifest_mib` is the biggest `limits.memory_mib`
/// among the manifests present at start-up.
pub fn build(largest_manifest_mib: u64) -> anyhow::Result<(Engine, EngineLimits)> {
    let slot_mib = largest_manifest_mib.max(MIN_SLOT_MIB).next_power_of_two();

    // Pooling: instantiation takes a pre-reserved slot instead of mmapping
    // memories, tables and fiber stacks per call, which is what makes a fresh
    // instance per event affordable. Sizes are virtual reservations; only
    // touched pages cost memory.
    let mut pool = PoolingAllocationConfig::new();
    pool.total_component_instances(TOTAL_INSTANCES)
        // JavaScript and Python components link a dozen core modules each.
        .total_core_instances(TOTAL_INSTANCES * 16)
        .total_memories(TOTAL_INSTANCES * 2)
        .total_tables(TOTAL_INSTANCES * 4)
        // One fiber stack per call in flight (calls run on async fibers).
        .total_stacks(TOTAL_INSTANCES)
        .max_memory_size(usize::try_from(slot_mib << 20)?)
        // Interpreters have large function tables (CPython's is ~10k entries).
        .table_elements(100_000)
        .max_core_instance_size(8 << 20)
        .max_component_instance_size(8 << 20)
        // On reset, wasmtime finds the pages an instance wrote (PAGEMAP_SCAN on
        // Linux 6.7+) and restores up to this much by hand, keeping them mapped;
        // the rest is madvised away and faults back in on the next instance.
        // A small Rust guest writes 1-2 MiB (stack, data, heap): below that the
        // scan stops early and the slot pays both the copy and the faults
        // (measured: fresh instances 25% slower at 1 MiB than at 2 MiB). Only
        // pages a guest really wrote stay resident.
        .linear_memory_keep_resident(2 << 20)
        .table_keep_resident(64 << 10);

    let mut config = Config::new();
    config
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool))
        // Copy-on-write images: a new instance maps the module's data segments
        // instead of copying them, so start-up cost does not grow with the heap image.
        .memory_init_cow(true)
        // Epochs rather than fuel: a counter check at loop heads and calls is far
        // cheaper than counting every instruction, and the ticker gives a time base.
        .epoch_interruption(true)
        .cranelift_opt_level(wasmtime::OptLevel::Speed);
    let engine = Engine::new(&config)
        .map_err(|e| anyhow::anyhow!("cannot create the wasmtime engine: {e:#}"))?;
    Ok((engine, EngineLimits { slot_mib }))
}

/// Advances the engine's epoch every [`TICK`] on a thread of its own until dropped.
pub struct Ticker {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Ticker {
    pub fn start(engine: &Engine) -> anyhow::Result<Ticker> {
        let stop = Arc::new(AtomicBool::new(false));
        let engine = engine.clone();
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("busbar-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(TICK);
                    engine.increment_epoch();
                }
            })?;
        Ok(Ticker {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Converts a duration into epoch ticks, rounding up so a deadline never fires early.
pub fn ticks(d: Duration) -> u64 {
    let tick = TICK.as_nanos();
    (d.as_nanos().div_ceil(tick)).max(1) as u64
}

/// CPU time consumed by the calling thread. Calls run on one thread from start
/// to end (see `call.rs`), so the difference of two readings is the CPU the
/// call used, excluding time blocked in host calls such as HTTP.
pub fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_THREAD_CPUTIME_ID is
    // supported on every Linux and macOS version busbar runs on.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Where a call's CPU budget starts counting: this thread's CPU clock, read
/// at most once per [`TICK`]. The clock is a system call (about a microsecond,
/// a sizeable share of a warm call), so back-to-back calls on one thread share
/// a reading. A reading taken less than a tick ago is at most a tick behind
/// the clock, so a call is charged at most one tick of the host's own work
/// before it: the same granularity epoch interruption already has, and never
/// in the guest's favour.
pub fn cpu_baseline() -> Duration {
    thread_local! {
        static LAST: Cell<Option<(Instant, Duration)>> = const { Cell::new(None) };
    }
    let now = Instant::now();
    LAST.with(|last| match last.get() {
        Some((at, cpu)) if now.saturating_duration_since(at) < TICK => cpu,
        _ => {
            let cpu = thread_cpu_time();
            last.set(Some((now, cpu)));
            cpu
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_round_up() {
        assert_eq!(ticks(Duration::ZERO), 1);
        assert_eq!(ticks(Duration::from_micros(1500)), 2);
        assert_eq!(ticks(Duration::from_millis(500)), 500);
    }

    #[test]
    fn cpu_baseline_is_never_ahead_of_the_clock() {
        for _ in 0..1000 {
            let base = cpu_baseline();
            assert!(base <= thread_cpu_time());
        }
        // After a tick the reading is refreshed, so it cannot lag behind
        // the work done since.
        let mut x = 0u64;
        let start = Instant::now();
        while start.elapsed() < 3 * TICK {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        let before = thread_cpu_time();
        assert!(cpu_baseline() >= before);
    }

    #[test]
    fn thread_cpu_time_advances_with_work() {
        let before = thread_cpu_time();
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        assert!(thread_cpu_time() > before);
    }
}
