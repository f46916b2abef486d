//! Giving freed heap memory back to the operating system.
//!
//! glibc keeps memory that was freed inside its heap for reuse: after a burst
//! of admissions or notifications (decoded messages, records, payloads, all
//! short-lived, interleaved with the engine's long-lived alerts) that is about
//! as much again as the engine holds (BENCHMARKS.md, memory per active alert).
//! `malloc_trim(0)` returns the free pages. It walks the heap, so the loop
//! calls it at most every [`EVERY`], and only after work was done: an idle
//! process never trims (nothing to give back) and a busy one spends about a
//! millisecond in ten seconds.

use std::time::{Duration, Instant};

/// How often at most the heap is trimmed.
pub const EVERY: Duration = Duration::from_secs(10);

/// When to trim next: after [`EVERY`], if work was done since the last trim.
pub struct Trim {
    last: Instant,
    busy: bool,
}

impl Default for Trim {
    fn default() -> Trim {
        Trim {
            last: Instant::now(),
            busy: false,
        }
    }
}

impl Trim {
    /// Some work was done (messages read, timers fired).
    pub fn worked(&mut self) {
        self.busy = true;
    }

    /// Trims if it is time; how long the trim took, if it ran.
    pub fn maybe(&mut self) -> Option<Duration> {
        if !self.busy || self.last.elapsed() < EVERY {
            return None;
        }
        let start = Instant::now();
        release_free_memory();
        self.last = Instant::now();
        self.busy = false;
        Some(start.elapsed())
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
    fn trims_only_after_work() {
        let mut t = Trim {
            last: Instant::now() - EVERY * 2,
            busy: false,
        };
        assert_eq!(t.maybe(), None, "idle: nothing to give back");
        t.worked();
        assert!(t.maybe().is_some());
        t.worked();
        assert_eq!(t.maybe(), None, "not again within EVERY");
    }
}
