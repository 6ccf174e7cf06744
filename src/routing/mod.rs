//! Where a request goes. `Router::pick_backend` is a pure function of the routing
//! table, the request and the backends' live load: it never blocks and takes no lock,
//! and two replicas with the same pool and loads choose the same box for a key.
//!
//! The default strategy, `affinity`, in order of preference:
//! 1. a backend with the model already loaded (resident) and a free slot — among
//!    those, the conversation's home box by consistent hashing with bounded loads;
//! 2. a cold backend (one that would have to load the model) with a free slot: at
//!    once when no box holds the model; otherwise only when the model's demand
//!    exceeds its boxes' slots, the wait for them would cost more than a load, and the
//!    model the load evicts can spare the box (`placement`). Among cold boxes, the
//!    cheapest eviction first, then idle boxes, so a busy box's model is never
//!    evicted while an idle box has room;
//! 3. otherwise "full": the request waits in the admission queue.
//!
//! `least_loaded` and `round_robin` are simpler baselines.
//!
//! Candidates come from the table's per-model index, never from a scan of the fleet.
//! Up to `sample::SMALL_SET` of them (every fleet the product targets) all are looked
//! at; above that a strategy chooses within a bounded sample (`sample`).

mod affinity;
mod candidates;
mod demand;
mod placement;
mod prewarm;
mod queue;
mod sample;

pub use affinity::{bounded_pick, rendezvous_order};
pub use candidates::{candidates, Candidate, Found, NoRoute};
pub use demand::{Demand, DemandTable};
pub use placement::{eviction_cost, EvictionCost};
pub use prewarm::Prewarm;
pub use queue::{AdmissionQueue, QueueError, Turn, BATCH_AGING};

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::config::Strategy;
use crate::model::ModelName;
use crate::pool::{Backend, RoutingTable};

use placement::{in_flight_for, load_beats_waiting, wants_another_box};

/// What a request needs from a backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Need {
    /// A backend that has this model on disk (inference, show, push).
    Model(ModelName),
    /// A backend that does not have this model yet (`/api/pull`).
    Lacking(ModelName),
    /// Exactly this backend (`X-Corral-Target`).
    Named(String),
    /// Any healthy backend.
    Any,
    /// Blob uploads and the `/api/create` that uses them must land on the same box: a
    /// stable choice among healthy backends.
    Pinned,
}

/// A request as routing sees it.
#[derive(Debug, Clone)]
pub struct RouteRequest {
    pub need: Need,
    /// The conversation key (explicit session header or derived from the body).
    pub key: Option<u64>,
    /// Requests for the same model already waiting in the queue.
    pub waiting: usize,
}

impl RouteRequest {
    pub fn new(need: Need) -> RouteRequest {
        RouteRequest {
            need,
            key: None,
            waiting: 0,
        }
    }

    fn model(&self) -> Option<&ModelName> {
        match &self.need {
            Need::Model(m) => Some(m),
            _ => None,
        }
    }
}

/// Why a backend was chosen; sent back as `X-Corral-Route`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteReason {
    /// The conversation's home box.
    Affinity,
    /// The home box was over its load bound; the next in the key's order.
    Spill,
    /// No conversation key: the least loaded box with the model loaded.
    Resident,
    /// The model has to be loaded on this box.
    Cold,
    LeastLoaded,
    RoundRobin,
    Pinned,
    Targeted,
}

impl RouteReason {
    pub fn as_str(self) -> &'static str {
        match self {
            RouteReason::Affinity => "affinity",
            RouteReason::Spill => "spill",
            RouteReason::Resident => "resident",
            RouteReason::Cold => "cold",
            RouteReason::LeastLoaded => "least_loaded",
            RouteReason::RoundRobin => "round_robin",
            RouteReason::Pinned => "pinned",
            RouteReason::Targeted => "targeted",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Pick {
    pub backend: Arc<Backend>,
    pub reason: RouteReason,
    /// Chosen among ejected backends because every candidate was ejected.
    pub panic: bool,
}

/// Per-process routing state that must persist across requests: the rotation that
/// makes ties and round-robin fair, and what each model is in demand.
#[derive(Debug, Default)]
pub struct Router {
    rotation: AtomicUsize,
    demand: Arc<DemandTable>,
}

impl Router {
    pub fn new(demand: Arc<DemandTable>) -> Router {
        Router {
            rotation: AtomicUsize::new(0),
            demand,
        }
    }

    pub fn demand(&self) -> &Arc<DemandTable> {
        &self.demand
    }

    /// Chooses a backend, skipping the names in `tried` (backends this request already
    /// failed to reach). `Err(NoRoute::Full)` means: wait for a slot.
    pub fn pick_backend(
        &self,
        table: &RoutingTable,
        req: &RouteRequest,
        tried: &[String],
    ) -> Result<Pick, NoRoute> {
        if let Some(pick) = self.pick_large(table, req, tried) {
            return pick;
        }
        let Found { list: found, panic } = candidates(table, &req.need, tried)?;
        match &req.need {
            Need::Pinned => {
                // Lowest name among healthy backends: stable while the healthy set is.
                let c = found
                    .iter()
                    .min_by(|a, b| a.name().cmp(b.name()))
                    .ok_or(NoRoute::NoHealthy)?;
                return Ok(pick(c, RouteReason::Pinned, panic));
            }
            Need::Named(_) => return Ok(pick(&found[0], RouteReason::Targeted, panic)),
            _ => {}
        }
        let turn = self.rotation.fetch_add(1, Ordering::Relaxed);
        self.decide(table, &found, panic, req, turn, 1.0)
    }

    /// The strategy's choice among `found`. `scale`: how many candidates each one in
    /// `found` stands for (1 unless `found` is a sample of a large set).
    fn decide(
        &self,
        table: &RoutingTable,
        found: &[Candidate],
        panic: bool,
        req: &RouteRequest,
        turn: usize,
        scale: f64,
    ) -> Result<Pick, NoRoute> {
        let routing = &table.config.routing;
        let queueing = routing.queue_size > 0;
        match routing.strategy {
            Strategy::RoundRobin => Ok(pick(
                round_robin(found, turn),
                RouteReason::RoundRobin,
                panic,
            )),
            Strategy::LeastLoaded => {
                let c = least_loaded(found, turn);
                if queueing && !c.has_free_slot() {
                    return Err(NoRoute::Full);
                }
                Ok(pick(c, RouteReason::LeastLoaded, panic))
            }
            Strategy::Affinity => match self.affinity_pick(table, found, req, turn, scale) {
                Some((i, reason)) => Ok(pick(&found[i], reason, panic)),
                None if queueing => Err(NoRoute::Full),
                // No queue: let the least loaded box's own queue take it.
                None => Ok(pick(
                    least_loaded(found, turn),
                    RouteReason::LeastLoaded,
                    panic,
                )),
            },
        }
    }
}

fn pick(c: &Candidate, reason: RouteReason, panic: bool) -> Pick {
    Pick {
        backend: c.backend.clone(),
        reason,
        panic,
    }
}

impl Router {
    /// The affinity strategy over one consistent view of the candidates; `None` = full.
    fn affinity_pick(
        &self,
        table: &RoutingTable,
        found: &[Candidate],
        req: &RouteRequest,
        turn: usize,
        scale: f64,
    ) -> Option<(usize, RouteReason)> {
        let bound = table.config.routing.bound;
        let Some(model) = req.model() else {
            // Nothing to be resident or affine to: least loaded with a free slot.
            let all: Vec<usize> = (0..found.len()).collect();
            return choose(found, &all, None, bound, turn, RouteReason::LeastLoaded);
        };
        let resident: Vec<usize> = (0..found.len()).filter(|&i| found[i].resident).collect();
        if resident.iter().any(|&i| found[i].has_free_slot()) {
            return choose(
                found,
                &resident,
                req.key,
                bound,
                turn,
                RouteReason::Resident,
            );
        }
        let cold: Vec<usize> = (0..found.len())
            .filter(|&i| !found[i].resident && found[i].has_free_slot())
            .collect();
        if cold.is_empty() {
            return None;
        }
        let costs: Vec<EvictionCost> = cold
            .iter()
            .map(|&i| eviction_cost(table, &self.demand, found[i].backend))
            .collect();
        // With no box holding the model a load is unavoidable; otherwise it must pay.
        let optional = !resident.is_empty();
        if optional {
            // For a sample, the fleet's figures are estimated from it (see `sample`).
            let slots = scaled(resident.iter().map(|&i| found[i].capacity).sum(), scale);
            let in_flight = scaled(in_flight_for(found, model), scale);
            let demanded = self
                .demand
                .get(model)
                .slots()
                .max((in_flight + req.waiting + 1) as f64);
            if !wants_another_box(demanded, slots)
                || !load_beats_waiting(found, &resident, &cold, req.waiting, slots)
            {
                return None;
            }
        }
        let best = costs
            .iter()
            .copied()
            .filter(|c| !optional || c.is_cheap())
            .min_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal))?;
        let cheapest: Vec<usize> = cold
            .iter()
            .zip(&costs)
            .filter(|(_, c)| **c == best)
            .map(|(&i, _)| i)
            .collect();
        // Prefer boxes with nothing in flight: a load there delays nobody.
        let idle: Vec<usize> = cheapest
            .iter()
            .copied()
            .filter(|&i| found[i].in_flight == 0)
            .collect();
        let pool = if idle.is_empty() { cheapest } else { idle };
        choose(found, &pool, req.key, bound, turn, RouteReason::Cold)
            .map(|(i, _)| (i, RouteReason::Cold))
    }
}

/// `n` counted over a sample, extrapolated to the set it was drawn from.
fn scaled(n: usize, scale: f64) -> usize {
    if scale == 1.0 {
        n
    } else {
        (n as f64 * scale).round() as usize
    }
}

/// Within `pool` (indices into `found`): the key's bounded-load choice, or the least
/// loaded box when there is no key.
fn choose(
    found: &[Candidate],
    pool: &[usize],
    key: Option<u64>,
    bound: f64,
    turn: usize,
    keyless: RouteReason,
) -> Option<(usize, RouteReason)> {
    let sub: Vec<Candidate> = pool.iter().map(|&i| found[i].clone()).collect();
    match key {
        Some(key) => {
            if let Some((j, home)) = bounded_pick(key, &sub, bound) {
                let reason = if home {
                    RouteReason::Affinity
                } else {
                    RouteReason::Spill
                };
                return Some((pool[j], reason));
            }
            // Every box is over its bound but some still have a free slot.
            let c = least_loaded(&sub, turn);
            let j = sub.iter().position(|s| Arc::ptr_eq(s.backend, c.backend))?;
            c.has_free_slot().then_some((pool[j], RouteReason::Spill))
        }
        None => {
            let c = least_loaded(&sub, turn);
            let j = sub.iter().position(|s| Arc::ptr_eq(s.backend, c.backend))?;
            c.has_free_slot().then_some((pool[j], keyless))
        }
    }
}

/// The candidate with the lowest load / capacity, boxes with a free slot first.
/// Scanning starts at a rotating offset so equal loads are shared in turn instead of
/// all going to the first.
fn least_loaded<'c, 'a>(found: &'c [Candidate<'a>], turn: usize) -> &'c Candidate<'a> {
    let n = found.len();
    let mut best = &found[turn % n];
    for i in 1..n {
        let c = &found[(turn + i) % n];
        if emptier(c, best) {
            best = c;
        }
    }
    best
}

/// Whether `a` should be preferred to `b` by load. A zero capacity (a box that just
/// said "busy") is always the fullest.
fn emptier(a: &Candidate, b: &Candidate) -> bool {
    match (a.has_free_slot(), b.has_free_slot()) {
        (true, false) => return true,
        (false, true) => return false,
        _ => {}
    }
    match (a.capacity, b.capacity) {
        (0, _) => false,
        (_, 0) => true,
        // a/ca < b/cb  ⇔  a·cb < b·ca, without floats.
        (ca, cb) => a.in_flight * cb < b.in_flight * ca,
    }
}

/// Weighted round robin: each backend takes `weight` consecutive turns of the rotation.
fn round_robin<'c, 'a>(found: &'c [Candidate<'a>], turn: usize) -> &'c Candidate<'a> {
    let total: usize = found.iter().map(|c| c.backend.config.weight as usize).sum();
    let mut slot = turn % total.max(1);
    for c in found {
        let w = c.backend.config.weight as usize;
        if slot < w {
            return c;
        }
        slot -= w;
    }
    &found[0]
}

#[cfg(test)]
mod oracle;
#[cfg(test)]
mod placement_tests;
#[cfg(test)]
mod sample_tests;
#[cfg(test)]
mod tests;
