//! The replicated backend pool: an openraft group across corral replicas.
//!
//! `types` declares the Raft types and pool commands, `pool_state` applies them,
//! `store` persists log, vote and state machine in redb, `network`/`rpc` carry peer
//! RPCs over authenticated HTTP, `node` runs the member on its own runtime thread,
//! `publish` feeds applied changes to the routing table, `ops` serves the admin API.

pub mod admin;
pub mod cli;
pub mod error;
pub mod metrics;
pub mod network;
pub mod node;
pub mod ops;
pub mod pool_state;
pub mod publish;
pub mod rpc;
pub mod store;
pub mod types;
pub mod writes;

pub use error::ClusterError;
pub use node::{ClusterService, ClusterSlot};
pub use ops::Cluster;
pub use pool_state::{DynamicBackend, PoolState};
pub use types::{Applied, Command, Node, NodeId, TypeConfig};

/// Wall-clock Unix milliseconds: lease ends are absolute times every replica agrees on.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Adds the Raft member to `server` as a background service (its thread starts when
/// the server runs, after any daemonizing fork) and returns what the admin API needs.
/// `listener` is `config.listen`, already bound (see `startup::listeners`).
pub fn start(
    server: &mut pingora::server::Server,
    config: crate::config::ClusterConfig,
    pool: &std::sync::Arc<crate::pool::Pool>,
    listener: std::net::TcpListener,
) -> admin::ClusterAdmin {
    let slot = std::sync::Arc::new(ClusterSlot::default());
    metrics::register(crate::metrics::global().registry());
    let admin_addr = config
        .admin_addr
        .clone()
        .unwrap_or_else(|| pool.yaml_config().admin.listen.to_string());
    let service = ClusterService {
        config,
        admin_addr,
        pool: pool.clone(),
        slot: slot.clone(),
        listener: std::sync::Mutex::new(Some(listener)),
    };
    server.add_service(pingora::services::background::background_service(
        "cluster", service,
    ));
    admin::ClusterAdmin {
        slot,
        pool: pool.clone(),
    }
}

#[cfg(test)]
mod tests;
