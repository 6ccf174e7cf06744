//! Passive health: what live traffic says about a backend between probes. Consecutive
//! failures eject it for an exponentially growing, capped time, after which it is on
//! probation (one request at a time) until a success clears it. A fast "server busy"
//! 503 shrinks its effective capacity for a while, so a box that refuses work quickly
//! does not look idle and attract more of it.

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Milliseconds on a process-wide monotonic clock (0 = "never").
pub fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

#[derive(Debug, Default)]
pub struct PassiveHealth {
    consecutive_failures: AtomicU32,
    /// Ejections in a row without a success in between: the backoff exponent.
    ejections: AtomicU32,
    ejected_until: AtomicU64,
    busy_until: AtomicU64,
    busy_capacity: AtomicUsize,
}

/// What one failure did to a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureVerdict {
    /// Counted; not (yet) enough to eject.
    Counted,
    /// Ejected for this long.
    Ejected(Duration),
    /// Enough to eject, but too many of its peers are out already.
    Capped,
}

/// Limits for ejection, from the config.
#[derive(Debug, Clone, Copy)]
pub struct EjectPolicy {
    pub after_failures: u32,
    pub base: Duration,
    pub max: Duration,
}

impl PassiveHealth {
    pub fn is_ejected(&self) -> bool {
        // Read the clock only for a backend ejected at some point: routing asks this
        // of every candidate on every request.
        let until = self.ejected_until.load(Ordering::Relaxed);
        until != 0 && now_ms() < until
    }

    /// Ejected before and not yet proven good again.
    pub fn on_probation(&self) -> bool {
        self.ejections.load(Ordering::Relaxed) > 0 && !self.is_ejected()
    }

    /// The capacity routing should assume, given the configured one.
    pub fn effective_capacity(&self, configured: usize) -> usize {
        if self.on_probation() {
            return 1;
        }
        if now_ms() < self.busy_until.load(Ordering::Relaxed) {
            return configured.min(self.busy_capacity.load(Ordering::Relaxed));
        }
        configured
    }

    pub fn record_success(&self) {
        self.consecutive_failures.store(0, Ordering::Relaxed);
        self.ejections.store(0, Ordering::Relaxed);
    }

    /// Counts a failure. When that makes too many in a row, the backend is ejected if
    /// `may_eject` allows (the fleet-wide cap); otherwise it stays in, and the next
    /// failure asks again.
    pub fn record_failure(
        &self,
        policy: EjectPolicy,
        may_eject: impl FnOnce() -> bool,
    ) -> FailureVerdict {
        let n = self.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
        // On probation a single failure is enough.
        if n < policy.after_failures && !self.on_probation() {
            return FailureVerdict::Counted;
        }
        if self.is_ejected() {
            return FailureVerdict::Counted;
        }
        if !may_eject() {
            return FailureVerdict::Capped;
        }
        self.consecutive_failures.store(0, Ordering::Relaxed);
        let k = self.ejections.fetch_add(1, Ordering::Relaxed).min(16);
        let backoff = policy.base.saturating_mul(1 << k).min(policy.max);
        self.ejected_until
            .store(now_ms() + backoff.as_millis() as u64, Ordering::Relaxed);
        FailureVerdict::Ejected(backoff)
    }

    /// The backend refused work while `in_flight` requests (including the refused one)
    /// were out: assume it holds one fewer than that for `period` — none at all when
    /// it refused its only request, so it gets nothing while others have room.
    pub fn record_busy(&self, in_flight: usize, period: Duration) {
        self.busy_capacity
            .store(in_flight.saturating_sub(1), Ordering::Relaxed);
        self.busy_until
            .store(now_ms() + period.as_millis() as u64, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: EjectPolicy = EjectPolicy {
        after_failures: 3,
        base: Duration::from_secs(60),
        max: Duration::from_secs(200),
    };

    #[test]
    fn ejects_after_consecutive_failures_with_capped_backoff() {
        let p = PassiveHealth::default();
        let fail = || p.record_failure(POLICY, || true);
        assert_eq!(fail(), FailureVerdict::Counted);
        p.record_success();
        assert_eq!(fail(), FailureVerdict::Counted);
        assert_eq!(fail(), FailureVerdict::Counted);
        assert_eq!(fail(), FailureVerdict::Ejected(Duration::from_secs(60)));
        assert!(p.is_ejected());
        // Still failing after the ejection: backoff doubles, then hits the cap.
        p.ejected_until.store(0, Ordering::Relaxed);
        assert!(p.on_probation());
        assert_eq!(p.effective_capacity(4), 1);
        assert_eq!(fail(), FailureVerdict::Ejected(Duration::from_secs(120)));
        p.ejected_until.store(0, Ordering::Relaxed);
        assert_eq!(fail(), FailureVerdict::Ejected(Duration::from_secs(200)));
        // A success on probation restores it fully.
        p.ejected_until.store(0, Ordering::Relaxed);
        p.record_success();
        assert!(!p.on_probation());
        assert_eq!(p.effective_capacity(4), 4);
    }

    #[test]
    fn a_capped_ejection_leaves_the_backend_in_and_asks_again() {
        let p = PassiveHealth::default();
        for _ in 0..2 {
            assert_eq!(p.record_failure(POLICY, || false), FailureVerdict::Counted);
        }
        assert_eq!(p.record_failure(POLICY, || false), FailureVerdict::Capped);
        assert!(!p.is_ejected());
        assert_eq!(p.record_failure(POLICY, || false), FailureVerdict::Capped);
        assert_eq!(
            p.record_failure(POLICY, || true),
            FailureVerdict::Ejected(Duration::from_secs(60))
        );
    }

    #[test]
    fn busy_shrinks_capacity_for_a_while() {
        let p = PassiveHealth::default();
        p.record_busy(3, Duration::from_secs(60));
        assert_eq!(p.effective_capacity(4), 2);
        p.record_busy(1, Duration::from_secs(60));
        assert_eq!(p.effective_capacity(4), 0);
        p.busy_until.store(0, Ordering::Relaxed);
        assert_eq!(p.effective_capacity(4), 4);
    }
}
