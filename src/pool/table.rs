//! The routing table: an immutable snapshot of the desired pool joined with each
//! backend's live state. Rebuilt on every config change and published with `ArcSwap`.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::{ArcSwap, Guard};

use crate::config::{BackendConfig, Config};

use super::index::{self, ModelIndex};
use super::state::BackendState;

/// One backend as the router sees it: what the config says plus its live state.
#[derive(Debug)]
pub struct Backend {
    pub config: BackendConfig,
    pub state: Arc<BackendState>,
    /// Added through the admin API rather than listed in the YAML.
    pub dynamic: bool,
    /// Header values every request to this backend carries, built once per table
    /// instead of per request.
    pub headers: BackendHeaders,
}

/// A backend's `Host` (the authority Ollama checks) and its name for
/// `X-Corral-Backend`, as header values; `None` when not valid in a header.
#[derive(Debug, Clone)]
pub struct BackendHeaders {
    pub host: Option<http::HeaderValue>,
    pub name: Option<http::HeaderValue>,
}

impl BackendHeaders {
    pub fn new(config: &BackendConfig) -> BackendHeaders {
        BackendHeaders {
            host: http::HeaderValue::from_str(&config.url.authority).ok(),
            name: http::HeaderValue::from_str(&config.name).ok(),
        }
    }
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
    /// The client keys with their live state; `None`: the proxy port is open.
    pub clients: Option<Arc<crate::clients::ClientTable>>,
    /// Positions in `backends` by name (the first of a name, as a scan would find).
    by_name: HashMap<String, usize>,
    /// Built on first use and whenever inventory or residency changed since.
    index: ArcSwap<ModelIndex>,
}

impl RoutingTable {
    pub fn new(
        backends: Vec<Arc<Backend>>,
        config: Arc<Config>,
        clients: Option<Arc<crate::clients::ClientTable>>,
    ) -> RoutingTable {
        let mut by_name = HashMap::with_capacity(backends.len());
        for (i, b) in backends.iter().enumerate() {
            by_name.entry(b.name().to_string()).or_insert(i);
        }
        RoutingTable {
            backends,
            config,
            clients,
            by_name,
            index: ArcSwap::from_pointee(ModelIndex::default()),
        }
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Backend>> {
        self.by_name.get(name).map(|&i| &self.backends[i])
    }

    /// Which backends list and hold each model, as of now.
    pub fn index(&self) -> Guard<Arc<ModelIndex>> {
        index::current(&self.index, &self.backends)
    }

    /// Whether passive health may eject `backend` now: for every model it has, the
    /// peers that could serve that model (probed healthy, not draining) that are
    /// ejected already, plus this one, stay within `percent` of them — though one
    /// may always go. A heuristic that reads failures must never empty the fleet.
    pub fn may_eject(&self, backend: &BackendState, percent: u8) -> bool {
        let serving = |b: &&Arc<Backend>| b.state.is_healthy() && !b.state.is_draining();
        let within = |peers: &mut dyn Iterator<Item = &Arc<Backend>>| {
            let (mut n, mut out) = (0usize, 0usize);
            for b in peers {
                n += 1;
                if b.state.passive.is_ejected() && !std::ptr::eq(&*b.state, backend) {
                    out += 1;
                }
            }
            let allowed = (n * percent as usize / 100).max(1);
            out < allowed
        };
        let models = backend.inventory.load();
        if models.models.is_empty() {
            return within(&mut self.backends.iter().filter(serving));
        }
        models.models.iter().all(|m| {
            within(
                &mut self
                    .backends
                    .iter()
                    .filter(serving)
                    .filter(|b| b.state.has_model(m)),
            )
        })
    }
}
