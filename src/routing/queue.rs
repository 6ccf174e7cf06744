//! The admission queue: when every candidate is at capacity a request waits here, in
//! corral, instead of piling into Ollama's unbounded queue where no other box could
//! ever take it. The queue is bounded in size, each wait has a deadline, and a waiter
//! that goes away (client disconnect) leaves at once: dropping its `Ticket` removes it.
//!
//! Order of service, among the waiters a freed slot could serve (for one model, only
//! the first in this order may take a slot):
//! 1. `interactive` waiters before `batch` ones — but a batch waiter that has waited
//!    [`BATCH_AGING`] counts as interactive, so a steady interactive load cannot starve
//!    batch work;
//! 2. within a class, client keys take turns: each waiter gets a turn number when it
//!    enters (start-time fair queuing with unit cost: one more than its key's previous
//!    waiter, and never behind the turn being served), and turns are served in order,
//!    so a key that sends a burst of fifty waits its turn between the others' requests;
//! 3. FIFO within a key (and between equal turns).
//!
//! Without client keys every waiter is interactive and of one flow, whose turns follow
//! arrival: the queue is FIFO per model, as it always was.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::config::Priority;
use crate::model::ModelName;
use crate::pool::{BackendState, SlotWatcher};

use super::{NoRoute, Pick};

/// Re-check period: catches capacity that appears without a slot being freed (a
/// backend coming up, a reload, a busy backoff ending) and waiters that age.
const RECHECK: Duration = Duration::from_millis(200);

/// A batch waiter this old is served as if it were interactive.
pub const BATCH_AGING: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("too many requests waiting (queue full)")]
    Full,
    #[error("no backend became free within {}", humantime::format_duration(*.0))]
    Timeout(Duration),
    #[error(transparent)]
    NoRoute(NoRoute),
}

/// Whose request waits, for the order of service: its class and its flow (one per
/// client key; 0 without keys).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Turn {
    pub priority: Priority,
    pub flow: u64,
}

struct Waiter {
    id: u64,
    model: Option<ModelName>,
    wake: Arc<Notify>,
    turn: Turn,
    /// Start tag of fair queuing: the flow's turn number.
    tag: u64,
    since: Instant,
}

impl Waiter {
    /// Smaller is served first.
    fn order(&self, now: Instant) -> (bool, u64, u64) {
        let urgent = self.turn.priority == Priority::Interactive
            || now.saturating_duration_since(self.since) >= BATCH_AGING;
        (!urgent, self.tag, self.id)
    }
}

#[derive(Default)]
struct Waiters {
    queue: VecDeque<Waiter>,
    next_id: u64,
    /// The largest tag served so far: a flow that was idle starts its turns here.
    served_tag: u64,
    /// Each waiting flow's latest tag.
    last_tag: HashMap<u64, u64>,
}

impl Waiters {
    /// The waiter served first among those `fits` accepts.
    fn first(&self, now: Instant, fits: impl Fn(&Waiter) -> bool) -> Option<&Waiter> {
        self.queue
            .iter()
            .filter(|w| fits(w))
            .min_by_key(|w| w.order(now))
    }
}

#[derive(Default)]
pub struct AdmissionQueue {
    waiters: Mutex<Waiters>,
    depth: AtomicUsize,
}

/// A place in the queue; leaving is dropping it.
pub struct Ticket {
    queue: Arc<AdmissionQueue>,
    id: u64,
    model: Option<ModelName>,
    wake: Arc<Notify>,
}

impl AdmissionQueue {
    fn lock(&self) -> MutexGuard<'_, Waiters> {
        self.waiters.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Requests waiting now.
    pub fn depth(&self) -> usize {
        self.depth.load(Ordering::Relaxed)
    }

    /// Requests for `model` waiting now. A newcomer that sees any must queue behind
    /// them rather than take a slot they are waiting for.
    pub fn waiting_for(&self, model: Option<&ModelName>) -> usize {
        if self.depth() == 0 {
            return 0;
        }
        self.lock()
            .queue
            .iter()
            .filter(|w| w.model.as_ref() == model)
            .count()
    }

    /// Waiters per model (requests that name none are left out).
    pub fn waiting_by_model(&self) -> std::collections::HashMap<ModelName, usize> {
        let mut by_model = std::collections::HashMap::new();
        if self.depth() == 0 {
            return by_model;
        }
        for w in &self.lock().queue {
            if let Some(m) = &w.model {
                *by_model.entry(m.clone()).or_default() += 1;
            }
        }
        by_model
    }

    /// Joins the queue, or fails when `max` requests already wait.
    pub fn enter(
        self: &Arc<Self>,
        model: Option<ModelName>,
        max: usize,
        turn: Turn,
    ) -> Result<Ticket, QueueError> {
        let mut w = self.lock();
        if w.queue.len() >= max {
            return Err(QueueError::Full);
        }
        w.next_id += 1;
        let id = w.next_id;
        let previous = w.last_tag.get(&turn.flow).copied().unwrap_or(0);
        let tag = previous.max(w.served_tag) + 1;
        w.last_tag.insert(turn.flow, tag);
        let wake = Arc::new(Notify::new());
        w.queue.push_back(Waiter {
            id,
            model: model.clone(),
            wake: wake.clone(),
            turn,
            tag,
            since: Instant::now(),
        });
        self.depth.store(w.queue.len(), Ordering::Relaxed);
        Ok(Ticket {
            queue: self.clone(),
            id,
            model,
            wake,
        })
    }

    /// Wakes the first waiter in the order of service that `fits`.
    fn wake_first(&self, fits: impl Fn(Option<&ModelName>) -> bool) {
        let w = self.lock();
        if let Some(waiter) = w.first(Instant::now(), |x| fits(x.model.as_ref())) {
            waiter.wake.notify_one();
        }
    }
}

impl SlotWatcher for AdmissionQueue {
    fn slot_freed(&self, backend: &BackendState) {
        if self.depth() == 0 || !backend.is_routable() {
            return;
        }
        self.wake_first(|model| model.is_none_or(|m| backend.has_model(m)));
    }
}

impl Ticket {
    /// First in the order of service for its model: only it may take a slot.
    fn is_head(&self) -> bool {
        let w = self.queue.lock();
        w.first(Instant::now(), |x| x.model == self.model)
            .is_some_and(|x| x.id == self.id)
    }

    /// Taking a slot ends this waiter's turn: later flows start after it.
    fn served(&self) {
        let mut w = self.queue.lock();
        if let Some(tag) = w.queue.iter().find(|x| x.id == self.id).map(|x| x.tag) {
            w.served_tag = w.served_tag.max(tag);
        }
    }

    /// Waits until `try_pick` finds a backend (it returns `NoRoute::Full` while every
    /// candidate is busy), or the deadline passes. `try_pick` gets the number of
    /// requests waiting for this model, itself included.
    pub async fn wait(
        &self,
        timeout: Duration,
        mut try_pick: impl FnMut(usize) -> Result<Pick, NoRoute>,
    ) -> Result<Pick, QueueError> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.is_head() {
                let waiting = self.queue.waiting_for(self.model.as_ref());
                match try_pick(waiting) {
                    Ok(pick) => {
                        self.served();
                        return Ok(pick);
                    }
                    Err(NoRoute::Full) => {}
                    Err(e) => return Err(QueueError::NoRoute(e)),
                }
            }
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(RECHECK) => {}
                _ = tokio::time::sleep_until(deadline) => return Err(QueueError::Timeout(timeout)),
            }
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut w = self.queue.lock();
        let Some(i) = w.queue.iter().position(|x| x.id == self.id) else {
            return;
        };
        let gone = w.queue.remove(i);
        self.queue.depth.store(w.queue.len(), Ordering::Relaxed);
        if let Some(gone) = gone {
            // A flow with nobody waiting starts afresh at the served turn next time.
            if !w.queue.iter().any(|x| x.turn.flow == gone.turn.flow) {
                w.last_tag.remove(&gone.turn.flow);
            }
        }
        // The next waiter for this model becomes head: let it look at once.
        if let Some(next) = w.first(Instant::now(), |x| x.model == self.model) {
            next.wake.notify_one();
        }
    }
}

#[cfg(test)]
#[path = "queue_tests.rs"]
mod tests;
