//! Active health checking: probes every backend each `health.interval`, applies
//! hysteresis, and refreshes what each backend holds. Runs as a Pingora background
//! service so it lives on Pingora's runtime.

mod probe;

pub use probe::probe;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::future::join_all;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use crate::pool::{Backend, HealthChange, Pool};

pub struct HealthChecker {
    pool: Arc<Pool>,
    client: reqwest::Client,
    readiness: Option<Arc<crate::readiness::Readiness>>,
}

impl HealthChecker {
    /// `trust`: what `https://` backends' certificates are checked against.
    pub fn new(pool: Arc<Pool>, trust: &crate::tls::BackendTrust) -> HealthChecker {
        let client = trust
            .client_builder()
            .pool_idle_timeout(Duration::from_secs(30))
            .build()
            .unwrap_or_default();
        HealthChecker {
            pool,
            client,
            readiness: None,
        }
    }

    /// Reports the end of the first probe round to `readiness`.
    pub fn with_readiness(mut self, readiness: Arc<crate::readiness::Readiness>) -> Self {
        self.readiness = Some(readiness);
        self
    }

    /// Probes every backend of the current table once, concurrently. Each probe ends
    /// within a few `health.timeout`s, so one stuck lookup or endless body cannot hold
    /// back the round (and with it every other backend's health).
    pub async fn probe_all(&self) {
        let table = self.pool.snapshot();
        let health = &table.config.health;
        join_all(table.backends.iter().map(|b| {
            self.probe_one(
                b,
                health.timeout,
                health.healthy_threshold,
                health.unhealthy_threshold,
            )
        }))
        .await;
        // Only models some backend reported may become metric labels.
        crate::metrics::global().set_known_models(&table);
    }

    async fn probe_one(&self, backend: &Arc<Backend>, timeout: Duration, rise: u32, fall: u32) {
        let state = &backend.state;
        let sent = crate::pool::now_ms();
        let change = match probe(&self.client, &backend.config.url, timeout).await {
            Ok(p) => {
                state.addr.store(Some(Arc::new(p.addr)));
                state.apply_inventory(p.inventory, sent);
                // A box that answers probes but fails requests keeps the cause of its
                // ejection on show until the ejection ends.
                if !state.passive.is_ejected() {
                    state.last_error.store(None);
                }
                state.record_probe(true, rise, fall)
            }
            Err(e) => {
                let msg = e.to_string();
                if state.was_probed() && state.is_healthy() {
                    tracing::debug!(backend = %state.name, error = %msg, "probe failed");
                }
                state.last_error.store(Some(Arc::new(msg)));
                state.record_probe(false, rise, fall)
            }
        };
        match change {
            HealthChange::BecameHealthy => {
                tracing::info!(backend = %state.name, models = state.inventory.load().models.len(), "backend up")
            }
            HealthChange::BecameUnhealthy => tracing::warn!(
                backend = %state.name,
                error = state.last_error.load().as_deref().map_or("", |s| s.as_str()),
                "backend down"
            ),
            HealthChange::Unchanged => {}
        }
    }
}

#[async_trait]
impl BackgroundService for HealthChecker {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        loop {
            let whole_pool = self.readiness.as_ref().is_some_and(|r| r.pool_complete());
            self.probe_all().await;
            if let (true, Some(r)) = (whole_pool, &self.readiness) {
                r.set_probed();
            }
            let interval = self.pool.load().config.health.interval;
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                // A new table may hold backends nobody probed yet.
                _ = self.pool.changed.notified() => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}
