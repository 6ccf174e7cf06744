//! The routing table: an immutable snapshot of the desired pool joined with each
//! backend's live state. Rebuilt on every config change and published with `ArcSwap`.

use std::sync::Arc;

use crate::config::{BackendConfig, Config};

use super::state::BackendState;

/// One backend as the router sees it: what the config says plus its live state.
#[derive(Debug)]
pub struct Backend {
    pub config: BackendConfig,
    pub state: Arc<BackendState>,
    /// Added through the admin API rather than listed in the YAML.
    pub dynamic: bool,
}

impl Backend {
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// Probed healthy, not ejected and not draining: may receive new traffic.
    pub fn is_available(&self) -> bool {
        self.state.is_routable()
    }

    /// Concurrency routing assumes right now: the configured `max_concurrency`, less
    /// while the box is on probation or answering "busy".
    pub fn capacity(&self) -> usize {
        self.state
            .passive
            .effective_capacity(self.config.max_concurrency)
    }
}

#[derive(Debug)]
pub struct RoutingTable {
    /// In config order; routing never depends on this order except as a stable tie-break.
    pub backends: Vec<Arc<Backend>>,
    /// The config this table was built from (routing, timeouts, health settings).
    pub config: Arc<Config>,
}

impl RoutingTable {
    pub fn get(&self, name: &str) -> Option<&Arc<Backend>> {
        self.backends.iter().find(|b| b.name() == name)
    }
}
