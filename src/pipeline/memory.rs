//! Giving freed heap memory back to the operating system.
//!
//! glibc keeps memory that was freed inside its heap for reuse: after a burst
//! of admissions or notifications (decoded messages, records, payloads, all
//! short-lived, interleaved with the engine's long-lived alerts) that is about
//! as much again as the engine holds (BENCHMARKS.md, memory per active alert).
//! `malloc_trim(0)` returns the free pages. It walks the allocator's free
//! chunks and holds each arena's lock meanwhile, so it costs time in
//! proportion to the fragmentation (measured by the memory bench: 66 ms after
//! admitting 100,000 alerts, 1.9 s after 1,000,000). The loop calls it only
//! after work was done (an idle process has nothing to give back), at most
//! every [`EVERY`], and never spends more than [`SHARE`] of its time in it: a
//! trim that took `t` waits `t / SHARE` before the next.

use std::time::{Duration, Instant};

/// How often at most the heap is trimmed.
pub const EVERY: Duration = Duration::from_secs(10);
/// The largest share of the loop's time spent trimming.
pub const SHARE: f64 = 0.01;

/// When to trim next.
pub struct Trim {
    last: Instant,
    wait: Duration,
    busy: bool,
}

impl Default for Trim {
    fn default() -> Trim {
        Trim {
            last: Instant::now(),
            wait: EVERY,
            busy: false,
        }
    }
}

impl Trim {
    /// Some work was done (messages read, timers fired).
    pub fn worked(&mut self) {
        self.busy = true;
    }

    fn due(&self, now: Instant) -> bool {
        self.busy && now.duration_since(self.last) >= self.wait
    }

    fn done(&mut self, now: Instant, took: Duration) {
        self.last = now;
        self.wait = EVERY.max(took.div_f64(SHARE));
        self.busy = false;
    }

    /// Trims if it is time; how long the trim took, if it ran.
    pub fn maybe(&mut self) -> Option<Duration> {
        if !self.due(Instant::now()) {
            return None;
        }
        let start = Instant::now();
        release_free_memory();
        let took = start.elapsed();
        self.done(Instant::now(), took);
        Some(took)
    }
}

/// Returns the free pages of every glibc arena to the OS (a no-op elsewhere).
#[allow(unsafe_code)] // audited: lib.rs
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only reorganizes the allocator's own free lists; it
    // is thread-safe and takes no pointers.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_after_work_and_within_its_share_of_time() {
        let t0 = Instant::now();
        let mut t = Trim {
            last: t0,
            wait: EVERY,
            busy: false,
        };
        assert!(!t.due(t0 + EVERY * 2), "idle: nothing to give back");
        t.worked();
        assert!(!t.due(t0 + EVERY / 2), "not within EVERY");
        assert!(t.due(t0 + EVERY));
        // A fast trim: the next one after EVERY again.
        t.done(t0 + EVERY, Duration::from_millis(5));
        t.worked();
        assert!(t.due(t0 + EVERY * 2));
        // A slow one (2 s): the next waits 200 s, so trimming stays at 1%.
        t.done(t0 + EVERY * 2, Duration::from_secs(2));
        t.worked();
        assert!(!t.due(t0 + EVERY * 2 + Duration::from_secs(199)));
        assert!(t.due(t0 + EVERY * 2 + Duration::from_secs(200)));
        assert!(
            t.maybe().is_none() || t.maybe().is_none(),
            "at most one trim at a time"
        );
    }
}
