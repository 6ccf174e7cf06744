//! Live state of one backend: in-flight count, health and what it holds. Kept in an
//! `Arc` keyed by backend name so that a config reload never resets it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use arc_swap::{ArcSwap, ArcSwapOption};

use crate::model::{ModelName, ModelSet};

use super::passive::PassiveHealth;
use super::residency::Residency;

/// What the last successful probe saw on a backend.
#[derive(Debug, Default, Clone)]
pub struct Inventory {
    pub version: Option<String>,
    /// Models on disk (`/api/tags`), normalized.
    pub models: ModelSet,
    /// Models loaded in memory (`/api/ps`), normalized. Routing reads the
    /// `Residency` belief instead, which this only seeds.
    pub resident: ModelSet,
    /// The raw `/api/tags` entries, for the merged fleet listing.
    pub tags_json: Vec<serde_json::Value>,
    /// The raw `/api/ps` entries, for the merged fleet listing.
    pub ps_json: Vec<serde_json::Value>,
}

#[derive(Debug)]
pub struct BackendState {
    pub name: String,
    in_flight: AtomicUsize,
    requests: AtomicU64,
    /// False until the first probe answers: a backend gets no traffic unprobed.
    healthy: AtomicBool,
    probed: AtomicBool,
    consecutive_ok: AtomicU32,
    consecutive_fail: AtomicU32,
    /// Change it through `apply_inventory`, which tells routing's index.
    pub inventory: ArcSwap<Inventory>,
    /// Which models are loaded, kept true between probes.
    pub residency: Residency,
    /// When the probe behind `inventory` was sent (`now_ms`).
    inventory_sent: AtomicU64,
    /// Resolved socket address; probes refresh it so DNS changes are followed.
    pub addr: ArcSwapOption<SocketAddr>,
    pub last_error: ArcSwapOption<String>,
    pub passive: PassiveHealth,
    /// Smoothed cold-load time (ms) seen in responses' `load_duration`; 0 = unknown.
    load_ms: AtomicU64,
    /// Smoothed time (ms) a request holds a slot; 0 = unknown.
    service_ms: AtomicU64,
    /// Drained by an operator: takes no new requests, finishes what it has.
    draining: AtomicBool,
    /// An answer in an unexpected shape was logged once already.
    warned_unexpected: AtomicBool,
}

/// Outcome of feeding one probe result through the hysteresis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthChange {
    Unchanged,
    BecameHealthy,
    BecameUnhealthy,
}

impl BackendState {
    pub fn new(name: &str) -> BackendState {
        BackendState {
            name: name.to_string(),
            in_flight: AtomicUsize::new(0),
            requests: AtomicU64::new(0),
            healthy: AtomicBool::new(false),
            probed: AtomicBool::new(false),
            consecutive_ok: AtomicU32::new(0),
            consecutive_fail: AtomicU32::new(0),
            inventory: ArcSwap::from_pointee(Inventory::default()),
            residency: Residency::default(),
            inventory_sent: AtomicU64::new(0),
            addr: ArcSwapOption::empty(),
            last_error: ArcSwapOption::empty(),
            passive: PassiveHealth::default(),
            load_ms: AtomicU64::new(0),
            service_ms: AtomicU64::new(0),
            draining: AtomicBool::new(false),
            warned_unexpected: AtomicBool::new(false),
        }
    }

    /// Probed healthy, not ejected by live traffic and not draining.
    pub fn is_routable(&self) -> bool {
        self.is_healthy() && !self.passive.is_ejected() && !self.is_draining()
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    pub fn set_draining(&self, on: bool) {
        self.draining.store(on, Ordering::Relaxed);
    }

    /// Whether an unexpected answer from this backend was logged before (and marks it
    /// logged now): one warning per backend, the metric counts the rest.
    pub fn warned_unexpected(&self) -> bool {
        self.warned_unexpected.swap(true, Ordering::Relaxed)
    }

    pub fn load_ms(&self) -> u64 {
        self.load_ms.load(Ordering::Relaxed)
    }

    pub fn service_ms(&self) -> u64 {
        self.service_ms.load(Ordering::Relaxed)
    }

    pub fn observe_load(&self, ms: u64) {
        ewma(&self.load_ms, ms);
    }

    pub fn observe_service(&self, ms: u64) {
        ewma(&self.service_ms, ms);
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    pub fn was_probed(&self) -> bool {
        self.probed.load(Ordering::Relaxed)
    }

    pub fn has_model(&self, model: &ModelName) -> bool {
        self.inventory.load().models.contains(model)
    }

    pub fn has_resident(&self, model: &ModelName) -> bool {
        self.residency.contains(model)
    }

    /// Stores what a probe sent at `sent` (on `now_ms`'s clock) found — unless a probe
    /// sent later was applied already: a slow periodic probe must not undo the fresher
    /// re-probe a fleet operation made before answering.
    pub fn apply_inventory(&self, inventory: Inventory, sent: u64) {
        if self.inventory_sent.fetch_max(sent, Ordering::Relaxed) > sent {
            return;
        }
        let resident: Vec<ModelName> = inventory.resident.iter().cloned().collect();
        let listed_changed = self.inventory.load().models != inventory.models;
        self.inventory.store(Arc::new(inventory));
        if listed_changed {
            super::index::inventory_changed();
        }
        self.residency.apply_probe(&resident, sent);
    }

    /// Applies one probe result with hysteresis: `rise` successes in a row to come back,
    /// `fall` failures in a row to go out. The very first success counts at once so a
    /// new backend is usable after one probe.
    pub fn record_probe(&self, ok: bool, rise: u32, fall: u32) -> HealthChange {
        let first = !self.probed.swap(true, Ordering::Relaxed);
        let healthy = self.healthy.load(Ordering::Relaxed);
        if ok {
            self.consecutive_fail.store(0, Ordering::Relaxed);
            let n = self.consecutive_ok.fetch_add(1, Ordering::Relaxed) + 1;
            if !healthy && (first || n >= rise) {
                self.healthy.store(true, Ordering::Relaxed);
                return HealthChange::BecameHealthy;
            }
        } else {
            self.consecutive_ok.store(0, Ordering::Relaxed);
            let n = self.consecutive_fail.fetch_add(1, Ordering::Relaxed) + 1;
            if healthy && n >= fall {
                self.healthy.store(false, Ordering::Relaxed);
                return HealthChange::BecameUnhealthy;
            }
        }
        HealthChange::Unchanged
    }

    /// Takes the backend out at once (routing tests start from a failed probe).
    #[cfg(test)]
    pub(crate) fn mark_down(&self) {
        self.probed.store(true, Ordering::Relaxed);
        self.healthy.store(false, Ordering::Relaxed);
        self.consecutive_ok.store(0, Ordering::Relaxed);
    }
}

/// Exponentially weighted moving average (weight 1/4 on the new sample); racy updates
/// only lose a sample.
fn ewma(cell: &AtomicU64, sample: u64) {
    let old = cell.load(Ordering::Relaxed);
    let new = if old == 0 {
        sample
    } else {
        (old * 3 + sample) / 4
    };
    cell.store(new.max(1), Ordering::Relaxed);
}

/// Told when a backend slot frees, so a queued request can take it.
pub trait SlotWatcher: Send + Sync {
    fn slot_freed(&self, backend: &BackendState);
}

/// One request counted against a backend; released on drop, so every path out of a
/// request (success, upstream error, retry elsewhere, client abort) gives it back.
pub struct InFlight {
    state: Arc<BackendState>,
    watcher: Option<Arc<dyn SlotWatcher>>,
}

impl InFlight {
    pub fn acquire(state: &Arc<BackendState>, watcher: Option<Arc<dyn SlotWatcher>>) -> InFlight {
        state.in_flight.fetch_add(1, Ordering::Relaxed);
        state.requests.fetch_add(1, Ordering::Relaxed);
        InFlight {
            state: state.clone(),
            watcher,
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.state.in_flight.fetch_sub(1, Ordering::Relaxed);
        if let Some(w) = &self.watcher {
            w.slot_freed(&self.state);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hysteresis() {
        let s = BackendState::new("a");
        assert!(!s.is_healthy());
        assert_eq!(s.record_probe(true, 2, 2), HealthChange::BecameHealthy);
        assert_eq!(s.record_probe(false, 2, 2), HealthChange::Unchanged);
        assert!(s.is_healthy());
        assert_eq!(s.record_probe(false, 2, 2), HealthChange::BecameUnhealthy);
        assert_eq!(s.record_probe(true, 2, 2), HealthChange::Unchanged);
        assert!(!s.is_healthy());
        assert_eq!(s.record_probe(true, 2, 2), HealthChange::BecameHealthy);
    }

    #[test]
    fn in_flight_released_on_drop() {
        let s = Arc::new(BackendState::new("a"));
        let a = InFlight::acquire(&s, None);
        let b = InFlight::acquire(&s, None);
        assert_eq!(s.in_flight(), 2);
        drop(a);
        drop(b);
        assert_eq!(s.in_flight(), 0);
        assert_eq!(s.requests(), 2);
    }
}
