//! The placement loop: a few times a second it samples each model's demand and, with
//! `routing.prewarm` on, loads a model ahead of need on an idle box when the model's
//! demand exceeds the slots of the boxes that hold it. Ollama loads a model when it
//! receives a `/api/generate` with no prompt. Only idle boxes are used — never one
//! that is serving — and only where the eviction is cheap by the same rule requests
//! follow, so prewarming cannot start the load cascades it exists to prevent.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use crate::config::Strategy;
use crate::model::ModelName;
use crate::pool::{Backend, Pool, RoutingTable};

use super::demand::{DemandTable, IDLE};
use super::placement::{eviction_cost, resident_slots, wants_another_box};
use super::AdmissionQueue;

const TICK: Duration = Duration::from_millis(250);

pub struct Prewarm {
    pool: Arc<Pool>,
    queue: Arc<AdmissionQueue>,
    demand: Arc<DemandTable>,
    client: reqwest::Client,
    /// Boxes with a prewarm load under way: one at a time each.
    loading: Arc<Mutex<HashSet<String>>>,
}

impl Prewarm {
    pub fn new(
        pool: Arc<Pool>,
        queue: Arc<AdmissionQueue>,
        demand: Arc<DemandTable>,
        trust: &crate::tls::BackendTrust,
    ) -> Prewarm {
        let client = trust
            .client_builder()
            .no_proxy()
            .pool_idle_timeout(Duration::from_secs(30))
            .build()
            .unwrap_or_default();
        Prewarm {
            pool,
            queue,
            demand,
            client,
            loading: Arc::new(Mutex::new(HashSet::new())),
        }
    }

    fn tick(&self, dt: Duration) {
        let table = self.pool.snapshot();
        self.demand
            .sample(&table, &self.queue.waiting_by_model(), dt);
        let routing = &table.config.routing;
        if !routing.prewarm || routing.strategy != Strategy::Affinity {
            return;
        }
        for (model, demand) in self.demand.all() {
            let slots = resident_slots(&table, &model);
            let short = if slots == 0 {
                demand.now > 0 || demand.average >= IDLE
            } else {
                wants_another_box(demand.slots(), slots)
            };
            if !short {
                continue;
            }
            if let Some(b) = self.idle_box_for(&table, &model) {
                self.start(&table, b, model);
            }
        }
    }

    /// An idle box that has `model` on disk, not in memory, and can spare the room.
    fn idle_box_for<'t>(
        &self,
        table: &'t RoutingTable,
        model: &ModelName,
    ) -> Option<&'t Arc<Backend>> {
        let loading = self.loading.lock().unwrap_or_else(PoisonError::into_inner);
        table
            .backends
            .iter()
            .filter(|b| {
                b.is_available()
                    && b.state.in_flight() == 0
                    && b.state.has_model(model)
                    && !b.state.has_resident(model)
                    && !loading.contains(b.name())
            })
            .map(|b| (b, eviction_cost(table, &self.demand, b)))
            .filter(|(_, cost)| cost.is_cheap())
            .min_by(|a, b| {
                a.1.partial_cmp(&b.1)
                    .unwrap_or(std::cmp::Ordering::Equal)
                    .then_with(|| a.0.name().cmp(b.0.name()))
            })
            .map(|(b, _)| b)
    }

    fn start(&self, table: &RoutingTable, backend: &Arc<Backend>, model: ModelName) {
        let Some(addr) = backend.state.addr.load_full() else {
            return;
        };
        let name = backend.name().to_string();
        self.loading
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(name.clone());
        // The belief changes now: requests for the model may follow it here at once.
        let hold = backend.state.residency.use_model(&model);
        tracing::info!(backend = %name, model = %model, evicts = ?hold.evicts, "prewarming");
        let request = self
            .client
            .post(backend.config.url.request_url(*addr, "/api/generate"))
            .header("Host", backend.config.url.authority.as_str())
            .timeout(table.config.timeouts.first_byte)
            .json(&serde_json::json!({ "model": model.as_str() }));
        let loading = self.loading.clone();
        tokio::spawn(async move {
            let result = match request.send().await {
                Ok(r) if r.status().is_success() => Ok(()),
                Ok(r) => Err(format!("status {}", r.status())),
                Err(e) => Err(e.to_string()),
            };
            drop(hold);
            match result {
                Ok(()) => crate::metrics::global().model_prewarmed(&name),
                Err(e) => {
                    tracing::warn!(backend = %name, model = %model, error = %e, "prewarm failed")
                }
            }
            loading
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&name);
        });
    }
}

#[async_trait]
impl BackgroundService for Prewarm {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut last = Instant::now();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(TICK) => {}
                _ = shutdown.changed() => return,
            }
            let now = Instant::now();
            self.tick(now - last);
            last = now;
        }
    }
}
