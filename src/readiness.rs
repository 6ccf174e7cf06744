//! The start-up facts that systemd's READY=1 and an upgrade's hand-over wait for: every
//! listener accepts, and the first probe round over the whole pool is done (before it
//! no backend is routable, so an earlier "ready" would be a burst of 503s). In cluster
//! mode the pool is whole once the Raft state machine's backends are published. Each
//! fact is set once.

use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::watch;

#[derive(Debug)]
pub struct Readiness {
    probed: watch::Sender<bool>,
    accepting: watch::Sender<bool>,
    pool_complete: AtomicBool,
}

impl Default for Readiness {
    fn default() -> Self {
        Readiness::new(true)
    }
}

impl Readiness {
    /// `pool_complete`: false while backends are still to come (from Raft).
    pub fn new(pool_complete: bool) -> Readiness {
        Readiness {
            probed: watch::Sender::new(false),
            accepting: watch::Sender::new(false),
            pool_complete: AtomicBool::new(pool_complete),
        }
    }

    /// Every backend source has been published into the pool (or has given up).
    pub fn set_pool_complete(&self) {
        self.pool_complete.store(true, Ordering::Release);
    }

    /// Whether a probe round starting now covers the whole pool.
    pub fn pool_complete(&self) -> bool {
        self.pool_complete.load(Ordering::Acquire)
    }

    /// The health checker finished a round that started over the whole pool.
    pub fn set_probed(&self) {
        self.probed.send_replace(true);
    }

    /// The proxy service took its sockets and accepts on them.
    pub fn set_accepting(&self) {
        self.accepting.send_replace(true);
    }

    pub async fn probed(&self) {
        // The sender lives in `self`, so the wait cannot fail.
        let _ = self.probed.subscribe().wait_for(|done| *done).await;
    }

    /// Both facts hold.
    pub async fn ready(&self) {
        self.probed().await;
        let _ = self.accepting.subscribe().wait_for(|done| *done).await;
    }
}
