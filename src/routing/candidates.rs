//! The candidate filter: which backends may serve a request at all, with the load
//! figures the strategies score them by, and the error that says why when none may.

use std::sync::Arc;

use crate::model::ModelName;
use crate::pool::{Backend, RoutingTable};

use super::Need;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoRoute {
    /// No backend, healthy or not, lists the model.
    #[error("model '{0}' not found")]
    ModelNotFound(ModelName),
    /// Backends exist for the request but none is healthy right now.
    #[error("no healthy backend available")]
    NoHealthy,
    /// `X-Corral-Target` named a backend that is not in the pool.
    #[error("unknown backend '{0}'")]
    UnknownBackend(String),
    /// Every candidate is at capacity: the request should wait in the queue.
    #[error("every backend that can serve this request is busy")]
    Full,
}

/// One candidate with its load read once, so a pick sees a consistent picture.
#[derive(Debug, Clone)]
pub struct Candidate<'a> {
    pub backend: &'a Arc<Backend>,
    /// Requests corral has out at the backend now.
    pub in_flight: usize,
    pub capacity: usize,
    pub resident: bool,
}

impl Candidate<'_> {
    pub fn has_free_slot(&self) -> bool {
        self.in_flight < self.capacity
    }

    pub fn name(&self) -> &str {
        self.backend.name()
    }
}

pub(super) fn candidate<'a>(b: &'a Arc<Backend>, model: Option<&ModelName>) -> Candidate<'a> {
    Candidate {
        backend: b,
        in_flight: b.state.in_flight(),
        capacity: b.capacity(),
        resident: model.is_some_and(|m| b.state.has_resident(m)),
    }
}

/// The backends that may serve a request.
#[derive(Debug)]
pub struct Found<'a> {
    pub list: Vec<Candidate<'a>>,
    /// Every one that could serve it is ejected by passive health: they are routed to
    /// anyway rather than the fleet answering 503 on a heuristic's word.
    pub panic: bool,
}

/// Routable backends that can serve `need`, minus those already `tried`. When passive
/// ejection has taken out all of them, the ejected ones ("panic mode").
pub fn candidates<'a>(
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
            // The index lists exactly the backends a scan for the model would find, in
            // table order, with the residency a scan would read. A stale one (a large
            // fleet between rebuilds) is checked against the live state.
            let index = table.index();
            let current = index.is_current();
            let listed = index.model(model).map_or(&[][..], |e| &e.listed.list[..]);
            let found: Vec<_> = listed
                .iter()
                .map(|m| (&table.backends[m.backend as usize], m.resident))
                .filter(|(b, _)| usable(b) && untried(b))
                .filter(|(b, _)| current || b.state.has_model(model))
                .map(|(b, resident)| Candidate {
                    resident: if current {
                        resident
                    } else {
                        b.state.has_resident(model)
                    },
                    ..candidate(b, None)
                })
                .collect();
            // Only claim "not found" when someone could have answered for it: with
            // every backend down we do not know, so that is a 503. A stale index may
            // not know a model added since: not found only if no backend lists it.
            if found.is_empty()
                && listed.is_empty()
                && table.backends.iter().any(|b| usable(b))
                && (current || !table.backends.iter().any(|b| b.state.has_model(model)))
            {
                return Err(NoRoute::ModelNotFound(model.clone()));
            }
            found
        }
        Need::Lacking(model) => {
            let all: Vec<_> = routable.collect();
            let lacking: Vec<_> = all.iter().filter(|b| !b.state.has_model(model)).collect();
            // Every box has it already: pulling again refreshes it; any box will do.
            let pool = if lacking.is_empty() {
                all.iter().collect()
            } else {
                lacking
            };
            pool.into_iter().map(|b| candidate(b, None)).collect()
        }
        Need::Named(name) => {
            let Some(b) = table.get(name) else {
                return Err(NoRoute::UnknownBackend(name.clone()));
            };
            (usable(b) && untried(&b))
                .then(|| candidate(b, None))
                .into_iter()
                .collect()
        }
        Need::Any | Need::Pinned => routable.map(|b| candidate(b, None)).collect(),
    };
    if found.is_empty() {
        return Err(NoRoute::NoHealthy);
    }
    Ok(found)
}
