//! A one-voter Raft over the real storage, in process: snapshots bound the log, and a
//! restart on the same directory keeps vote, log and pool.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use openraft::SnapshotPolicy;
use tokio::sync::watch;

use super::network::{Network, PeerHttp};
use super::pool_state::{DynamicBackend, PoolState};
use super::store::Store;
use super::types::{Command, Node, Raft};

async fn start(dir: &std::path::Path) -> (Raft, watch::Receiver<Arc<PoolState>>) {
    let config = openraft::Config {
        heartbeat_interval: 50,
        election_timeout_min: 200,
        election_timeout_max: 400,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(20),
        max_in_snapshot_log_to_keep: 5,
        purge_batch_size: 1,
        ..Default::default()
    }
    .validate()
    .unwrap();
    // After an in-process shutdown, Raft's tasks release the file a moment later.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let store = loop {
        match Store::open(dir) {
            Ok(s) => break s,
            Err(e) if std::time::Instant::now() < deadline => {
                tracing::debug!(error = %e, "store still open");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("store never released: {e}"),
        }
    };
    let (tx, rx) = watch::channel(Arc::new(PoolState::default()));
    let (log, sm) = store.split(tx).await.unwrap();
    let network = Network {
        http: PeerHttp::new(crate::secret::Secret::new("unused-secret").expect("not empty")),
    };
    let raft = Raft::new(1, Arc::new(config), network, log, sm)
        .await
        .unwrap();
    (raft, rx)
}

fn upsert(i: usize) -> Command {
    let backend = serde_json::json!({
        "name": format!("b{}", i % 7),
        "url": format!("http://127.0.0.1:{}", 1000 + i),
    });
    Command::UpsertBackend(DynamicBackend {
        backend: serde_json::from_value(backend).unwrap(),
        expires_at_ms: None,
        ttl_ms: None,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_bound_the_log_and_restart_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let (raft, rx) = start(dir.path()).await;
    let members = BTreeMap::from([(
        1,
        Node {
            raft_addr: "127.0.0.1:1".into(),
            admin_addr: None,
        },
    )]);
    raft.initialize(members).await.unwrap();
    raft.wait(Some(Duration::from_secs(10)))
        .state(openraft::ServerState::Leader, "leader")
        .await
        .unwrap();
    for i in 0..60 {
        raft.client_write(upsert(i)).await.unwrap();
    }
    let m = raft
        .wait(Some(Duration::from_secs(10)))
        .metrics(
            |m| m.snapshot.is_some_and(|s| s.index >= 40) && m.purged.is_some(),
            "snapshot and purge",
        )
        .await
        .unwrap();
    let last = m.last_log_index.unwrap();
    // Only the tail after the snapshot is kept (max_in_snapshot_log_to_keep = 5).
    assert!(m.purged.unwrap().index + 25 >= last, "{m:?}");
    let pool = rx.borrow().clone();
    assert_eq!(pool.backends.len(), 7);
    // The last write to b4 was i = 53.
    assert_eq!(
        pool.backends["b4"].backend.url.base(),
        "http://127.0.0.1:1053"
    );
    raft.shutdown().await.unwrap();
    drop(raft);

    let (raft, rx) = start(dir.path()).await;
    let m = raft
        .wait(Some(Duration::from_secs(10)))
        .metrics(
            |m| m.last_applied.is_some_and(|l| l.index >= last),
            "restart applies up to the last entry",
        )
        .await
        .unwrap();
    assert!(m.purged.is_some(), "purged log id survives a restart");
    assert_eq!(*rx.borrow().clone(), *pool);
    raft.wait(Some(Duration::from_secs(10)))
        .state(openraft::ServerState::Leader, "leader again")
        .await
        .unwrap();
    raft.client_write(upsert(60)).await.unwrap();
    raft.shutdown().await.unwrap();
}
