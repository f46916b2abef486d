//! Heap bytes per active alert, measured with a counting allocator.
//!
//! Run: `cargo bench --bench memory`. Admits N distinct firing alerts with 8
//! labels, one annotation and a generator URL (as Prometheus sends them), and
//! reports the live heap growth divided by N. Exits non-zero above 1 KiB.

use squadron::engine::{Engine, Outputs};
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
