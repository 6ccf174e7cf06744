//! Crash-safe Raft storage in one redb file under `cluster.data_dir`: the log, the
//! vote, the committed index, the state machine and its latest snapshot.
//!
//! Every write is a redb transaction committed with fsync before it is acknowledged
//! (the `LogFlushed` callback runs after the commit). All disk work runs under
//! `spawn_blocking`, never on the Raft core task.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{AnyError, ErrorSubject, ErrorVerb, OptionalSend, RaftLogReader, StorageIOError};
use redb::{Database, ReadableTable, TableDefinition};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::watch;

use super::pool_state::PoolState;
use super::types::{Entry, LogId, StorageError, TypeConfig, Vote};

const LOGS: TableDefinition<u64, &[u8]> = TableDefinition::new("logs");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

const VOTE: &str = "vote";
const COMMITTED: &str = "committed";
const LAST_PURGED: &str = "last_purged";
const STATE_MACHINE: &str = "state_machine";
const SNAPSHOT: &str = "snapshot";

/// The storage file's name inside `data_dir`.
pub(crate) const FILE: &str = "raft.redb";

#[derive(Debug, thiserror::Error)]
pub(crate) enum DbError {
    #[error("redb: {0}")]
    Redb(Box<redb::Error>),
    #[error("corrupt record: {0}")]
    Decode(#[from] serde_json::Error),
    #[error("storage task failed: {0}")]
    Join(String),
}

macro_rules! redb_from {
    ($($t:ty),*) => {$(
        impl From<$t> for DbError {
            fn from(e: $t) -> Self {
                DbError::Redb(Box::new(e.into()))
            }
        }
    )*};
}
redb_from!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

fn io_err(subject: ErrorSubject<u64>, verb: ErrorVerb, e: DbError) -> StorageError {
    StorageIOError::new(subject, verb, AnyError::new(&e)).into()
}

/// The shared database handle.
#[derive(Clone)]
pub(crate) struct Store {
    db: Arc<Database>,
}

impl Store {
    /// Opens (or creates) the storage file in `dir`.
    pub(crate) fn open(dir: &Path) -> Result<Store, DbError> {
        std::fs::create_dir_all(dir).map_err(|e| DbError::Redb(Box::new(redb::Error::Io(e))))?;
        let db = Database::create(dir.join(FILE))?;
        let txn = db.begin_write()?;
        txn.open_table(LOGS)?;
        txn.open_table(META)?;
        txn.commit()?;
        Ok(Store { db: Arc::new(db) })
    }

    /// The log store and the state machine over this file.
    pub(crate) async fn split(
        &self,
        changes: watch::Sender<Arc<PoolState>>,
    ) -> Result<(LogStore, StateMachine), DbError> {
        let data: SmData = self.get(STATE_MACHINE).await?.unwrap_or_default();
        changes.send_replace(Arc::new(data.pool.clone()));
        Ok((
            LogStore {
                store: self.clone(),
            },
            StateMachine {
                store: self.clone(),
                data,
                changes,
            },
        ))
    }

    async fn blocking<T, F>(&self, f: F) -> Result<T, DbError>
    where
        T: Send + 'static,
        F: FnOnce(&Database) -> Result<T, DbError> + Send + 'static,
    {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || f(&db))
            .await
            .map_err(|e| DbError::Join(e.to_string()))?
    }

    async fn get<T: DeserializeOwned + Send + 'static>(
        &self,
        key: &'static str,
    ) -> Result<Option<T>, DbError> {
        self.blocking(move |db| {
            let txn = db.begin_read()?;
            let table = txn.open_table(META)?;
            match table.get(key)? {
                Some(v) => Ok(Some(serde_json::from_slice(v.value())?)),
                None => Ok(None),
            }
        })
        .await
    }

    /// Writes meta records in one fsync'd transaction.
    async fn put(&self, records: Vec<(&'static str, Vec<u8>)>) -> Result<(), DbError> {
        self.blocking(move |db| {
            let txn = db.begin_write()?;
            {
                let mut table = txn.open_table(META)?;
                for (k, v) in &records {
                    table.insert(*k, v.as_slice())?;
                }
            }
            txn.commit()?;
            Ok(())
        })
        .await
    }
}

fn json<T: Serialize>(v: &T) -> Result<Vec<u8>, DbError> {
    Ok(serde_json::to_vec(v)?)
}

/// The Raft log, vote and committed index.
#[derive(Clone)]
pub(crate) struct LogStore {
    store: Store,
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let bounds: (Bound<u64>, Bound<u64>) =
            (range.start_bound().cloned(), range.end_bound().cloned());
        self.store
            .blocking(move |db| {
                let txn = db.begin_read()?;
                let table = txn.open_table(LOGS)?;
                let mut out = Vec::new();
                for item in table.range::<u64>(bounds)? {
                    let (_, v) = item?;
                    out.push(serde_json::from_slice::<Entry>(v.value())?);
                }
                Ok(out)
            })
            .await
            .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Read, e))
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let read = |e| io_err(ErrorSubject::Logs, ErrorVerb::Read, e);
        let last_purged: Option<LogId> = self.store.get(LAST_PURGED).await.map_err(read)?;
        let last: Option<Entry> = self
            .store
            .blocking(|db| {
                let txn = db.begin_read()?;
                let table = txn.open_table(LOGS)?;
                let last = match table.last()? {
                    Some((_, v)) => Some(serde_json::from_slice(v.value())?),
                    None => None,
                };
                Ok(last)
            })
            .await
            .map_err(read)?;
        let last_log_id = last.map(|e| e.log_id).or(last_purged);
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        let write = |e| io_err(ErrorSubject::Vote, ErrorVerb::Write, e);
        self.store
            .put(vec![(VOTE, json(vote).map_err(write)?)])
            .await
            .map_err(write)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        self.store
            .get(VOTE)
            .await
            .map_err(|e| io_err(ErrorSubject::Vote, ErrorVerb::Read, e))
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        let write = |e| io_err(ErrorSubject::Store, ErrorVerb::Write, e);
        self.store
            .put(vec![(COMMITTED, json(&committed).map_err(write)?)])
            .await
            .map_err(write)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        let c: Option<Option<LogId>> = self
            .store
            .get(COMMITTED)
            .await
            .map_err(|e| io_err(ErrorSubject::Store, ErrorVerb::Read, e))?;
        Ok(c.flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let write = |e| io_err(ErrorSubject::Logs, ErrorVerb::Write, e);
        let mut rows = Vec::new();
        for e in entries {
            rows.push((e.log_id.index, json(&e).map_err(write)?));
        }
        let result = self
            .store
            .blocking(move |db| {
                let txn = db.begin_write()?;
                {
                    let mut table = txn.open_table(LOGS)?;
                    for (index, bytes) in &rows {
                        table.insert(*index, bytes.as_slice())?;
                    }
                }
                // Durable (fsync) before Raft hears that the entries are stored.
                txn.commit()?;
                Ok(())
            })
            .await;
        match result {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
                Err(write(e))
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let from = log_id.index;
        self.store
            .blocking(move |db| {
                let txn = db.begin_write()?;
                {
                    let mut table = txn.open_table(LOGS)?;
                    table.retain_in(from.., |_, _| false)?;
                }
                txn.commit()?;
                Ok(())
            })
            .await
            .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Delete, e))
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let delete = |e| io_err(ErrorSubject::Logs, ErrorVerb::Delete, e);
        let purged = json(&log_id).map_err(delete)?;
        let upto = log_id.index;
        self.store
            .blocking(move |db| {
                let txn = db.begin_write()?;
                {
                    let mut meta = txn.open_table(META)?;
                    meta.insert(LAST_PURGED, purged.as_slice())?;
                    let mut table = txn.open_table(LOGS)?;
                    table.retain_in(..=upto, |_, _| false)?;
                }
                txn.commit()?;
                Ok(())
            })
            .await
            .map_err(delete)
    }
}

mod state_machine;

use state_machine::SmData;
pub(crate) use state_machine::StateMachine;

#[cfg(test)]
mod tests;
