//! A key's limits at run time: a token bucket per rate (requests and tokens per
//! minute) and the count of its requests in flight. The buckets refill continuously;
//! the token bucket is debited after an answer by what its final chunk reported, so it
//! may go below zero, and refuses new requests until it has refilled above it.

use std::time::{Duration, Instant};

/// A bucket of `per_minute` capacity that refills at `per_minute / 60` a second.
#[derive(Debug, Clone)]
pub(super) struct Bucket {
    level: f64,
    at: Instant,
}

impl Bucket {
    /// A new key starts with a full minute's worth.
    pub(super) fn full(per_minute: u64, now: Instant) -> Bucket {
        Bucket {
            level: per_minute as f64,
            at: now,
        }
    }

    /// Refills for the time since the last look, up to `per_minute` (a reload that
    /// lowered the limit takes effect here).
    fn refill(&mut self, per_minute: u64, now: Instant) {
        let rate = per_minute as f64 / 60.0;
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.level = (self.level + elapsed * rate).min(per_minute as f64);
        self.at = now;
    }

    /// Takes one unit, or says how long until one is there.
    pub(super) fn take_one(&mut self, per_minute: u64, now: Instant) -> Result<(), Duration> {
        self.refill(per_minute, now);
        if self.level >= 1.0 {
            self.level -= 1.0;
            Ok(())
        } else {
            Err(wait_for(1.0 - self.level, per_minute))
        }
    }

    /// Whether anything is left (used before the cost is known), or how long until the
    /// bucket is above zero again.
    pub(super) fn check_positive(&mut self, per_minute: u64, now: Instant) -> Result<(), Duration> {
        self.refill(per_minute, now);
        if self.level > 0.0 {
            Ok(())
        } else {
            // Strictly above zero: a little more than the deficit.
            Err(wait_for(-self.level + 1e-6, per_minute))
        }
    }

    /// Takes `cost` after the fact; the level may go negative.
    pub(super) fn debit(&mut self, cost: u64, per_minute: u64, now: Instant) {
        self.refill(per_minute, now);
        self.level -= cost as f64;
    }

    /// What is left now, rounded down (negative while in debt).
    pub(super) fn remaining(&mut self, per_minute: u64, now: Instant) -> i64 {
        self.refill(per_minute, now);
        self.level.floor() as i64
    }
}

fn wait_for(units: f64, per_minute: u64) -> Duration {
    let rate = per_minute as f64 / 60.0;
    Duration::from_secs_f64((units / rate).max(0.0))
}

/// `Retry-After` in whole seconds: rounded up, at least 1.
pub fn retry_after_secs(wait: Duration) -> u64 {
    let ceil = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    ceil.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_bucket_refills_continuously() {
        let t0 = Instant::now();
        let mut b = Bucket::full(2, t0);
        assert!(b.take_one(2, t0).is_ok());
        assert!(b.take_one(2, t0).is_ok());
        let wait = b.take_one(2, t0).unwrap_err();
        assert_eq!(retry_after_secs(wait), 30, "2/min: one every 30 s");
        assert!(b.take_one(2, t0 + Duration::from_secs(30)).is_ok());
        // Never above capacity, however long it rested.
        assert_eq!(b.remaining(2, t0 + Duration::from_secs(3600)), 2);
    }

    #[test]
    fn token_bucket_goes_into_debt_and_refuses_until_repaid() {
        let t0 = Instant::now();
        let mut b = Bucket::full(600, t0);
        assert!(b.check_positive(600, t0).is_ok());
        b.debit(1200, 600, t0);
        assert_eq!(b.remaining(600, t0), -600);
        let wait = b.check_positive(600, t0).unwrap_err();
        assert_eq!(retry_after_secs(wait), 61, "600 tokens at 10/s, and a bit");
        assert!(b.check_positive(600, t0 + Duration::from_secs(61)).is_ok());
    }

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1001)), 2);
        assert_eq!(retry_after_secs(Duration::from_secs(3)), 3);
    }
}
