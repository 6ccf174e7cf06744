//! After a box's part of a model-changing operation, probe it again and store what it
//! now holds before the client hears the operation is done: a `copy` followed at once
//! by a `delete` must find the copy on every box, and `/api/tags` right after a pull
//! must list the model. Waiting for the next health round would leave that to luck.

use std::sync::Arc;
use std::time::Duration;

use crate::pool::Backend;

/// One box to re-probe, with the probe deadline in force when the operation began.
pub(super) struct Refresh {
    pub client: reqwest::Client,
    pub backend: Arc<Backend>,
    pub timeout: Duration,
}

impl Refresh {
    /// Probes the box and applies its inventory. A failed probe changes nothing here:
    /// the health checker's own rounds judge the box's health.
    pub(super) async fn run(&self) {
        let state = &self.backend.state;
        // Taken before the probe is sent, so loads corral starts meanwhile are kept.
        let sent = crate::pool::now_ms();
        match crate::health::probe(&self.client, &self.backend.config.url, self.timeout).await {
            Ok(p) => {
                state.addr.store(Some(Arc::new(p.addr)));
                state.apply_inventory(p.inventory, sent);
            }
            Err(e) => tracing::debug!(
                backend = %state.name,
                error = %e,
                "re-probe after a fleet operation failed; the next health round retries"
            ),
        }
    }
}
