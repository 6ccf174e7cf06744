//! Changes to run-time backends and drain flags behind one interface, so the admin API
//! has one set of handlers: a single replica applies them here and keeps them in the
//! state file; a cluster commits them through Raft.

use std::time::Duration;

use async_trait::async_trait;

use crate::api_error::ApiError;
use crate::config::BackendConfig;

/// Where a pool change went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Applied on this replica; whether the state file holds it.
    Local { persisted: bool },
    /// Committed through Raft: every replica applies it.
    Replicated,
}

/// What adding (or replacing) a run-time backend did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Upserted {
    /// No backend of that name existed before.
    pub created: bool,
    /// The stored backend differs from before (a retried call changes nothing).
    pub changed: bool,
    pub durability: Durability,
}

#[async_trait]
pub trait PoolWriter: Send + Sync {
    /// Adds a run-time backend or replaces one added earlier (idempotent). A `lease`
    /// makes it leave the pool unless heartbeats renew it.
    async fn upsert(
        &self,
        backend: BackendConfig,
        lease: Option<Duration>,
    ) -> Result<Upserted, ApiError>;

    /// Removes a run-time backend; backends of the config file are refused.
    async fn remove(&self, name: &str) -> Result<Durability, ApiError>;

    /// Drains (no new requests) or undrains any backend.
    async fn set_draining(&self, name: &str, on: bool) -> Result<Durability, ApiError>;

    /// Renews a backend's lease by `ttl` (else its own lease length); the new lease end
    /// in Unix ms, or `None` when the backend holds no lease.
    async fn heartbeat(&self, name: &str, ttl: Option<Duration>) -> Result<Option<u64>, ApiError>;

    /// Why this replica is not ready, when the writer's own machinery failed.
    fn unready(&self) -> Option<String> {
        None
    }
}

/// The refusal of a change to a backend the config file defines (`action`: what the
/// operator should do there instead).
pub fn in_config_file(name: &str, action: &str) -> ApiError {
    ApiError::conflict(format!(
        "backend '{name}' is defined in the config file; {action} it there"
    ))
}
