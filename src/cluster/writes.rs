//! The pool writer of a cluster: backend writes validated like a single replica's and
//! committed as Raft commands (a follower passes them on to the leader; without a
//! quorum they fail with 503 `no_quorum`). Leases live here: a backend may be added
//! with a `ttl` and kept by heartbeats.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::admin::member;
use super::node::ClusterSlot;
use super::pool_state::DynamicBackend;
use super::types::Command;
use crate::api_error::ApiError;
use crate::config::BackendConfig;
use crate::pool::writer::in_config_file;
use crate::pool::{Durability, Pool, PoolWriter, Upserted};

/// Heartbeats of a lease registered without a `ttl` renew by this much.
const DEFAULT_TTL: Duration = Duration::from_secs(30);

pub(crate) struct RaftWriter {
    pub slot: Arc<ClusterSlot>,
    pub pool: Arc<Pool>,
}

impl RaftWriter {
    fn in_yaml(&self, name: &str) -> bool {
        self.pool
            .yaml_config()
            .backends
            .iter()
            .any(|b| b.name == name)
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[async_trait]
impl PoolWriter for RaftWriter {
    async fn upsert(
        &self,
        backend: BackendConfig,
        lease: Option<Duration>,
    ) -> Result<Upserted, ApiError> {
        let c = member(&self.slot)?;
        if self.in_yaml(&backend.name) {
            return Err(in_config_file(&backend.name, "change"));
        }
        let ttl_ms = lease.map(millis);
        let command = Command::UpsertBackend(DynamicBackend {
            backend,
            expires_at_ms: ttl_ms.map(|t| super::unix_ms().saturating_add(t)),
            ttl_ms,
        });
        let applied = c.write(command).await?;
        Ok(Upserted {
            created: !applied.existed,
            changed: applied.changed,
            durability: Durability::Replicated,
        })
    }

    async fn remove(&self, name: &str) -> Result<Durability, ApiError> {
        let c = member(&self.slot)?;
        if self.in_yaml(name) {
            return Err(in_config_file(name, "remove"));
        }
        if !c.pool().backends.contains_key(name) {
            return Err(ApiError::unknown_backend(name));
        }
        let name = name.to_string();
        c.write(Command::RemoveBackend { name }).await?;
        Ok(Durability::Replicated)
    }

    async fn set_draining(&self, name: &str, on: bool) -> Result<Durability, ApiError> {
        let c = member(&self.slot)?;
        if !self.in_yaml(name) && !c.pool().backends.contains_key(name) {
            return Err(ApiError::unknown_backend(name));
        }
        let name = name.to_string();
        let command = if on {
            Command::Drain { name }
        } else {
            Command::Undrain { name }
        };
        c.write(command).await?;
        Ok(Durability::Replicated)
    }

    async fn heartbeat(&self, name: &str, ttl: Option<Duration>) -> Result<Option<u64>, ApiError> {
        let c = member(&self.slot)?;
        let pool = c.pool();
        let Some(b) = pool.backends.get(name) else {
            return Err(ApiError::unknown_backend(name));
        };
        if b.expires_at_ms.is_none() {
            return Ok(None);
        }
        let ttl = ttl.map(millis).or(b.ttl_ms).unwrap_or(millis(DEFAULT_TTL));
        let expires_at_ms = super::unix_ms().saturating_add(ttl);
        let name = name.to_string();
        c.write(Command::RenewLease {
            name,
            expires_at_ms,
        })
        .await?;
        Ok(Some(expires_at_ms))
    }

    fn unready(&self) -> Option<String> {
        self.slot.failure().map(|why| format!("cluster: {why}"))
    }
}
