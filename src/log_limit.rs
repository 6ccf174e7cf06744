//! At most one log line a second for events anyone on the network can cause at will
//! (a client's broken request, a connection over a cap): the line says how many like it
//! were left out, and the log cannot be flooded.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

pub struct LogLimit {
    start: Instant,
    /// Second (since `start`) of the last admitted line, plus one; 0: none yet.
    last: AtomicU64,
    skipped: AtomicU64,
}

impl LogLimit {
    pub fn new() -> LogLimit {
        LogLimit {
            start: Instant::now(),
            last: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
        }
    }

    /// `Some(lines left out since the last one)` when a line may be written now.
    pub fn admit(&self) -> Option<u64> {
        self.admit_at(self.start.elapsed().as_secs())
    }

    fn admit_at(&self, now_s: u64) -> Option<u64> {
        let last = self.last.load(Ordering::Relaxed);
        if now_s + 1 > last
            && self
                .last
                .compare_exchange(last, now_s + 1, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            return Some(self.skipped.swap(0, Ordering::Relaxed));
        }
        self.skipped.fetch_add(1, Ordering::Relaxed);
        None
    }
}

impl Default for LogLimit {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_a_second_and_the_rest_counted() {
        let r = LogLimit::new();
        assert_eq!(r.admit_at(0), Some(0));
        assert_eq!(r.admit_at(0), None);
        assert_eq!(r.admit_at(0), None);
        assert_eq!(r.admit_at(1), Some(2));
        assert_eq!(r.admit_at(1), None);
        assert_eq!(r.admit_at(5), Some(1));
    }
}
