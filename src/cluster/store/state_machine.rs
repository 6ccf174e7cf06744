//! The state machine half of the store: the replicated pool applied from the log,
//! written to the same redb file after every applied batch, and its snapshots.

use std::io::Cursor;
use std::sync::Arc;

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{EntryPayload, ErrorSubject, ErrorVerb, OptionalSend, RaftSnapshotBuilder};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::{io_err, json, DbError, Store, SNAPSHOT, STATE_MACHINE};
use crate::cluster::pool_state::PoolState;
use crate::cluster::types::{
    Applied, Entry, LogId, SnapshotMeta, StorageError, StoredMembership, TypeConfig,
};

/// What the state machine persists after every applied batch.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(super) struct SmData {
    pub(super) last_applied: Option<LogId>,
    pub(super) membership: StoredMembership,
    pub(super) pool: PoolState,
}

/// The latest snapshot as stored: its metadata and the serialized pool.
#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta,
    data: Vec<u8>,
}

/// The replicated pool, applied from the log. Each change is published on `changes`.
pub(crate) struct StateMachine {
    pub(super) store: Store,
    pub(super) data: SmData,
    pub(super) changes: watch::Sender<Arc<PoolState>>,
}

impl StateMachine {
    async fn persist(&self, snapshot: Option<&StoredSnapshot>) -> Result<(), DbError> {
        let mut records = vec![(STATE_MACHINE, json(&self.data)?)];
        if let Some(s) = snapshot {
            records.push((SNAPSHOT, json(s)?));
        }
        self.store.put(records).await
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        Ok((self.data.last_applied, self.data.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Applied>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut out = Vec::new();
        let mut pool_changed = false;
        for entry in entries {
            self.data.last_applied = Some(entry.log_id);
            match entry.payload {
                EntryPayload::Blank => out.push(Applied::default()),
                EntryPayload::Normal(cmd) => {
                    let r = self.data.pool.apply(&cmd);
                    pool_changed |= r.changed;
                    out.push(r);
                }
                EntryPayload::Membership(m) => {
                    self.data.membership = StoredMembership::new(Some(entry.log_id), m);
                    out.push(Applied::default());
                }
            }
        }
        self.persist(None)
            .await
            .map_err(|e| io_err(ErrorSubject::StateMachine, ErrorVerb::Write, e))?;
        if pool_changed {
            self.changes.send_replace(Arc::new(self.data.pool.clone()));
        }
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder {
            store: self.store.clone(),
            data: self.data.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let bytes = snapshot.into_inner();
        let pool: PoolState = serde_json::from_slice(&bytes).map_err(|e| {
            io_err(
                ErrorSubject::Snapshot(Some(meta.signature())),
                ErrorVerb::Read,
                e.into(),
            )
        })?;
        self.data = SmData {
            last_applied: meta.last_log_id,
            membership: meta.last_membership.clone(),
            pool,
        };
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data: bytes,
        };
        self.persist(Some(&stored)).await.map_err(|e| {
            io_err(
                ErrorSubject::Snapshot(Some(meta.signature())),
                ErrorVerb::Write,
                e,
            )
        })?;
        self.changes.send_replace(Arc::new(self.data.pool.clone()));
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let stored: Option<StoredSnapshot> = self
            .store
            .get(SNAPSHOT)
            .await
            .map_err(|e| io_err(ErrorSubject::Snapshot(None), ErrorVerb::Read, e))?;
        Ok(stored.map(|s| Snapshot {
            meta: s.meta,
            snapshot: Box::new(Cursor::new(s.data)),
        }))
    }
}

/// Builds a snapshot of the state machine as it was when the builder was made.
pub(crate) struct SnapshotBuilder {
    store: Store,
    data: SmData,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let write = |e| io_err(ErrorSubject::Snapshot(None), ErrorVerb::Write, e);
        let bytes = json(&self.data.pool).map_err(write)?;
        let nonce = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let snapshot_id = match &self.data.last_applied {
            Some(l) => format!("{}-{}-{nonce}", l.leader_id.term, l.index),
            None => format!("0-0-{nonce}"),
        };
        let meta = SnapshotMeta {
            last_log_id: self.data.last_applied,
            last_membership: self.data.membership.clone(),
            snapshot_id,
        };
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data: bytes.clone(),
        };
        self.store
            .put(vec![(SNAPSHOT, json(&stored).map_err(write)?)])
            .await
            .map_err(write)?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(bytes)),
        })
    }
}
