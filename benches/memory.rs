//! Heap bytes per active alert, measured with a counting allocator.
//!
//! Run: `cargo bench --bench memory`. Admits N distinct firing alerts with 8
//! labels, one annotation and a generator URL (as Prometheus sends them), and
//! reports the live heap growth divided by N. Exits non-zero above 1 KiB.
//!
//! Then a cardinality storm: 10,000,000 alerts, each with a label value never
//! seen before (a request id), through an engine capped at
//! `limits.max_active_alerts: 100000`. Reports peak resident memory and every
//! fate; exits non-zero if an alert is unaccounted for or peak RSS passes the
//! cap's budget (100,000 alerts x 2 KiB resident + 64 MiB for the process;
//! resident memory per alert is about 2.5x the heap bytes, see BENCHMARKS.md).
//! `SQUADRON_STORM_ALERTS` sets the storm's size.

use squadron::engine::{Engine, FateKind, Outputs};
use squadron::ingest::feed;
use squadron::model::Ts;
use squadron::rules::load_dir;
use squadron::sim::distinct_alerts;
use std::alloc::{GlobalAlloc, Layout, System};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicIsize, Ordering};

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: forwards every call to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
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

fn main() {
    // cargo bench passes --bench; nothing to parse.
    let rules = Arc::new(load_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("rules")).unwrap());
    let start = Ts(1_764_147_600_000);
    // First, so the process's peak resident memory is the storm's.
    storm(start);
    for n in [10_000usize, 100_000] {
        let messages = distinct_alerts(n, start, 9);
        let mut engine = Engine::new(rules.clone());
        let mut out = Outputs::default();
        let before = LIVE.load(Ordering::Relaxed);
        for (i, m) in messages.iter().enumerate() {
            feed(&mut engine, m, start, i as u64, &mut out);
            out.clear();
        }
        // Flush every group once so pending input lists are released, as in steady state.
        engine.tick(start.plus(std::time::Duration::from_secs(60)), &mut out);
        out.clear();
        out.fates.shrink_to_fit();
        out.notifications.shrink_to_fit();
        let grown = LIVE.load(Ordering::Relaxed) - before;
        let active = engine.active_alerts();
        let per_alert = grown as f64 / active as f64;
        println!(
            "memory/active_alert n={n}: {active} active alerts, {} groups, {grown} heap bytes, {per_alert:.0} bytes per alert (engine estimate {:.0})",
            engine.active_groups(),
            engine.state_bytes() as f64 / active as f64
        );
        assert!(
            active as f64 > n as f64 * 0.99,
            "nearly every alert is admitted"
        );
        if per_alert > 1024.0 {
            eprintln!("over budget: {per_alert:.0} bytes per active alert (limit 1024)");
            std::process::exit(1);
        }
    }
}

/// Peak resident set size of this process (VmHWM), in bytes.
fn peak_rss() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .unwrap_or(0)
        * 1024
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
