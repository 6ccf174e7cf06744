//! The replicated backend pool: an openraft group across corral replicas.
//!
//! `types` declares the Raft types and pool commands, `pool_state` applies them,
//! `store` persists log, vote and state machine in redb, `network`/`rpc` carry peer
//! RPCs over authenticated HTTP, `node` runs the member on its own runtime thread,
//! `publish` feeds applied changes to the routing table, `ops` carries out what the
//! admin API asks, `admin` hands the admin service its cluster endpoints and the Raft
//! pool writer (`writes`).

mod admin;
pub mod cli;
mod error;
mod metrics;
mod network;
mod node;
mod ops;
mod pool_state;
mod publish;
mod rpc;
mod store;
mod types;
mod writes;

pub use admin::ClusterAdmin;
pub(crate) use node::raft_config;
use node::{ClusterService, ClusterSlot};

/// Wall-clock Unix milliseconds: lease ends are absolute times every replica agrees on.
fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Adds the Raft member to `server` as a background service (its thread starts when
/// the server runs, after any daemonizing fork) and returns what the admin API needs.
/// `listener` is `config.listen`, already bound (see `startup::listeners`); `readiness`
/// learns when the replicated backends are in the pool (or the member gave up).
pub fn start(
    server: &mut pingora::server::Server,
    config: crate::config::ClusterConfig,
    pool: &std::sync::Arc<crate::pool::Pool>,
    listener: std::net::TcpListener,
    readiness: std::sync::Arc<crate::readiness::Readiness>,
) -> ClusterAdmin {
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
        readiness,
    };
    server.add_service(pingora::services::background::background_service(
        "cluster", service,
    ));
    ClusterAdmin {
        slot,
        pool: pool.clone(),
    }
}

#[cfg(test)]
mod tests;
