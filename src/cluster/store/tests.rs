use openraft::storage::RaftStateMachine;
use openraft::testing::{StoreBuilder, Suite};

use super::*;

struct Builder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for Builder {
    async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError> {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open store");
        let (tx, _rx) = watch::channel(Arc::new(PoolState::default()));
        let (log, sm) = store.split(tx).await.expect("split");
        Ok((dir, log, sm))
    }
}

#[test]
fn openraft_storage_suite() {
    Suite::test_all(Builder).expect("storage suite");
}

#[tokio::test]
async fn state_survives_reopen() {
    use crate::cluster::pool_state::DynamicBackend;
    use crate::cluster::types::Command;
    use openraft::{CommittedLeaderId, EntryPayload, LogId};
    let dir = tempfile::tempdir().unwrap();
    let (tx, _rx) = watch::channel(Arc::new(PoolState::default()));
    {
        let store = Store::open(dir.path()).unwrap();
        let (mut log, mut sm) = store.split(tx.clone()).await.unwrap();
        log.save_vote(&Vote::new(3, 2)).await.unwrap();
        let entry = Entry {
            log_id: LogId::new(CommittedLeaderId::new(3, 2), 1),
            payload: EntryPayload::Normal(Command::UpsertBackend(DynamicBackend {
                backend: serde_json::from_str(r#"{"name":"a","url":"http://127.0.0.1:1"}"#)
                    .unwrap(),
                expires_at_ms: None,
                ttl_ms: None,
            })),
        };
        sm.apply([entry]).await.unwrap();
    }
    let store = Store::open(dir.path()).unwrap();
    let (mut log, mut sm) = store.split(tx.clone()).await.unwrap();
    assert_eq!(log.read_vote().await.unwrap(), Some(Vote::new(3, 2)));
    assert_eq!(sm.applied_state().await.unwrap().0.unwrap().index, 1);
    assert!(tx.borrow().backends.contains_key("a"));
}
