//! The replicated backend pool: an openraft group across corral replicas. `types`
//! declares the Raft types and pool commands, `pool_state` applies them, `store`
//! persists log, vote and state machine in redb.

pub mod pool_state;
pub mod store;
pub mod types;

pub use pool_state::{DynamicBackend, PoolState};
pub use types::{Applied, Command, Node, NodeId, TypeConfig};
