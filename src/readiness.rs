//! The start-up facts that systemd's READY=1 and an upgrade's hand-over wait for: every
//! listener accepts, and the first probe round is done (before it no backend is
//! routable, so an earlier "ready" would be a burst of 503s). Each is set once.

use tokio::sync::watch;

#[derive(Debug)]
pub struct Readiness {
    probed: watch::Sender<bool>,
    accepting: watch::Sender<bool>,
}

impl Default for Readiness {
    fn default() -> Self {
        Readiness {
            probed: watch::Sender::new(false),
            accepting: watch::Sender::new(false),
        }
    }
}

impl Readiness {
    /// The health checker finished its first round over every backend.
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
