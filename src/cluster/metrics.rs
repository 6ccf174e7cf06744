//! Raft metrics: leadership, term, last applied index, leader changes, peer RPC errors
//! and refused (unauthenticated) RPCs. Registered into corral's one registry when the
//! cluster starts.

use std::sync::LazyLock;

use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};

pub(crate) struct RaftMetrics {
    pub is_leader: IntGauge,
    pub term: IntGauge,
    pub last_applied: IntGauge,
    pub leader_changes: IntCounter,
    pub rpc_errors: IntCounterVec,
    pub rpc_refused: IntCounter,
    pub storage_failed: IntGauge,
}

fn global() -> &'static RaftMetrics {
    static M: LazyLock<RaftMetrics> = LazyLock::new(|| RaftMetrics {
        is_leader: IntGauge::new("corral_raft_is_leader", "1 while this replica leads")
            .expect("metric"),
        term: IntGauge::new("corral_raft_term", "Current Raft term").expect("metric"),
        last_applied: IntGauge::new(
            "corral_raft_last_applied_index",
            "Index of the last log entry applied to the pool",
        )
        .expect("metric"),
        leader_changes: IntCounter::new(
            "corral_raft_leader_changes_total",
            "Times this replica saw the leader change",
        )
        .expect("metric"),
        rpc_errors: IntCounterVec::new(
            Opts::new(
                "corral_raft_rpc_errors_total",
                "Outgoing peer RPCs that failed (unreachable, timeout, bad answer)",
            ),
            &["rpc"],
        )
        .expect("metric"),
        rpc_refused: IntCounter::new(
            "corral_raft_rpc_refused_total",
            "Incoming peer RPCs refused for a missing or wrong cluster secret",
        )
        .expect("metric"),
        storage_failed: IntGauge::new(
            "corral_raft_storage_failed",
            "1 once a storage error stopped this replica's Raft",
        )
        .expect("metric"),
    });
    &M
}

pub(crate) fn get() -> &'static RaftMetrics {
    global()
}

/// Adds the Raft metrics to `registry` (once per registry).
pub(crate) fn register(registry: &Registry) {
    let m = global();
    let all: [Box<dyn prometheus::core::Collector>; 7] = [
        Box::new(m.is_leader.clone()),
        Box::new(m.term.clone()),
        Box::new(m.last_applied.clone()),
        Box::new(m.leader_changes.clone()),
        Box::new(m.rpc_errors.clone()),
        Box::new(m.rpc_refused.clone()),
        Box::new(m.storage_failed.clone()),
    ];
    for c in all {
        if let Err(e) = registry.register(c) {
            tracing::debug!(error = %e, "raft metric not registered");
        }
    }
}

pub(crate) fn rpc_error(path: &str) {
    let rpc = path.rsplit('/').next().unwrap_or("other");
    global().rpc_errors.with_label_values(&[rpc]).inc();
}
