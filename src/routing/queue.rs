//! The admission queue: when every candidate is at capacity a request waits here, in
//! corral, instead of piling into Ollama's unbounded queue where no other box could
//! ever take it. Waiters are FIFO per model; a freed slot wakes the oldest waiter the
//! freed backend can serve. The queue is bounded in size, each wait has a deadline, and
//! a waiter that goes away (client disconnect) leaves at once: dropping its `Ticket`
//! removes it.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::model::ModelName;
use crate::pool::{BackendState, SlotWatcher};

use super::{NoRoute, Pick};

/// Re-check period: catches capacity that appears without a slot being freed (a
/// backend coming up, a reload, a busy backoff ending).
const RECHECK: Duration = Duration::from_millis(200);

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("too many requests waiting (queue full)")]
    Full,
    #[error("no backend became free within {}", humantime::format_duration(*.0))]
    Timeout(Duration),
    #[error(transparent)]
    NoRoute(NoRoute),
}

struct Waiter {
    id: u64,
    model: Option<ModelName>,
    wake: Arc<Notify>,
}

#[derive(Default)]
struct Waiters {
    queue: VecDeque<Waiter>,
    next_id: u64,
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
    ) -> Result<Ticket, QueueError> {
        let mut w = self.lock();
        if w.queue.len() >= max {
            return Err(QueueError::Full);
        }
        w.next_id += 1;
        let id = w.next_id;
        let wake = Arc::new(Notify::new());
        w.queue.push_back(Waiter {
            id,
            model: model.clone(),
            wake: wake.clone(),
        });
        self.depth.store(w.queue.len(), Ordering::Relaxed);
        Ok(Ticket {
            queue: self.clone(),
            id,
            model,
            wake,
        })
    }

    /// Wakes the oldest waiter that `fits`.
    fn wake_oldest(&self, fits: impl Fn(Option<&ModelName>) -> bool) {
        let w = self.lock();
        if let Some(waiter) = w.queue.iter().find(|w| fits(w.model.as_ref())) {
            waiter.wake.notify_one();
        }
    }
}

impl SlotWatcher for AdmissionQueue {
    fn slot_freed(&self, backend: &BackendState) {
        if self.depth() == 0 || !backend.is_routable() {
            return;
        }
        self.wake_oldest(|model| model.is_none_or(|m| backend.has_model(m)));
    }
}

impl Ticket {
    /// Oldest waiter for its model: only the head may take a slot, which keeps the
    /// queue FIFO per model.
    fn is_head(&self) -> bool {
        let w = self.queue.lock();
        w.queue
            .iter()
            .find(|w| w.model == self.model)
            .is_some_and(|w| w.id == self.id)
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
                    Ok(pick) => return Ok(pick),
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
        w.queue.retain(|x| x.id != self.id);
        self.queue.depth.store(w.queue.len(), Ordering::Relaxed);
        // The next waiter for this model becomes head: let it look at once.
        if let Some(next) = w.queue.iter().find(|x| x.model == self.model) {
            next.wake.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn fifo_per_model_and_bounded() {
        let q = Arc::new(AdmissionQueue::default());
        let a = ModelName::new("a");
        let t1 = q.enter(Some(a.clone()), 3).unwrap();
        let t2 = q.enter(Some(a.clone()), 3).unwrap();
        let other = q.enter(Some(ModelName::new("b")), 3).unwrap();
        assert!(matches!(q.enter(None, 3), Err(QueueError::Full)));
        assert!(t1.is_head() && !t2.is_head() && other.is_head());
        assert_eq!(q.waiting_for(Some(&a)), 2);
        drop(t1);
        assert!(t2.is_head());
        assert_eq!(q.depth(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn wait_times_out_and_leaves_the_queue() {
        let q = Arc::new(AdmissionQueue::default());
        let t = q.enter(None, 8).unwrap();
        let r = t.wait(Duration::from_secs(5), |_| Err(NoRoute::Full)).await;
        assert!(matches!(r, Err(QueueError::Timeout(_))));
        drop(t);
        assert_eq!(q.depth(), 0);
    }
}
