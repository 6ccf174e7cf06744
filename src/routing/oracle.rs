//! The routing algorithm as it was before the model index and sampling, kept verbatim
//! (less its doc comments) as a test oracle: for candidate sets up to `SMALL_SET` the
//! router must choose exactly what this chooses.

use std::sync::Arc;

use crate::model::ModelName;
use crate::pool::{Backend, RoutingTable};

use super::candidates::{Candidate, Found, NoRoute};
use super::demand::{DemandTable, IDLE};
use super::placement::{in_flight_for, wants_another_box, EvictionCost, DEFAULT_LOAD_MS, MARGIN};
use super::{choose, least_loaded, round_robin, Need, Pick, RouteReason, RouteRequest};
use crate::config::Strategy;

fn candidate<'a>(b: &'a Arc<Backend>, model: Option<&ModelName>) -> Candidate<'a> {
    Candidate {
        backend: b,
        in_flight: b.state.in_flight(),
        capacity: b.capacity(),
        resident: model.is_some_and(|m| b.state.has_resident(m)),
    }
}

fn candidates<'a>(
    table: &'a RoutingTable,
    need: &Need,
    tried: &[String],
) -> Result<Found<'a>, NoRoute> {
    match filter(table, need, tried, Backend::is_available) {
        Err(NoRoute::NoHealthy) => {
            let list = filter(table, need, tried, |b| {
                b.state.is_healthy() && !b.state.is_draining()
            })?;
            Ok(Found { list, panic: true })
        }
        other => other.map(|list| Found { list, panic: false }),
    }
}

fn filter<'a>(
    table: &'a RoutingTable,
    need: &Need,
    tried: &[String],
    usable: impl Fn(&Backend) -> bool,
) -> Result<Vec<Candidate<'a>>, NoRoute> {
    let untried = |b: &&Arc<Backend>| !tried.iter().any(|t| t == b.name());
    let routable = table.backends.iter().filter(|b| usable(b)).filter(untried);
    let found: Vec<Candidate> = match need {
        Need::Model(model) => {
            let found: Vec<_> = routable
                .filter(|b| b.state.has_model(model))
                .map(|b| candidate(b, Some(model)))
                .collect();
            if found.is_empty()
                && !table.backends.iter().any(|b| b.state.has_model(model))
                && table.backends.iter().any(|b| usable(b))
            {
                return Err(NoRoute::ModelNotFound(model.clone()));
            }
            found
        }
        Need::Lacking(model) => {
            let all: Vec<_> = routable.collect();
            let lacking: Vec<_> = all.iter().filter(|b| !b.state.has_model(model)).collect();
            let pool = if lacking.is_empty() {
                all.iter().collect()
            } else {
                lacking
            };
            pool.into_iter().map(|b| candidate(b, None)).collect()
        }
        Need::Named(name) => {
            let Some(b) = table.backends.iter().find(|b| b.name() == name) else {
                return Err(NoRoute::UnknownBackend(name.clone()));
            };
            routable
                .filter(|c| Arc::ptr_eq(c, b))
                .map(|b| candidate(b, None))
                .collect()
        }
        Need::Any | Need::Pinned => routable.map(|b| candidate(b, None)).collect(),
    };
    if found.is_empty() {
        return Err(NoRoute::NoHealthy);
    }
    Ok(found)
}

/// The old `Router::pick_backend`, with the rotation passed in.
pub(super) fn pick_backend(
    demand: &DemandTable,
    rotation: &mut usize,
    table: &RoutingTable,
    req: &RouteRequest,
    tried: &[String],
) -> Result<Pick, NoRoute> {
    let Found { list: found, panic } = candidates(table, &req.need, tried)?;
    let pick = |c: &Candidate, reason| Pick {
        backend: c.backend.clone(),
        reason,
        panic,
    };
    match &req.need {
        Need::Pinned => {
            let c = found
                .iter()
                .min_by(|a, b| a.name().cmp(b.name()))
                .ok_or(NoRoute::NoHealthy)?;
            return Ok(pick(c, RouteReason::Pinned));
        }
        Need::Named(_) => return Ok(pick(&found[0], RouteReason::Targeted)),
        _ => {}
    }
    let turn = *rotation;
    *rotation += 1;
    let routing = &table.config.routing;
    let queueing = routing.queue_size > 0;
    match routing.strategy {
        Strategy::RoundRobin => Ok(pick(round_robin(&found, turn), RouteReason::RoundRobin)),
        Strategy::LeastLoaded => {
            let c = least_loaded(&found, turn);
            if queueing && !c.has_free_slot() {
                return Err(NoRoute::Full);
            }
            Ok(pick(c, RouteReason::LeastLoaded))
        }
        Strategy::Affinity => match affinity_pick(demand, table, &found, req, turn) {
            Some((i, reason)) => Ok(pick(&found[i], reason)),
            None if queueing => Err(NoRoute::Full),
            None => Ok(pick(least_loaded(&found, turn), RouteReason::LeastLoaded)),
        },
    }
}

fn affinity_pick(
    demand: &DemandTable,
    table: &RoutingTable,
    found: &[Candidate],
    req: &RouteRequest,
    turn: usize,
) -> Option<(usize, RouteReason)> {
    let bound = table.config.routing.bound;
    let Some(model) = req.model() else {
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
        .map(|&i| eviction_cost(table, demand, found[i].backend))
        .collect();
    let optional = !resident.is_empty();
    if optional {
        let slots: usize = resident.iter().map(|&i| found[i].capacity).sum();
        let demanded = demand
            .get(model)
            .slots()
            .max((in_flight_for(found, model) + req.waiting + 1) as f64);
        if !wants_another_box(demanded, slots)
            || !load_beats_waiting(found, &resident, &cold, req.waiting)
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
    let idle: Vec<usize> = cheapest
        .iter()
        .copied()
        .filter(|&i| found[i].in_flight == 0)
        .collect();
    let pool = if idle.is_empty() { cheapest } else { idle };
    choose(found, &pool, req.key, bound, turn, RouteReason::Cold)
        .map(|(i, _)| (i, RouteReason::Cold))
}

fn resident_slots(table: &RoutingTable, model: &ModelName) -> usize {
    table
        .backends
        .iter()
        .filter(|b| b.is_available() && b.state.has_resident(model))
        .map(|b| b.capacity())
        .sum()
}

pub(super) fn eviction_cost(
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
    let remaining = resident_slots(table, &victim.model).saturating_sub(backend.capacity());
    let shortfall = wanted * (1.0 + MARGIN) - remaining as f64;
    if shortfall <= 0.0 {
        EvictionCost::Spare
    } else {
        EvictionCost::Needed(shortfall)
    }
}

fn load_beats_waiting(
    found: &[Candidate],
    resident: &[usize],
    cold: &[usize],
    waiting: usize,
) -> bool {
    let slots: usize = resident
        .iter()
        .map(|&i| found[i].capacity)
        .sum::<usize>()
        .max(1);
    let Some(service_ms) = average(
        resident
            .iter()
            .map(|&i| found[i].backend.state.service_ms()),
    ) else {
        return true;
    };
    let wait_ms = (waiting as u64 + 1) * service_ms / slots as u64;
    let load =
        average(cold.iter().map(|&i| found[i].backend.state.load_ms())).unwrap_or(DEFAULT_LOAD_MS);
    wait_ms > load
}

fn average(values: impl Iterator<Item = u64>) -> Option<u64> {
    let (sum, n) = values
        .filter(|&v| v > 0)
        .fold((0u64, 0u64), |(s, n), v| (s + v, n + 1));
    (n > 0).then(|| sum / n)
}
