//! Where models live: whether a request should start a model load on another box, and
//! which box's eviction costs least. A load is priced by what it saves (the wait for a
//! box that already holds the model) against what it costs the model it evicts (that
//! model's demand, and the slots its other replicas keep). Hysteresis keeps two models
//! from trading a box back and forth: a model gains a box only when its demand exceeds
//! its slots by `MARGIN`, and a victim gives one up only when what remains covers its
//! own demand by the same margin — so the swap back is never also justified.

use crate::model::ModelName;
use crate::pool::{Backend, RoutingTable};

use super::candidates::Candidate;
use super::demand::{DemandTable, IDLE};

/// The hysteresis margin, as a share of demand.
pub(super) const MARGIN: f64 = 0.25;

/// Assumed cold-load time before any load has been observed.
pub(super) const DEFAULT_LOAD_MS: u64 = 5_000;

/// What loading a model on one box would cost the fleet, cheapest first.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
pub enum EvictionCost {
    /// The box has room: nothing is evicted.
    Free,
    /// The victim's other boxes cover its demand with margin.
    Spare,
    /// The victim needs this box: its demand exceeds what remains by this many slots.
    Needed(f64),
    /// Every resident model is serving: Ollama would wait before it could load.
    Blocked,
}

impl EvictionCost {
    /// Acceptable for a load that is optional (the model already has a box).
    pub fn is_cheap(self) -> bool {
        matches!(self, EvictionCost::Free | EvictionCost::Spare)
    }
}

/// Slots of the routable boxes believed to hold `model`.
pub(super) fn resident_slots(table: &RoutingTable, model: &ModelName) -> usize {
    resident_slots_upto(table, model, usize::MAX)
}

/// `resident_slots`, but counting stops once the sum reaches `enough`: a caller that
/// only compares it with `enough` gets the same answer without visiting every box
/// that holds a popular model in a large fleet.
fn resident_slots_upto(table: &RoutingTable, model: &ModelName, enough: usize) -> usize {
    let index = table.index();
    let Some(entry) = index.model(model) else {
        return 0;
    };
    let current = index.is_current();
    let mut sum = 0usize;
    for &i in &entry.held {
        let b = &table.backends[i as usize];
        // A stale index (large fleets, between rebuilds) may miss a box that loaded
        // the model since: counting too few slots only protects the model more.
        if b.is_available() && (current || b.state.has_resident(model)) {
            sum += b.capacity();
            if sum >= enough {
                break;
            }
        }
    }
    sum
}

/// What loading a model on `backend` would cost the model it evicts.
pub fn eviction_cost(
    table: &RoutingTable,
    demand: &DemandTable,
    backend: &Backend,
) -> EvictionCost {
    let residency = &backend.state.residency;
    if !residency.is_full() {
        return EvictionCost::Free;
    }
    let Some(victim) = residency.victim() else {
        return EvictionCost::Blocked;
    };
    let wanted = demand.get(&victim.model).slots();
    if wanted < IDLE {
        return EvictionCost::Spare;
    }
    // Spare for certain once the slots reach this: no need to count the rest.
    let enough = ((wanted * (1.0 + MARGIN)).ceil() as usize).saturating_add(backend.capacity());
    let remaining =
        resident_slots_upto(table, &victim.model, enough).saturating_sub(backend.capacity());
    let shortfall = wanted * (1.0 + MARGIN) - remaining as f64;
    if shortfall <= 0.0 {
        EvictionCost::Spare
    } else {
        EvictionCost::Needed(shortfall)
    }
}

/// Whether a model whose boxes are all full deserves one more: its demand (this
/// request and those queued behind it included) exceeds its slots by the margin.
pub(super) fn wants_another_box(demanded: f64, slots: usize) -> bool {
    demanded > slots as f64 * (1.0 + MARGIN)
}

/// Whether loading the model on a free cold box beats waiting for a resident one: the
/// expected wait is the queue ahead (plus this request) served by the resident boxes'
/// slots (`slots`, theirs in all) at their observed pace.
pub(super) fn load_beats_waiting(
    found: &[Candidate],
    resident: &[usize],
    cold: &[usize],
    waiting: usize,
    slots: usize,
) -> bool {
    let slots = slots.max(1);
    let Some(service_ms) = average(
        resident
            .iter()
            .map(|&i| found[i].backend.state.service_ms()),
    ) else {
        // Never observed a request finishing: no basis to expect a short wait.
        return true;
    };
    let wait_ms = (waiting as u64 + 1) * service_ms / slots as u64;
    let load =
        average(cold.iter().map(|&i| found[i].backend.state.load_ms())).unwrap_or(DEFAULT_LOAD_MS);
    wait_ms > load
}

/// Mean of the known (non-zero) values.
fn average(values: impl Iterator<Item = u64>) -> Option<u64> {
    let (sum, n) = values
        .filter(|&v| v > 0)
        .fold((0u64, 0u64), |(s, n), v| (s + v, n + 1));
    (n > 0).then(|| sum / n)
}

/// Requests for `model` out on the candidates now.
pub(super) fn in_flight_for(found: &[Candidate], model: &ModelName) -> usize {
    found
        .iter()
        .flat_map(|c| c.backend.state.residency.models())
        .filter(|r| &r.model == model)
        .map(|r| r.in_flight())
        .sum()
}
