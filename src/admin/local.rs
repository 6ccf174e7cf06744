//! The pool writer of a single replica: changes apply to this process's pool and are
//! written to the state file, one at a time so the file always holds the latest.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::api_error::ApiError;
use crate::config::BackendConfig;
use crate::pool::writer::in_config_file;
use crate::pool::{Durability, Pool, PoolWriter, Upserted};

use super::persist;

pub(crate) struct LocalWriter {
    pool: Arc<Pool>,
    /// Serializes a change with its write to disk.
    lock: tokio::sync::Mutex<()>,
}

impl LocalWriter {
    pub(crate) fn new(pool: Arc<Pool>) -> LocalWriter {
        LocalWriter {
            pool,
            lock: tokio::sync::Mutex::new(()),
        }
    }

    /// Writes the pool's run-time state to the state file, if there is one.
    async fn persist(&self) -> Result<Durability, ApiError> {
        let Some(dir) = persist::state_dir(&self.pool.yaml_config()) else {
            return Ok(Durability::Local { persisted: false });
        };
        let state = persist::snapshot(&self.pool);
        tokio::task::spawn_blocking(move || persist::save(&dir, &state))
            .await
            .map_err(|e| ApiError::internal(format!("state file writer failed: {e}")))?
            .map_err(|e| {
                tracing::error!(error = %e, "cannot write the state file");
                ApiError::internal(format!("applied but not persisted: {e}"))
            })?;
        Ok(Durability::Local { persisted: true })
    }
}

/// Leases (ttl, heartbeat) expire by a clock every replica must agree on: they live in
/// the replicated pool, so a single replica refuses them instead of half-honouring them.
fn no_leases() -> ApiError {
    ApiError::bad_request(
        "ttl and heartbeat need the cluster (configure `cluster:`); \
         without it run-time backends stay until removed",
    )
}

#[async_trait]
impl PoolWriter for LocalWriter {
    async fn upsert(
        &self,
        backend: BackendConfig,
        lease: Option<Duration>,
    ) -> Result<Upserted, ApiError> {
        if lease.is_some() {
            return Err(no_leases());
        }
        let _guard = self.lock.lock().await;
        let ((created, changed), _) = self.pool.update_dynamic(|yaml, dynamic| {
            if yaml.backends.iter().any(|b| b.name == backend.name) {
                return Err(in_config_file(&backend.name, "change"));
            }
            Ok(match dynamic.iter_mut().find(|b| b.name == backend.name) {
                Some(existing) => {
                    let changed = *existing != backend;
                    *existing = backend;
                    (false, changed)
                }
                None => {
                    dynamic.push(backend);
                    (true, true)
                }
            })
        })?;
        let durability = self.persist().await?;
        Ok(Upserted {
            created,
            changed,
            durability,
        })
    }

    async fn remove(&self, name: &str) -> Result<Durability, ApiError> {
        let _guard = self.lock.lock().await;
        self.pool.update_dynamic(|yaml, dynamic| {
            if yaml.backends.iter().any(|b| b.name == name) {
                return Err(in_config_file(name, "remove"));
            }
            let before = dynamic.len();
            dynamic.retain(|b| b.name != name);
            if dynamic.len() == before {
                return Err(ApiError::unknown_backend(name));
            }
            Ok(())
        })?;
        self.persist().await
    }

    async fn set_draining(&self, name: &str, on: bool) -> Result<Durability, ApiError> {
        let _guard = self.lock.lock().await;
        self.pool
            .load()
            .get(name)
            .ok_or_else(|| ApiError::unknown_backend(name))?
            .state
            .set_draining(on);
        self.persist().await
    }

    async fn heartbeat(&self, name: &str, _ttl: Option<Duration>) -> Result<Option<u64>, ApiError> {
        if self.pool.load().get(name).is_none() {
            return Err(ApiError::unknown_backend(name));
        }
        Err(no_leases())
    }
}
