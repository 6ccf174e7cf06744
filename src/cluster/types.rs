//! The Raft type configuration of corral's replicated pool: node identity and
//! addresses, and the idempotent pool commands that make up the log.

use std::fmt;
use std::io::Cursor;

use serde::{Deserialize, Serialize};

use super::pool_state::DynamicBackend;

/// A replica's Raft id (`cluster.node_id`).
pub(crate) type NodeId = u64;

/// How to reach a replica: its Raft RPC address and, when known, its admin API.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    pub raft_addr: String,
    #[serde(default)]
    pub admin_addr: Option<String>,
}

impl fmt::Display for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.admin_addr {
            Some(a) => write!(f, "raft={} admin={a}", self.raft_addr),
            None => write!(f, "raft={}", self.raft_addr),
        }
    }
}

/// A pool change. Every command is keyed by backend name and idempotent: a write
/// retried after a lost answer leaves the same state. Time only enters as values in
/// the command (`expires_at_ms`, `now_ms`); applying never reads the clock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Command {
    /// Adds or replaces a backend (with its lease, if any); its fields sit at the top
    /// level of the entry.
    UpsertBackend(DynamicBackend),
    RemoveBackend {
        name: String,
    },
    Drain {
        name: String,
    },
    Undrain {
        name: String,
    },
    RenewLease {
        name: String,
        expires_at_ms: u64,
    },
    /// Removes every lease that ended at or before `now_ms` (the leader's clock).
    ExpireLeases {
        now_ms: u64,
    },
}

/// What applying one entry did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    /// The key existed before the command.
    pub existed: bool,
    /// The state changed.
    pub changed: bool,
    /// Backends removed by `ExpireLeases`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expired: Vec<String>,
}

openraft::declare_raft_types!(
    /// corral's Raft types.
    pub TypeConfig:
        D = Command,
        R = Applied,
        NodeId = NodeId,
        Node = Node,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

pub(crate) type Raft = openraft::Raft<TypeConfig>;
pub(crate) type StorageError = openraft::StorageError<NodeId>;
pub(crate) type LogId = openraft::LogId<NodeId>;
pub(crate) type Entry = openraft::Entry<TypeConfig>;
pub(crate) type StoredMembership = openraft::StoredMembership<NodeId, Node>;
pub(crate) type SnapshotMeta = openraft::SnapshotMeta<NodeId, Node>;
pub(crate) type Vote = openraft::Vote<NodeId>;
