//! Counters a test or benchmark reads from `GET /sim/stats` to see what reached this box:
//! which requests arrived, how each one ended (a client disconnect is `cancelled`), and
//! what the scheduler did (loads, evictions, prompt-cache hits).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use axum::extract::State;
use axum::response::Response;
use serde::{Deserialize, Serialize};

use super::state::SimState;

#[derive(Default)]
pub(super) struct Stats {
    requests: AtomicU64,
    active: AtomicU64,
    completed: AtomicU64,
    cancelled: AtomicU64,
    failed: AtomicU64,
    loads: AtomicU64,
    evictions: AtomicU64,
    unloads: AtomicU64,
    prompt_tokens_cached: AtomicU64,
    prompt_tokens_evaluated: AtomicU64,
    tokens_generated: AtomicU64,
    by_model: Mutex<BTreeMap<String, ModelCounters>>,
    last_host: Mutex<Option<String>>,
    with_authorization: AtomicU64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelCounters {
    pub requests: u64,
    pub completed: u64,
    pub cancelled: u64,
    pub failed: u64,
}

/// The `/sim/stats` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsSnapshot {
    pub requests: u64,
    pub active: u64,
    pub completed: u64,
    pub cancelled: u64,
    pub failed: u64,
    pub loads: u64,
    pub evictions: u64,
    pub unloads: u64,
    pub prompt_tokens_cached: u64,
    pub prompt_tokens_evaluated: u64,
    pub tokens_generated: u64,
    pub by_model: BTreeMap<String, ModelCounters>,
    /// `Host` header of the latest non-`/sim` request (`null` before the first).
    pub last_host: Option<String>,
    /// Non-`/sim` requests that carried an `Authorization` header (a proxy in front
    /// should not pass its clients' keys on).
    #[serde(default)]
    pub with_authorization: u64,
}

fn bump(counter: &AtomicU64, by: u64) {
    counter.fetch_add(by, Ordering::Relaxed);
}

impl Stats {
    pub(super) fn snapshot(&self) -> StatsSnapshot {
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        StatsSnapshot {
            requests: read(&self.requests),
            active: read(&self.active),
            completed: read(&self.completed),
            cancelled: read(&self.cancelled),
            failed: read(&self.failed),
            loads: read(&self.loads),
            evictions: read(&self.evictions),
            unloads: read(&self.unloads),
            prompt_tokens_cached: read(&self.prompt_tokens_cached),
            prompt_tokens_evaluated: read(&self.prompt_tokens_evaluated),
            tokens_generated: read(&self.tokens_generated),
            by_model: self.by_model().clone(),
            last_host: self
                .last_host
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
            with_authorization: read(&self.with_authorization),
        }
    }

    fn by_model(&self) -> MutexGuard<'_, BTreeMap<String, ModelCounters>> {
        self.by_model.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn record_host(&self, host: &str) {
        *self
            .last_host
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(host.to_string());
    }

    pub(super) fn record_authorization(&self) {
        bump(&self.with_authorization, 1);
    }

    pub(super) fn record_load(&self) {
        bump(&self.loads, 1);
    }

    pub(super) fn record_eviction(&self) {
        bump(&self.evictions, 1);
    }

    pub(super) fn record_unloads(&self, count: usize) {
        bump(&self.unloads, count as u64);
    }

    pub(super) fn record_prompt(&self, cached: usize, evaluated: usize) {
        bump(&self.prompt_tokens_cached, cached as u64);
        bump(&self.prompt_tokens_evaluated, evaluated as u64);
    }

    pub(super) fn record_generated_token(&self) {
        bump(&self.tokens_generated, 1);
    }

    /// Starts tracking one model request; see [`RequestTracker`].
    pub(super) fn track(self: &Arc<Self>) -> RequestTracker {
        bump(&self.requests, 1);
        bump(&self.active, 1);
        RequestTracker(Arc::new(TrackedRequest {
            stats: Arc::clone(self),
            model: Mutex::new(None),
            outcome: AtomicU8::new(PENDING),
        }))
    }
}

const PENDING: u8 = 0;
const COMPLETED: u8 = 1;
const FAILED: u8 = 2;
const CANCELLED: u8 = 3;

/// One model request in flight. Clones share the request; whichever of
/// `complete`/`fail` comes first decides the outcome, and a request dropped with no
/// outcome (the handler future or the body stream went away because the client hung
/// up) counts as cancelled.
#[derive(Clone)]
pub(super) struct RequestTracker(Arc<TrackedRequest>);

struct TrackedRequest {
    stats: Arc<Stats>,
    model: Mutex<Option<String>>,
    outcome: AtomicU8,
}

impl RequestTracker {
    pub(super) fn set_model(&self, model: &str) {
        let inner = &self.0;
        *inner.model.lock().unwrap_or_else(PoisonError::into_inner) = Some(model.to_string());
        inner
            .stats
            .by_model()
            .entry(model.to_string())
            .or_default()
            .requests += 1;
    }

    pub(super) fn complete(&self) {
        self.0.settle(COMPLETED);
    }

    pub(super) fn fail(&self) {
        self.0.settle(FAILED);
    }
}

impl TrackedRequest {
    /// Counts the outcome at the moment it happens (not when the last clone drops), so a
    /// client that has just read the final chunk already sees `completed` move.
    fn settle(&self, outcome: u8) {
        if self
            .outcome
            .compare_exchange(PENDING, outcome, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return;
        }
        let stats = &self.stats;
        stats.active.fetch_sub(1, Ordering::Relaxed);
        let counter = match outcome {
            COMPLETED => &stats.completed,
            FAILED => &stats.failed,
            _ => &stats.cancelled,
        };
        bump(counter, 1);
        let model = self
            .model
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if let Some(model) = model {
            let mut by_model = stats.by_model();
            let counters = by_model.entry(model).or_default();
            match outcome {
                COMPLETED => counters.completed += 1,
                FAILED => counters.failed += 1,
                _ => counters.cancelled += 1,
            }
        }
    }
}

impl Drop for TrackedRequest {
    fn drop(&mut self) {
        self.settle(CANCELLED);
    }
}

pub(super) async fn report(State(sim): State<Arc<SimState>>) -> Response {
    sim.config.json_style.ok(&sim.stats.snapshot())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcome_is_counted_once_and_drop_means_cancelled() {
        let stats = Arc::new(Stats::default());
        let done = stats.track();
        done.set_model("m:latest");
        done.complete();
        done.fail();
        drop(done);
        let abandoned = stats.track();
        let clone = abandoned.clone();
        drop(abandoned);
        assert_eq!(stats.snapshot().active, 1);
        drop(clone);
        let snapshot = stats.snapshot();
        assert_eq!(
            (snapshot.requests, snapshot.active, snapshot.completed),
            (2, 0, 1)
        );
        assert_eq!((snapshot.failed, snapshot.cancelled), (0, 1));
        assert_eq!(snapshot.by_model["m:latest"].completed, 1);
    }
}
