//! One try of a request at one backend, as a single record: the pick, the slot it
//! holds, the stall watch on its connection, and its outcome — which is fed to the
//! backend's passive health exactly once, whichever phase ends the attempt (a connect
//! failure, a busy answer retried elsewhere, a failure mid-stream, or the end of the
//! request). Only what is the backend's fault counts against it.

use std::sync::Arc;
use std::time::Instant;

use crate::model::ModelName;
use crate::pool::{FailureVerdict, InFlight, ModelInFlight, RoutingTable, SlotWatcher};
use crate::routing::Pick;

use super::observe::FinalStats;
use super::stall::StallWatch;

pub struct Attempt {
    pub pick: Pick,
    slot: Option<InFlight>,
    model: Option<ModelInFlight>,
    pub stall: Option<StallWatch>,
    pub started: Instant,
    /// The status the backend answered, once its header came.
    pub status: Option<u16>,
    settled: bool,
}

/// How an attempt ended, as far as the backend's health is concerned.
#[derive(Debug)]
pub enum Outcome<'a> {
    /// A full answer.
    Success { stats: Option<&'a FinalStats> },
    /// A complete, well-framed answer that lacked what corral expected (e.g. a final
    /// `done` chunk): the backend speaks a dialect, it is not failing.
    Unexpected,
    /// The backend's fault: connect error, 5xx, stall, truncation, timeout.
    Failed(&'a str),
    /// Ollama's fast "server busy" 503: full, not broken.
    Busy,
    /// Says nothing about the backend: the client left, or a pooled connection the
    /// backend had already closed.
    Neutral,
}

/// A pick with its backend slot already taken. The slot is taken the moment the pick
/// is made, not when the attempt starts: between the two lie awaits, and a queued
/// request woken in that gap would see the slot free and take it too.
pub struct Planned {
    pick: Pick,
    slot: InFlight,
}

impl Planned {
    pub fn reserve(pick: Pick, watcher: Arc<dyn SlotWatcher>) -> Planned {
        let slot = InFlight::acquire(&pick.backend.state, Some(watcher));
        Planned { pick, slot }
    }

    pub fn pick(&self) -> &Pick {
        &self.pick
    }
}

impl Attempt {
    /// Starts an attempt on its reserved slot and, for work that runs the model,
    /// records the model in use there (a load, if it was not resident).
    pub fn start(planned: Planned, model: Option<&ModelName>) -> Attempt {
        let Planned { pick, slot } = planned;
        let state = &pick.backend.state;
        let model = model.map(|m| {
            let used = state.residency.use_model(m);
            if let Some(victim) = &used.evicts {
                tracing::debug!(backend = %state.name, model = %m, evicts = %victim, "load expected to evict");
            }
            used.hold
        });
        if pick.panic {
            crate::metrics::global().panic_route(pick.backend.name());
            tracing::warn!(
                backend = pick.backend.name(),
                "every candidate is ejected: routing anyway (panic mode)"
            );
        }
        Attempt {
            pick,
            slot: Some(slot),
            model,
            stall: None,
            started: Instant::now(),
            status: None,
            settled: false,
        }
    }

    /// The backend's work is done (its body ended): free the slot for the next request
    /// even though the last bytes may still be on their way to the client.
    pub fn release(&mut self) {
        self.slot = None;
        self.model = None;
    }

    pub fn is_settled(&self) -> bool {
        self.settled
    }

    /// Feeds the outcome to the backend's live state. Only the first call counts.
    pub fn settle(&mut self, table: &RoutingTable, outcome: Outcome) {
        if std::mem::replace(&mut self.settled, true) {
            return;
        }
        let state = &self.pick.backend.state;
        let health = &table.config.health;
        match outcome {
            Outcome::Success { stats } => {
                state.passive.record_success();
                if let Some(stats) = stats {
                    // Sub-100 ms "loads" are a resident model being touched, not a load.
                    if stats.load_ns > 100_000_000 {
                        state.observe_load(stats.load_ns / 1_000_000);
                    }
                }
                state.observe_service(self.started.elapsed().as_millis() as u64);
            }
            Outcome::Unexpected => {
                crate::metrics::global().unexpected_answer(&state.name);
                if !state.warned_unexpected() {
                    tracing::warn!(
                        backend = %state.name,
                        "answer ended without the final \"done\" chunk; not counted as a failure \
                         (corral_backend_unexpected_answers_total counts them)"
                    );
                }
            }
            Outcome::Failed(why) => {
                let verdict = state.passive.record_failure(health.eject_policy(), || {
                    table.may_eject(state, health.max_ejection_percent)
                });
                match verdict {
                    FailureVerdict::Ejected(t) => {
                        state.last_error.store(Some(Arc::new(format!(
                            "ejected for {}: {why}",
                            humantime::format_duration(t)
                        ))));
                        crate::metrics::global().backend_ejected(&state.name);
                        tracing::warn!(
                            backend = %state.name,
                            reason = why,
                            ejected_for = %humantime::format_duration(t),
                            "backend ejected"
                        );
                    }
                    FailureVerdict::Capped => {
                        crate::metrics::global().ejection_capped(&state.name);
                        tracing::warn!(
                            backend = %state.name,
                            reason = why,
                            max_ejection_percent = health.max_ejection_percent,
                            "backend failing but kept in: too many of its peers are ejected"
                        );
                    }
                    FailureVerdict::Counted => {}
                }
            }
            // A busy box refused work quickly: it must not look idle.
            Outcome::Busy => state
                .passive
                .record_busy(state.in_flight(), health.busy_backoff),
            Outcome::Neutral => {}
        }
    }
}
