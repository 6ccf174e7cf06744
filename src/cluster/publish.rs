//! Applied pool changes → the routing table. Runs beside Raft and only swaps the pool's
//! `ArcSwap` snapshot: the data plane never waits on Raft.

use std::collections::BTreeSet;
use std::sync::Arc;

use tokio::sync::watch;

use super::pool_state::PoolState;
use crate::config::BackendConfig;
use crate::pool::Pool;

/// Publishes `state` into `pool`: the replicated backends replace the run-time ones,
/// and drain flags follow the replicated set. `previously_drained` is what the last
/// call drained, so an undrain reaches backends that are still there.
pub(crate) fn apply(pool: &Pool, state: &PoolState, previously_drained: &BTreeSet<String>) {
    let backends: Vec<BackendConfig> = state.backends.values().map(|b| b.backend.clone()).collect();
    let _ = pool.update_dynamic(|_, dynamic| {
        *dynamic = backends;
        Ok::<_, std::convert::Infallible>(())
    });
    let table = pool.load();
    for b in table.backends.iter() {
        let name = b.name();
        if state.drained.contains(name) {
            b.state.set_draining(true);
        } else if previously_drained.contains(name) {
            b.state.set_draining(false);
        }
    }
}

/// Follows the state machine until it is dropped; after the first publish the pool is
/// whole for `readiness`.
pub(crate) async fn run(
    pool: Arc<Pool>,
    mut changes: watch::Receiver<Arc<PoolState>>,
    readiness: Arc<crate::readiness::Readiness>,
) {
    let mut drained = BTreeSet::new();
    loop {
        let state = changes.borrow_and_update().clone();
        apply(&pool, &state, &drained);
        if !readiness.pool_complete() {
            readiness.set_pool_complete();
            // A probe round that began before the line above does not count: start one.
            pool.changed.notify_one();
        }
        drained = state.drained.clone();
        tracing::debug!(backends = state.backends.len(), "replicated pool published");
        if changes.changed().await.is_err() {
            return;
        }
    }
}
