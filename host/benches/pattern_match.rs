//! Matcher throughput on a citylots-like data set, side by side with the
//! `quamina` crate.
//!
//! The data set is generated at start-up from a fixed seed (nothing is
//! committed): GeoJSON features of about 1 KB, shaped like San Francisco's
//! citylots (`properties` MAPBLKLOT, BLKLOT, BLOCK_NUM, LOT_NUM, FROM_ST, TO_ST,
//! STREET, ST_TYPE, ODD_EVEN, plus LOT_AREA (a number) and IP (an address) so
//! `numeric` and `cidr` have something to read; polygon `geometry`). Features
//! are matched as they are, as raw bytes.
//!
//! Run: `cargo bench -p busbar --bench pattern_match`
//! (`BUSBAR_BENCH_EVENTS=20000` shrinks the data set from 200,000 events;
//! `BUSBAR_BENCH_ONLY=prefix` runs only the rule sets whose name contains the
//! text, and skips the memory figures, e.g. to profile one kind).
//! Figures are events per second on one thread.

use busbar::pattern::{Matcher, Pattern};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

/// Counts live heap bytes, to weigh a compiled matcher.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size, Ordering::Relaxed);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// splitmix64: tiny, fixed, and the same on every platform and crate version.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

const STREETS: &[&str] = &[
    "JACKSON",
    "FOLSOM",
    "MISSION",
    "VALENCIA",
    "GEARY",
    "MARKET",
    "HOWARD",
    "BRYANT",
    "HARRISON",
    "FILLMORE",
    "DIVISADERO",
    "CASTRO",
    "NOE",
    "SANCHEZ",
    "CHURCH",
    "DOLORES",
    "GUERRERO",
    "POTRERO",
    "KEARNY",
    "STOCKTON",
    "POWELL",
    "MASON",
    "TAYLOR",
    "JONES",
    "LEAVENWORTH",
    "HYDE",
    "LARKIN",
    "POLK",
    "VAN NESS",
    "FRANKLIN",
    "GOUGH",
    "OCTAVIA",
    "LAGUNA",
    "BUCHANAN",
    "WEBSTER",
    "STEINER",
    "PIERCE",
    "SCOTT",
    "BRODERICK",
    "BAKER",
    "LYON",
    "CENTRAL",
    "MASONIC",
    "ASHBURY",
    "CLAYTON",
    "COLE",
    "SHRADER",
    "STANYAN",
    "ARGUELLO",
    "UNKNOWN",
];
const ST_TYPES: &[&str] = &["ST", "AVE", "BLVD", "WAY", "TER", "PL", "LN", "CT"];

fn feature(rng: &mut Rng, i: usize) -> String {
    let block = rng.below(9000) + 1;
    let lot = rng.below(300) + 1;
    let street = STREETS[rng.below(STREETS.len() as u64) as usize];
    let st_type = if rng.below(10) == 0 {
        "null".to_string()
    } else {
        format!(
            "\"{}\"",
            ST_TYPES[rng.below(ST_TYPES.len() as u64) as usize]
        )
    };
    let from = rng.below(4000);
    let area = (rng.unit() * 20000.0 * 100.0).round() / 100.0;
    let ip = format!("10.{}.{}.{}", rng.below(4), rng.below(256), rng.below(256));
    let (x0, y0) = (-122.52 + rng.unit() * 0.15, 37.70 + rng.unit() * 0.11);
    let points = 13 + rng.below(4) as usize;
    let mut coords = String::new();
    for p in 0..points {
        if p > 0 {
            coords.push(',');
        }
        let (dx, dy) = (rng.unit() * 0.0005, rng.unit() * 0.0005);
        coords.push_str(&format!("[{:.15},{:.15},0.0]", x0 + dx, y0 + dy));
    }
    format!(
        concat!(
            r#"{{"type":"Feature","properties":{{"MAPBLKLOT":"{b:04}{l:03}","BLKLOT":"{b:04}{l:03}","BLOCK_NUM":"{b:04}","#,
            r#""LOT_NUM":"{l:03}","FROM_ST":"{f}","TO_ST":"{t}","STREET":"{s}","ST_TYPE":{st},"ODD_EVEN":"{oe}","#,
            r#""LOT_AREA":{a},"IP":"{ip}","FEATURE_ID":{i}}},"geometry":{{"type":"Polygon","coordinates":[[{c}]]}}}}"#
        ),
        b = block,
        l = lot,
        f = from,
        t = from + rng.below(50),
        s = street,
        st = st_type,
        oe = if from.is_multiple_of(2) { "E" } else { "O" },
        a = area,
        ip = ip,
        i = i,
        c = coords,
    )
}

fn kinds() -> Vec<(&'static str, Vec<String>)> {
    let p = |body: &str| format!(r#"{{"properties":{body}}}"#);
    vec![
        (
            "exact",
            ["JACKSON", "FOLSOM", "MISSION", "CASTRO", "NOE"]
                .iter()
                .map(|s| p(&format!(r#"{{"STREET":["{s}"]}}"#)))
                .collect(),
        ),
        (
            "prefix",
            ["JA", "FO", "MIS", "CA", "N"]
                .iter()
                .map(|s| p(&format!(r#"{{"STREET":[{{"prefix":"{s}"}}]}}"#)))
                .collect(),
        ),
        (
            "suffix",
            ["001", "0102", "99", "7", "250"]
                .iter()
                .map(|s| p(&format!(r#"{{"MAPBLKLOT":[{{"suffix":"{s}"}}]}}"#)))
                .collect(),
        ),
        (
            "equals-ignore-case",
            ["jackson", "Folsom", "mission", "CASTRO", "nOe"]
                .iter()
                .map(|s| p(&format!(r#"{{"STREET":[{{"equals-ignore-case":"{s}"}}]}}"#)))
                .collect(),
        ),
        (
            "anything-but",
            [
                r#"["ST","AVE"]"#,
                r#""BLVD""#,
                r#"["WAY","TER","PL"]"#,
                r#""LN""#,
                r#"["CT","ST"]"#,
            ]
            .iter()
            .map(|s| p(&format!(r#"{{"ST_TYPE":[{{"anything-but":{s}}}]}}"#)))
            .collect(),
        ),
        (
            "numeric",
            [
                r#"["<",100]"#,
                r#"[">=",19900]"#,
                r#"[">",5000,"<=",5050]"#,
                r#"["=",1234.5]"#,
                r#"[">",10,"<",20]"#,
            ]
            .iter()
            .map(|s| p(&format!(r#"{{"LOT_AREA":[{{"numeric":{s}}}]}}"#)))
            .collect(),
        ),
        (
            "wildcard",
            ["J*N", "*SON", "M*S*N", "*ER*", "C*O"]
                .iter()
                .map(|s| p(&format!(r#"{{"STREET":[{{"wildcard":"{s}"}}]}}"#)))
                .collect(),
        ),
        (
            "cidr",
            [
                "10.0.0.0/24",
                "10.1.0.0/16",
                "10.2.128.0/17",
                "10.3.3.0/30",
                "192.168.0.0/16",
            ]
            .iter()
            .map(|s| p(&format!(r#"{{"IP":[{{"cidr":"{s}"}}]}}"#)))
            .collect(),
        ),
        (
            "exists",
            [
                r#"{"ST_TYPE":[{"exists":true}]}"#,
                r#"{"NOPE":[{"exists":false}],"STREET":["JACKSON"]}"#,
                r#"{"TO_ST":[{"exists":true}],"ODD_EVEN":["O"]}"#,
                r#"{"MISSING":[{"exists":true}]}"#,
                r#"{"LOT_NUM":[{"exists":true}],"STREET":["NOE"]}"#,
            ]
            .iter()
            .map(|s| p(s))
            .collect(),
        ),
        (
            "$or",
            [
                r#"{"$or":[{"STREET":["JACKSON"]},{"ODD_EVEN":["O"],"ST_TYPE":["AVE"]}]}"#,
                r#"{"$or":[{"STREET":["FOLSOM"]},{"BLOCK_NUM":["0001"]}]}"#,
                r#"{"$or":[{"STREET":[{"prefix":"MI"}]},{"LOT_NUM":["007"]}]}"#,
                r#"{"STREET":["CASTRO"],"$or":[{"ODD_EVEN":["E"]},{"ST_TYPE":["ST"]}]}"#,
                r#"{"$or":[{"LOT_AREA":[{"numeric":["<",50]}]},{"STREET":["NOE"]}]}"#,
            ]
            .iter()
            .map(|s| p(s))
            .collect(),
        ),
    ]
}

/// The `i`th generated rule of a kind, beyond its hand-written five.
fn scaled_rule(kind: &str, i: usize, rng: &mut Rng) -> String {
    let block = rng.below(9000) + 1;
    let lot = rng.below(300) + 1;
    let body = match kind {
        "exact" => format!(r#"{{"STREET":["STREET {i}"],"BLOCK_NUM":["{block:04}"]}}"#),
        "prefix" => format!(r#"{{"MAPBLKLOT":[{{"prefix":"{block:04}{}"}}]}}"#, i % 3),
        "suffix" => format!(
            r#"{{"MAPBLKLOT":[{{"suffix":"{:03}{lot:03}"}}]}}"#,
            block % 1000
        ),
        "equals-ignore-case" => {
            format!(r#"{{"BLKLOT":[{{"equals-ignore-case":"{block:04}{lot:03}"}}]}}"#)
        }
        // Operators that fire on most values are paired with a rare exact value,
        // as real rule sets do; alone, 10,000 of them match every event 10,000 times.
        "anything-but" => {
            format!(r#"{{"BLOCK_NUM":["{block:04}"],"ST_TYPE":[{{"anything-but":["X{i}"]}}]}}"#)
        }
        "numeric" => {
            let lo = rng.below(20000);
            format!(
                r#"{{"LOT_AREA":[{{"numeric":[">=",{lo},"<",{}]}}]}}"#,
                lo + 1
            )
        }
        "wildcard" => format!(
            r#"{{"MAPBLKLOT":[{{"wildcard":"{block:04}*{}"}}]}}"#,
            lot % 10
        ),
        "cidr" => format!(
            r#"{{"IP":[{{"cidr":"10.{}.{}.0/24"}}]}}"#,
            rng.below(4),
            rng.below(256)
        ),
        "exists" => format!(r#"{{"F{i}":[{{"exists":true}}],"STREET":["NOE"]}}"#),
        _ => format!(r#"{{"$or":[{{"BLKLOT":["{block:04}{lot:03}"]}},{{"STREET":["S{i}"]}}]}}"#),
    };
    format!(r#"{{"properties":{body}}}"#)
}

struct Row {
    name: String,
    rules: usize,
    busbar_trusted: f64,
    busbar_json: f64,
    busbar_value: f64,
    quamina: Option<f64>,
    matches: usize,
    agree: &'static str,
}

/// Events per chunk: each contender runs one chunk in turn, so a burst of load
/// from elsewhere on the machine lands on all of them rather than on one.
const CHUNK: usize = 5_000;

/// One way of matching an event (by index), returning the number of matches.
type Contender<'a> = Box<dyn FnMut(usize) -> usize + 'a>;

/// Events per second of each contender, and each one's total match count.
/// `BUSBAR_BENCH_PATH=trusted` (or `validating`, `value`, `quamina`) runs that
/// one alone, for a profiler.
fn race(events: usize, contenders: &mut [(&str, Contender<'_>)]) -> Vec<(f64, usize)> {
    let only = std::env::var("BUSBAR_BENCH_PATH").ok();
    let mut spent = vec![0f64; contenders.len()];
    let mut found = vec![0usize; contenders.len()];
    let mut done = vec![0usize; contenders.len()];
    let mut from = 0;
    while from < events {
        let to = (from + CHUNK).min(events);
        for (k, (name, run)) in contenders.iter_mut().enumerate() {
            if only.as_deref().is_some_and(|o| o != *name)
                || (*name == "quamina" && spent[k] > BUDGET_SECS)
            {
                continue;
            }
            let t = Instant::now();
            found[k] += (from..to).map(&mut *run).sum::<usize>();
            spent[k] += t.elapsed().as_secs_f64();
            done[k] = to;
        }
        from = to;
    }
    spent
        .iter()
        .zip(found)
        .zip(done)
        .map(|((&t, n), d)| {
            // A contender stopped early is rated on what it did; its count
            // covers fewer events, so the agreement column shows it.
            (d as f64 / t, if d == events { n } else { usize::MAX })
        })
        .collect()
}

/// quamina slower than this per rule set (on some large sets it runs at tens
/// of events per second) is rated on the events it got through; busbar's own
/// paths always run every event, so their counts can be compared.
const BUDGET_SECS: f64 = 5.0;

fn measure(name: &str, rules: &[String], events: &[String], values: &[serde_json::Value]) -> Row {
    let patterns: Vec<(usize, Pattern)> = rules
        .iter()
        .enumerate()
        .map(|(i, r)| (i, Pattern::parse(r).expect(r)))
        .collect();
    let m = Matcher::new(patterns);
    // quamina 0.7 panics on some rule sets; report that instead of stopping.
    let q = std::panic::catch_unwind(|| {
        let mut q = quamina::Quamina::<usize>::new();
        rules
            .iter()
            .enumerate()
            .all(|(i, r)| q.add_pattern(i, r).is_ok())
            .then_some(q)
    });
    let (q, q_state) = match q {
        Ok(Some(q)) => (Some(q), "yes"),
        Ok(None) => (None, "n/a"),
        Err(_) => (None, "panic"),
    };
    let mut contenders: Vec<(&str, Contender<'_>)> = vec![
        (
            "trusted",
            Box::new(|i| m.matches_trusted(events[i].as_bytes()).len()),
        ),
        (
            "validating",
            Box::new(|i| m.matches_json(events[i].as_bytes()).unwrap().len()),
        ),
        ("value", Box::new(|i| m.matches(&values[i]).len())),
    ];
    let q_panicked = std::cell::Cell::new(false);
    if let Some(q) = &q {
        contenders.push((
            "quamina",
            Box::new(|i| {
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    q.matches_for_event(events[i].as_bytes()).unwrap().len()
                }))
                .unwrap_or_else(|_| {
                    q_panicked.set(true);
                    0
                })
            }),
        ));
    }
    // Warm the caches and the scratch areas once.
    race(events.len().min(1000), &mut contenders);
    let rates = race(events.len(), &mut contenders);
    let matches = rates[0].1;
    let only = std::env::var("BUSBAR_BENCH_PATH").is_ok();
    if !only {
        assert_eq!(
            matches, rates[1].1,
            "{name}: matches_trusted and matches_json disagree"
        );
        assert_eq!(
            matches, rates[2].1,
            "{name}: matches_trusted and matches disagree"
        );
    }
    drop(contenders);
    let (quamina, agree) = match rates.get(3) {
        _ if q_panicked.get() => (None, "panic"),
        Some(&(r, usize::MAX)) => (Some(r), "part"),
        Some(&(r, n)) => (Some(r), if n == matches { "yes" } else { "NO" }),
        None => (None, q_state),
    };
    Row {
        name: name.to_string(),
        rules: rules.len(),
        busbar_trusted: rates[0].0,
        busbar_json: rates[1].0,
        busbar_value: rates[2].0,
        quamina,
        matches,
        agree,
    }
}

fn print(rows: &[Row]) {
    println!(
        "| {:<26} | {:>6} | {:>13} | {:>13} | {:>13} | {:>13} | {:>10} | {:>9} | {:>6} |",
        "rule set",
        "rules",
        "trusted/s",
        "validating/s",
        "Value/s",
        "quamina/s",
        "trusted/q",
        "matches",
        "agree"
    );
    println!(
        "|{:-<28}|{:->8}|{:->15}|{:->15}|{:->15}|{:->15}|{:->12}|{:->11}|{:->8}|",
        "", "", "", "", "", "", "", "", ""
    );
    for r in rows {
        let (q, ratio) = match (r.quamina, r.agree) {
            (Some(q), _) => (format!("{q:.0}"), format!("{:.2}x", r.busbar_trusted / q)),
            (None, "panic") => ("panicked".into(), "-".into()),
            (None, _) => ("unsupported".into(), "-".into()),
        };
        println!(
            "| {:<26} | {:>6} | {:>13.0} | {:>13.0} | {:>13.0} | {:>13} | {:>10} | {:>9} | {:>6} |",
            r.name,
            r.rules,
            r.busbar_trusted,
            r.busbar_json,
            r.busbar_value,
            q,
            ratio,
            r.matches,
            r.agree
        );
    }
}

fn main() {
    std::panic::set_hook(Box::new(|info| eprintln!("(quamina) {info}")));
    let n: usize = std::env::var("BUSBAR_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let mut rng = Rng(0x5EED_C17E_1075);
    let events: Vec<String> = (0..n).map(|i| feature(&mut rng, i)).collect();
    let values: Vec<serde_json::Value> = events
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    let avg = events.iter().map(String::len).sum::<usize>() / n.max(1);
    println!(
        "citylots-like data set: {n} features, {avg} bytes on average (seeded, generated at start-up)\n"
    );

    let only = std::env::var("BUSBAR_BENCH_ONLY").ok();
    let wanted = |name: &str| only.as_deref().is_none_or(|o| name.contains(o));
    let mut rows = Vec::new();
    for (name, rules) in kinds() {
        if wanted(name) {
            rows.push(measure(name, &rules, &events, &values));
        }
    }

    // Scaling: every kind with 1, 100 and 10,000 rules (5 is the set above).
    // The first five rules are the kind's own set; the rest are distinct rules
    // of the same kind of which only a few can match a given event.
    let mut scale_rng = Rng(42);
    let all_kinds = kinds();
    for &count in &[1usize, 100, 10_000] {
        for (kind, base) in &all_kinds {
            let name = format!("{kind} x{count}");
            if !wanted(&name) {
                continue;
            }
            let rules: Vec<String> = (0..count)
                .map(|i| match base.get(i) {
                    Some(rule) => rule.clone(),
                    None => scaled_rule(kind, i, &mut scale_rng),
                })
                .collect();
            rows.push(measure(&name, &rules, &events, &values));
        }
    }
    print(&rows);
    if only.is_some() {
        return;
    }

    // Memory of a compiled matcher at 10,000 rules.
    println!();
    for (label, make) in [
        (
            "exact",
            Box::new(|i: usize| {
                format!(r#"{{"detail":{{"STREET":["STREET {i}"],"ODD_EVEN":["E"]}}}}"#)
            }) as Box<dyn Fn(usize) -> String>,
        ),
        (
            "prefix",
            Box::new(|i: usize| format!(r#"{{"detail":{{"MAPBLKLOT":[{{"prefix":"{i:05}"}}]}}}}"#)),
        ),
        (
            "mixed",
            Box::new(|i: usize| kinds()[i % 10].1[i % 5].replace("JACKSON", &format!("J{i}"))),
        ),
    ] {
        let rules: Vec<String> = (0..10_000).map(&make).collect();
        let patterns: Vec<(usize, Pattern)> = rules
            .iter()
            .enumerate()
            .map(|(i, r)| (i, Pattern::parse(r).unwrap()))
            .collect();
        // Patterns are shared (`Arc`) with the caller's copies, so what grows is
        // the matcher alone.
        let before = LIVE.load(Ordering::Relaxed);
        let t = Instant::now();
        let m = Matcher::new(patterns.iter().cloned());
        // A rule added or removed recompiles the whole set: this is its cost.
        let rebuild = t.elapsed();
        let ours = LIVE.load(Ordering::Relaxed).saturating_sub(before);
        let before = LIVE.load(Ordering::Relaxed);
        let q = std::panic::catch_unwind(|| {
            let mut q = quamina::Quamina::<usize>::new();
            rules
                .iter()
                .enumerate()
                .all(|(i, r)| q.add_pattern(i, r).is_ok())
                .then_some(q)
        })
        .ok()
        .flatten();
        let q_ok = q.is_some();
        let theirs = LIVE.load(Ordering::Relaxed).saturating_sub(before);
        println!(
            "10,000 {label} rules: busbar {:.1} MiB ({} bytes/rule), compiled (= one rule change) in {:.1} ms; quamina {}",
            ours as f64 / (1 << 20) as f64,
            ours / 10_000,
            rebuild.as_secs_f64() * 1e3,
            if q_ok {
                format!("{:.1} MiB", theirs as f64 / (1 << 20) as f64)
            } else {
                "unsupported".into()
            }
        );
        drop((m, q));
    }
}
