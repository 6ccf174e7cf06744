//! JSON views of the pool for the admin API and the CLI.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::pool::{Backend, RoutingTable};
use crate::reload::ReloadStatus;
use crate::routing::DemandTable;

#[derive(Debug, Serialize, Deserialize)]
pub struct BackendView {
    pub name: String,
    pub url: String,
    pub healthy: bool,
    /// Drained by an operator: no new requests; `in_flight` are finishing.
    #[serde(default)]
    pub draining: bool,
    /// Added through the admin API (kept in the state file), not the YAML.
    #[serde(default)]
    pub dynamic: bool,
    /// Taken out by live traffic (consecutive failures), for a backoff.
    pub ejected: bool,
    /// Back from an ejection, limited to one request until one succeeds.
    pub probation: bool,
    pub in_flight: usize,
    /// Concurrency routing assumes now (less than configured while busy or on probation).
    pub capacity: usize,
    pub max_concurrency: usize,
    pub weight: u32,
    pub requests: u64,
    pub version: Option<String>,
    pub models: Vec<String>,
    /// Loaded in memory as routing believes it: the last probe plus the loads and
    /// evictions corral caused since.
    pub resident: Vec<String>,
    /// Models the box has been seen to keep loaded together.
    #[serde(default)]
    pub holds_models: usize,
    pub last_error: Option<String>,
}

impl BackendView {
    pub fn of(b: &Backend) -> BackendView {
        let inv = b.state.inventory.load();
        let mut models: Vec<String> = inv.models.iter().map(|m| m.to_string()).collect();
        let mut resident: Vec<String> = b
            .state
            .residency
            .models()
            .iter()
            .map(|r| r.model.to_string())
            .collect();
        models.sort();
        resident.sort();
        BackendView {
            name: b.name().to_string(),
            url: b.config.url.base(),
            healthy: b.state.is_healthy(),
            draining: b.state.is_draining(),
            dynamic: b.dynamic,
            ejected: b.state.passive.is_ejected(),
            probation: b.state.passive.on_probation(),
            in_flight: b.state.in_flight(),
            capacity: b.capacity(),
            max_concurrency: b.config.max_concurrency,
            weight: b.config.weight,
            requests: b.state.requests(),
            version: inv.version.clone(),
            models,
            resident,
            holds_models: b.state.residency.max_models(),
            last_error: b.state.last_error.load().as_deref().cloned(),
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub struct StatusView {
    pub version: String,
    pub strategy: String,
    pub backends_total: usize,
    pub backends_healthy: usize,
    pub in_flight: usize,
    pub queue_depth: usize,
    /// False in maintenance mode (`corral serving disable`).
    #[serde(default = "yes")]
    pub serving: bool,
    #[serde(default)]
    pub reloads: ReloadView,
    /// Each model in demand: how much, and where it is loaded.
    #[serde(default)]
    pub placement: Vec<ModelPlacement>,
}

/// One model's demand and the boxes holding it.
#[derive(Debug, Serialize, Deserialize)]
pub struct ModelPlacement {
    pub model: String,
    /// Slots it needs: the moving average of in flight + queued.
    pub demand: f64,
    /// In flight + queued at the last sample.
    pub now: usize,
    /// Routable boxes believed to hold it, and their slots.
    pub loaded_on: Vec<String>,
    pub slots: usize,
}

impl ModelPlacement {
    pub fn all(table: &RoutingTable, demand: &DemandTable) -> Vec<ModelPlacement> {
        demand
            .all()
            .into_iter()
            .map(|(model, d)| {
                let holders: Vec<&Arc<Backend>> = table
                    .backends
                    .iter()
                    .filter(|b| b.is_available() && b.state.has_resident(&model))
                    .collect();
                ModelPlacement {
                    model: model.to_string(),
                    demand: (d.average * 100.0).round() / 100.0,
                    now: d.now,
                    loaded_on: holders.iter().map(|b| b.name().to_string()).collect(),
                    slots: holders.iter().map(|b| b.capacity()).sum(),
                }
            })
            .collect()
    }
}

fn yes() -> bool {
    true
}

/// What the config reloads did.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct ReloadView {
    pub successes: u64,
    pub failures: u64,
    /// The last failed reload's `file:line:col: message`, until a reload succeeds.
    pub last_error: Option<String>,
    /// Settings changed in the file that need a restart to apply.
    pub restart_needed: Vec<String>,
}

impl ReloadView {
    pub fn of(r: &ReloadStatus) -> ReloadView {
        ReloadView {
            successes: r.successes.load(Ordering::Relaxed),
            failures: r.failures.load(Ordering::Relaxed),
            last_error: r.last_error.load().as_deref().cloned(),
            restart_needed: r
                .restart_needed
                .load()
                .as_deref()
                .cloned()
                .unwrap_or_default(),
        }
    }
}

impl StatusView {
    pub fn of(table: &RoutingTable, queue_depth: usize) -> StatusView {
        StatusView {
            version: env!("CARGO_PKG_VERSION").to_string(),
            strategy: table.config.routing.strategy.as_str().to_string(),
            backends_total: table.backends.len(),
            backends_healthy: table.backends.iter().filter(|b| b.is_available()).count(),
            in_flight: table.backends.iter().map(|b| b.state.in_flight()).sum(),
            queue_depth,
            serving: true,
            reloads: ReloadView::default(),
            placement: Vec::new(),
        }
    }
}
