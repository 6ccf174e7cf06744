//! Starting a replica's Raft member on its own runtime thread (never on a Pingora
//! service runtime; started from a background service, so after Pingora may have
//! forked), bootstrapping the group once, and the loops beside it: publishing applied
//! pool changes to the routing table, expiring leases on the leader, and metrics.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use openraft::error::{InitializeError, RaftError};
use openraft::{ServerState, SnapshotPolicy};
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tokio::sync::watch;

use super::metrics;
use super::network::{Network, PeerHttp};
use super::ops::Cluster;
use super::pool_state::PoolState;
use super::publish;
use super::store::Store;
use super::types::{Command, Node, NodeId, Raft};
use crate::config::ClusterConfig;
use crate::pool::Pool;

/// Where the admin API finds the cluster member once its thread has started it.
#[derive(Default)]
pub struct ClusterSlot {
    cluster: OnceLock<Arc<Cluster>>,
    failure: Mutex<Option<String>>,
}

impl ClusterSlot {
    pub fn get(&self) -> Option<Arc<Cluster>> {
        self.cluster.get().cloned()
    }

    /// Why the member could not start or stopped, if it did.
    pub fn failure(&self) -> Option<String> {
        if let Some(f) = self
            .failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
        {
            return Some(f);
        }
        let c = self.cluster.get()?;
        let m = c.raft.metrics();
        let running = m.borrow().running_state.clone();
        running.err().map(|e| format!("raft stopped: {e}"))
    }

    fn fail(&self, why: String) {
        tracing::error!(error = %why, "cluster member failed");
        metrics::get().storage_failed.set(1);
        *self.failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(why);
    }
}

/// The Pingora background service that owns the Raft thread.
pub(crate) struct ClusterService {
    pub config: ClusterConfig,
    /// This replica's admin address, announced to peers.
    pub admin_addr: String,
    pub pool: Arc<Pool>,
    pub slot: Arc<ClusterSlot>,
    /// The peer RPC socket, bound at start-up; moved to the Raft thread on start.
    pub listener: Mutex<Option<std::net::TcpListener>>,
    pub readiness: Arc<crate::readiness::Readiness>,
}

#[async_trait]
impl BackgroundService for ClusterService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let (stop_tx, stop_rx) = watch::channel(false);
        let config = self.config.clone();
        let admin_addr = self.admin_addr.clone();
        let pool = self.pool.clone();
        let slot = self.slot.clone();
        let readiness = self.readiness.clone();
        let Some(listener) = self
            .listener
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        else {
            readiness.set_pool_complete();
            return self.slot.fail("cluster service started twice".to_string());
        };
        let spawned = std::thread::Builder::new()
            .name("corral-raft".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .thread_name("corral-raft-rt")
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => return slot.fail(format!("cannot start the Raft runtime: {e}")),
                };
                let published = readiness.clone();
                rt.block_on(run(
                    config, listener, admin_addr, pool, slot, stop_rx, published,
                ));
                // A member that gave up publishes nothing: do not wait for it.
                readiness.set_pool_complete();
            });
        if let Err(e) = spawned {
            self.readiness.set_pool_complete();
            self.slot.fail(format!("cannot start the Raft thread: {e}"));
            return;
        }
        let _ = shutdown.changed().await;
        let _ = stop_tx.send(true);
    }
}

pub(crate) fn raft_config(c: &ClusterConfig) -> Result<openraft::Config, String> {
    let ms = |d: Duration| d.as_millis() as u64;
    openraft::Config {
        cluster_name: "corral".into(),
        heartbeat_interval: ms(c.heartbeat),
        election_timeout_min: ms(c.election_timeout),
        election_timeout_max: ms(c.election_timeout) * 2,
        // Keep the log short: the pool is small, a snapshot is cheap.
        snapshot_policy: SnapshotPolicy::LogsSinceLast(500),
        max_in_snapshot_log_to_keep: 100,
        ..Default::default()
    }
    .validate()
    .map_err(|e| format!("invalid Raft settings: {e}"))
}

async fn run(
    config: ClusterConfig,
    listener: std::net::TcpListener,
    admin_addr: String,
    pool: Arc<Pool>,
    slot: Arc<ClusterSlot>,
    mut stop: watch::Receiver<bool>,
    readiness: Arc<crate::readiness::Readiness>,
) {
    let raft_config = match raft_config(&config) {
        Ok(c) => Arc::new(c),
        Err(e) => return slot.fail(e),
    };
    let store = match open_store(&config.data_dir).await {
        Ok(s) => s,
        Err(e) => {
            return slot.fail(format!(
                "cannot open Raft storage in {}: {e}",
                config.data_dir.display()
            ))
        }
    };
    let (changes, pool_rx) = watch::channel(Arc::new(PoolState::default()));
    let (log, sm) = match store.split(changes).await {
        Ok(x) => x,
        Err(e) => return slot.fail(format!("cannot read Raft storage: {e}")),
    };
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => return slot.fail(format!("cluster.listen {}: {e}", config.listen)),
    };
    let http = PeerHttp::new(config.secret.clone());
    let network = Network { http: http.clone() };
    let raft = match Raft::new(config.node_id, raft_config, network, log, sm).await {
        Ok(r) => r,
        Err(e) => return slot.fail(format!("cannot start Raft: {e}")),
    };
    let cluster = Arc::new(Cluster {
        id: config.node_id,
        raft: raft.clone(),
        rt: tokio::runtime::Handle::current(),
        http,
        secret: config.secret.clone(),
        pool: pool_rx.clone(),
    });
    let _ = slot.cluster.set(cluster.clone());
    tracing::info!(node_id = config.node_id, listen = %config.listen, "cluster member started");

    let mut stop_rpc = stop.clone();
    let timeouts = pool.load().config.timeouts.clone();
    tokio::spawn(super::rpc::serve(
        listener,
        cluster.clone(),
        timeouts,
        async move {
            let _ = stop_rpc.wait_for(|s| *s).await;
        },
    ));
    tokio::spawn(publish::run(pool, pool_rx, readiness));
    tokio::spawn(watch_metrics(raft.clone()));
    tokio::spawn(expire_leases(cluster.clone()));
    bootstrap(&raft, &config, &admin_addr).await;
    tokio::spawn(announce(cluster.clone(), admin_addr));

    let _ = stop.wait_for(|s| *s).await;
    if let Err(e) = raft.shutdown().await {
        tracing::warn!(error = %e, "raft shutdown");
    }
}

/// Opens the Raft storage; while another process holds it — the corral this one
/// upgrades, whose Raft member stops a few seconds after the hand-over — waits for it.
async fn open_store(dir: &std::path::Path) -> Result<Store, super::store::DbError> {
    const WAIT: Duration = Duration::from_secs(60);
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut said = false;
    loop {
        match Store::open(dir) {
            Err(super::store::DbError::Redb(e))
                if matches!(*e, redb::Error::DatabaseAlreadyOpen)
                    && tokio::time::Instant::now() < deadline =>
            {
                if !said {
                    tracing::info!(dir = %dir.display(), "Raft storage in use (an upgrade's old process?); waiting");
                    said = true;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => return other,
        }
    }
}

/// The lowest id initializes a brand-new group with every configured voter; on any
/// later start (its log already holds a membership) this is a no-op.
async fn bootstrap(raft: &Raft, config: &ClusterConfig, admin_addr: &str) {
    if config.node_id != config.bootstrapper() {
        return;
    }
    let members: BTreeMap<NodeId, Node> = config
        .peers
        .iter()
        .map(|(id, addr)| {
            let node = Node {
                raft_addr: addr.clone(),
                admin_addr: (*id == config.node_id).then(|| admin_addr.to_string()),
            };
            (*id, node)
        })
        .collect();
    match raft.initialize(members).await {
        Ok(()) => {
            tracing::info!(voters = ?config.peers.keys().collect::<Vec<_>>(), "cluster initialized")
        }
        Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {
            tracing::info!("cluster already initialized; rejoining from the data dir")
        }
        Err(e) => tracing::error!(error = %e, "cluster initialization failed"),
    }
}

/// Keeps this member's admin address in the membership, so that every replica's status
/// shows where each member's admin API is (the initializer only knows its own).
async fn announce(cluster: Arc<Cluster>, admin_addr: String) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let (listed, has_leader) = {
            let m = cluster.raft.metrics();
            let m = m.borrow();
            let node = m
                .membership_config
                .membership()
                .get_node(&cluster.id)
                .cloned();
            (node, m.current_leader.is_some())
        };
        let Some(node) = listed else { continue };
        if !has_leader || node.admin_addr.as_deref() == Some(admin_addr.as_str()) {
            continue;
        }
        let node = Node {
            raft_addr: node.raft_addr,
            admin_addr: Some(admin_addr.clone()),
        };
        let call = super::ops::Forward::SetNode {
            id: cluster.id,
            node,
        };
        match cluster.execute::<super::ops::MembershipChange>(call).await {
            Ok(_) => tracing::info!(admin = %admin_addr, "announced this replica's admin address"),
            Err(e) => tracing::debug!(error = %e, "cannot announce the admin address yet"),
        }
    }
}

/// Mirrors Raft's own metrics into Prometheus gauges.
async fn watch_metrics(raft: Raft) {
    let mut rx = raft.metrics();
    let mut leader = None;
    loop {
        {
            let m = rx.borrow_and_update();
            let g = metrics::get();
            g.is_leader.set((m.state == ServerState::Leader) as i64);
            g.term.set(m.current_term as i64);
            g.last_applied
                .set(m.last_applied.map_or(0, |l| l.index) as i64);
            if m.current_leader != leader {
                if m.current_leader.is_some() {
                    g.leader_changes.inc();
                    tracing::info!(leader = ?m.current_leader, term = m.current_term, "raft leader");
                }
                leader = m.current_leader;
            }
            if m.running_state.is_err() {
                g.storage_failed.set(1);
            }
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}

/// On the leader: commits the removal of leases that ended, stamped with the
/// leader's clock (applying the command never reads a clock).
async fn expire_leases(cluster: Arc<Cluster>) {
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let is_leader = cluster.raft.metrics().borrow().state == ServerState::Leader;
        if !is_leader {
            continue;
        }
        let now_ms = super::unix_ms();
        let due = cluster.pool().next_expiry().is_some_and(|t| t <= now_ms);
        if !due {
            continue;
        }
        match cluster.write(Command::ExpireLeases { now_ms }).await {
            Ok(a) => tracing::info!(expired = ?a.expired, "expired registration leases"),
            Err(e) => tracing::warn!(error = %e, "cannot expire leases"),
        }
    }
}
