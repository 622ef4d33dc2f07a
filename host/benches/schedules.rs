//! What many schedules cost: 100,000 loaded into one node's scheduler (half
//! rates, half crons), the resident memory they add, the time to compute a
//! next fire (what every tick does once), and the time to find the earliest due
//! schedule (what the one timer does each time it wakes).
//!
//! `cargo bench -p busbar --bench schedules`

use busbar::clock::Clock;
use busbar::schedule::expr::{Dialect, Expression};
use busbar::schedule::{Action, Job, Scheduler, Sink};
use std::sync::Arc;
use std::time::Instant;

const N: usize = 100_000;

struct Nowhere;

#[async_trait::async_trait]
impl Sink for Nowhere {
    async fn fire(&self, _: &Job, _: i64, _: String) -> Result<(), String> {
        Ok(())
    }
}

fn rss_kib() -> u64 {
    let text = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn job(i: usize, anchor: i64) -> Job {
    let text = if i.is_multiple_of(2) {
        format!("rate({} minutes)", 2 + i % 500)
    } else {
        format!("cron({} {} ? * MON-FRI *)", i % 60, i % 24)
    };
    Job {
        id: format!("schedule/bench/{i:06}"),
        expression: Expression::parse(&text, Dialect::Scheduler).unwrap(),
        text,
        zone: chrono_tz::Tz::UTC,
        start_ms: None,
        end_ms: None,
        window_ms: 0,
        anchor_ms: Some(anchor),
        action: Action::Schedule {
            group: "bench".into(),
            name: format!("{i:06}"),
        },
    }
}

fn main() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kv = Arc::new(busbar::bus::embedded::RedbKv::open(&dir.path().join("kv.redb")).unwrap());
    let clock = Arc::new(Clock::default());
    let anchor = clock.now_ms();
    let before = rss_kib();
    let jobs: Vec<Job> = (0..N).map(|i| job(i, anchor)).collect();
    let scheduler = Scheduler::new(clock.clone(), kv, Arc::new(Nowhere));
    let started = Instant::now();
    rt.block_on(scheduler.replace("schedule/", jobs));
    let load = started.elapsed();
    let after = rss_kib();
    println!("schedules loaded                 {N}");
    println!(
        "load into the table              {:.1} ms",
        load.as_secs_f64() * 1e3
    );
    println!(
        "resident memory added            {:.1} MiB ({} bytes per schedule)",
        (after - before) as f64 / 1024.0,
        (after - before) * 1024 / N as u64
    );

    for (kind, pick) in [("rate", 0usize), ("cron", 1usize)] {
        let sample: Vec<Job> = (0..N)
            .filter(|i| i % 2 == pick)
            .take(10_000)
            .map(|i| job(i, anchor))
            .collect();
        let started = Instant::now();
        let mut sum = 0i64;
        for j in &sample {
            sum = sum.wrapping_add(j.next_after(anchor + 3_600_000, anchor).unwrap_or(0));
        }
        let per = started.elapsed().as_secs_f64() * 1e9 / sample.len() as f64;
        println!(
            "next fire of a {kind}               {:.0} ns ({sum:x})",
            per
        );
    }
    let started = Instant::now();
    let rounds = 1_000_000;
    let mut seen = 0i64;
    for _ in 0..rounds {
        seen = seen.wrapping_add(scheduler.earliest_due().unwrap_or(0));
    }
    println!(
        "earliest due of {N}          {:.0} ns ({seen:x})",
        started.elapsed().as_secs_f64() * 1e9 / rounds as f64
    );
}
