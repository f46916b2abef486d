//! Memory per active alert, heap and resident side by side.
//!
//! Run: `cargo bench --bench memory`. Each case runs in a fresh process (this
//! program again, with `SQUADRON_MEMORY_CASE`), so its resident memory is its own:
//!
//! - a cardinality storm: 10,000,000 alerts, each with a label value never
//!   seen before (a request id), through an engine capped at
//!   `limits.max_active_alerts: 100000`. Reports peak resident memory and every
//!   fate; exits non-zero if an alert is unaccounted for or peak RSS passes the
//!   cap's budget (100,000 alerts x 2 KiB resident + 64 MiB for the process).
//!   `SQUADRON_STORM_ALERTS` sets the storm's size.
//! - N distinct firing alerts (`SQUADRON_MEMORY_ACTIVE`, default 10,000,
//!   100,000 and 1,000,000) with 8 labels, one annotation and a generator URL
//!   (as Prometheus sends them): live heap growth (a counting allocator) and
//!   resident growth (VmRSS) divided by the active alerts. Exits non-zero above
//!   1 KiB of heap per alert.

use squadron::engine::{Engine, FateKind, Outputs};
use squadron::ingest::feed;
use squadron::model::Ts;
use squadron::rules::load_dir;
use squadron::sim::{Rng, distinct_alert};
use std::alloc::{GlobalAlloc, Layout, System};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicIsize, Ordering};

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);
static BLOCKS: AtomicIsize = AtomicIsize::new(0);

// SAFETY: forwards every call to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        BLOCKS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        BLOCKS.fetch_sub(1, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Each case runs in a process of its own (this program, started again with
/// `SQUADRON_MEMORY_CASE`), so resident memory is the case's alone.
fn main() {
    // cargo bench passes --bench; nothing to parse.
    let start = Ts(1_764_147_600_000);
    match std::env::var("SQUADRON_MEMORY_CASE").ok().as_deref() {
        Some("storm") => storm(start),
        Some(n) => active(
            n.parse().expect("SQUADRON_MEMORY_CASE: storm or a count"),
            start,
        ),
        None => {
            let sizes = std::env::var("SQUADRON_MEMORY_ACTIVE")
                .unwrap_or_else(|_| "10000,100000,1000000".into());
            let cases = std::iter::once("storm").chain(sizes.split(','));
            for case in cases {
                let status = std::process::Command::new(std::env::current_exe().unwrap())
                    .env("SQUADRON_MEMORY_CASE", case)
                    .status()
                    .expect("run a case");
                if !status.success() {
                    std::process::exit(status.code().unwrap_or(1));
                }
            }
        }
    }
}

/// Admits `n` distinct firing alerts, flushes their groups once, and reports
/// heap growth (counted) and resident growth (VmRSS) per active alert. The
/// messages are made one at a time, so they are not in either figure.
fn active(n: usize, start: Ts) {
    let mut rules = load_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("rules")).unwrap();
    // Every alert admitted: the shipped cap (250,000) would shed most of a million.
    rules.limits.max_active_alerts = 0;
    let mut engine = Engine::new(Arc::new(rules));
    let mut out = Outputs::default();
    let mut rng = Rng::new(9);
    let (heap_before, blocks_before, rss_before) = (
        LIVE.load(Ordering::Relaxed),
        BLOCKS.load(Ordering::Relaxed),
        rss(),
    );
    for i in 0..n {
        let m = distinct_alert(i, start, &mut rng);
        feed(&mut engine, &m, start, i as u64, &mut out);
        out.clear();
    }
    // Flush every group once so pending input lists are released, as in steady state.
    engine.tick(start.plus(std::time::Duration::from_secs(60)), &mut out);
    out.clear();
    out.fates.shrink_to_fit();
    out.notifications.shrink_to_fit();
    let heap = LIVE.load(Ordering::Relaxed) - heap_before;
    let blocks = BLOCKS.load(Ordering::Relaxed) - blocks_before;
    let resident = rss() as isize - rss_before as isize;
    // What the allocator holds free inside its heap (glibc returns it only on
    // request, as the pipeline does every 10 s after work): the difference
    // between resident and trimmed resident, and what the trim costs.
    let trim_started = std::time::Instant::now();
    squadron::pipeline::memory::release_free_memory();
    let trim_took = trim_started.elapsed();
    let trimmed = rss() as isize - rss_before as isize;
    let active = engine.active_alerts();
    let per = |bytes: isize| bytes as f64 / active as f64;
    println!(
        "memory/active_alert n={n}: {active} active alerts, {} groups; heap {heap} bytes in {blocks} allocations, {:.0} bytes and {:.1} allocations per alert (engine estimate {:.0}); resident {resident} bytes, {:.0} per alert, {:.0} after malloc_trim ({:.1} ms)",
        engine.active_groups(),
        per(heap),
        per(blocks),
        engine.state_bytes() as f64 / active as f64,
        per(resident),
        per(trimmed),
        trim_took.as_secs_f64() * 1e3,
    );
    assert!(
        active as f64 > n as f64 * 0.99,
        "nearly every alert is admitted"
    );
    if per(heap) > 1024.0 {
        eprintln!(
            "over budget: {:.0} heap bytes per active alert (limit 1024)",
            per(heap)
        );
        std::process::exit(1);
    }
}

/// Resident set size of this process now (VmRSS), in bytes.
fn rss() -> u64 {
    status_kb("VmRSS:") * 1024
}

/// Peak resident set size of this process (VmHWM), in bytes.
fn peak_rss() -> u64 {
    status_kb("VmHWM:") * 1024
}

fn status_kb(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .unwrap_or(0)
}

fn storm(start: Ts) {
    let n: u64 = std::env::var("SQUADRON_STORM_ALERTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000_000);
    let cap = 100_000usize;
    let mut capped = load_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("rules")).unwrap();
    capped.limits.max_active_alerts = cap;
    let mut engine = Engine::new(Arc::new(capped));
    let mut out = Outputs::default();
    let mut fates = [0u64; FateKind::ALL.len()];
    let mut count = |out: &mut Outputs| {
        for f in &out.fates {
            fates[f.fate.kind() as usize] += 1;
        }
        out.clear();
    };
    let rss_before = peak_rss();
    let started = std::time::Instant::now();
    let mut msg = String::with_capacity(512);
    for i in 0..n {
        use std::fmt::Write;
        msg.clear();
        // One second of traffic per 10,000 alerts: groups flush as they would.
        let now = start.plus(std::time::Duration::from_millis(i / 10));
        write!(
            msg,
            r#"{{"labels":{{"alertname":"HighLatency","service":"search-api","env":"production","cluster":"eu-1","namespace":"search","pod":"search-api-{pod}","request_id":"req-{i:012}","severity":"warning"}},"annotations":{{"summary":"slow request"}},"generatorURL":"http://prometheus:9090/graph?g0.expr=latency"}}"#,
            pod = i % 50,
        )
        .unwrap();
        engine.advance_to(now, &mut out);
        count(&mut out);
        feed(&mut engine, msg.as_bytes(), now, i, &mut out);
        count(&mut out);
    }
    // Let every group flush once more, so every admitted alert has its fate.
    let end = start.plus(std::time::Duration::from_millis(n / 10 + 600_000));
    engine.advance_to(end, &mut out);
    count(&mut out);
    let took = started.elapsed();
    let accounted: u64 = fates.iter().sum();
    let peak = peak_rss();
    let budget = cap as u64 * 2048 + (64 << 20);
    let by_kind: Vec<String> = FateKind::ALL
        .iter()
        .filter(|k| fates[**k as usize] > 0)
        .map(|k| format!("{} {}", k.as_str(), fates[*k as usize]))
        .collect();
    println!(
        "memory/storm n={n} max_active_alerts={cap}: {} active at the end, fates: {}; peak RSS {} MiB (before the storm {} MiB, budget {} MiB); {:.1} s",
        engine.active_alerts(),
        by_kind.join(", "),
        peak >> 20,
        rss_before >> 20,
        budget >> 20,
        took.as_secs_f64()
    );
    if accounted != n {
        eprintln!("{} of {n} alerts have no fate", n - accounted);
        std::process::exit(1);
    }
    if peak > budget {
        eprintln!(
            "peak RSS {} MiB over the budget of {} MiB",
            peak >> 20,
            budget >> 20
        );
        std::process::exit(1);
    }
}
