//! Ollama's scheduler as a router experiences it: which models are resident, how many
//! requests each can run at once (slots), what each slot still has in its prompt cache,
//! and what a cold request pays (a serialized load, maybe after evicting the
//! least-recently-used idle model).
//!
//! Lock discipline: `residency` and each model's slot table are std mutexes held only for
//! bookkeeping, never across an `.await`; waiting happens on tokio primitives (the
//! load serializer, slot semaphores, the `became_idle` notify).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use tokio::sync::{Notify, OwnedSemaphorePermit};
use tokio::time::Instant;

pub(super) use super::keep_alive::KeepAlive;
use super::slots::LoadedModel;
use super::stats::Stats;
use crate::model::ModelName;

#[derive(Debug, Clone, Copy)]
pub(super) struct SchedulerConfig {
    /// Slots per resident model (`OLLAMA_NUM_PARALLEL`).
    pub parallel: usize,
    /// Resident models at most (`OLLAMA_MAX_LOADED_MODELS`).
    pub max_loaded: usize,
    pub load_time: Duration,
}

pub(super) struct Scheduler {
    config: SchedulerConfig,
    stats: Arc<Stats>,
    residency: Mutex<Residency>,
    /// Ollama loads one model at a time; whoever holds this is the one loading.
    load_serializer: tokio::sync::Mutex<()>,
    /// Wakes a loader waiting for some resident model to go idle so it can evict it.
    became_idle: Notify,
}

#[derive(Default)]
struct Residency {
    models: HashMap<ModelName, Resident>,
    /// Logical clock for least-recently-used ordering.
    clock: u64,
}

struct Resident {
    loaded: Arc<LoadedModel>,
    /// Requests pinning the model: waiting for a slot or holding one. Only a model with
    /// none is idle, and only an idle model may be evicted or expire.
    users: usize,
    last_used: u64,
    keep_alive: KeepAlive,
    /// Set when the model goes idle; `None` while in use or when kept forever.
    expires_at: Option<Instant>,
}

/// A resident model as `/api/ps` reports it.
#[derive(Debug, Clone)]
pub(super) struct ResidentModel {
    pub name: ModelName,
    pub expires_at: SystemTime,
}

impl Residency {
    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    /// Drops idle models whose keep-alive ran out; returns how many.
    fn unload_expired(&mut self, now: Instant) -> usize {
        let before = self.models.len();
        self.models.retain(|_, resident| {
            resident.users > 0 || resident.expires_at.is_none_or(|deadline| deadline > now)
        });
        before - self.models.len()
    }

    fn least_recently_used_idle(&self) -> Option<ModelName> {
        self.models
            .iter()
            .filter(|(_, resident)| resident.users == 0)
            .min_by_key(|(_, resident)| resident.last_used)
            .map(|(name, _)| name.clone())
    }
}

/// Keeps a model resident (not idle) while held.
pub(super) struct ModelUse {
    scheduler: Arc<Scheduler>,
    name: ModelName,
    loaded: Arc<LoadedModel>,
}

impl Drop for ModelUse {
    fn drop(&mut self) {
        self.scheduler.release(&self.name, &self.loaded);
    }
}

/// One slot of a resident model, held for the length of a generation.
pub(super) struct SlotLease {
    slot: usize,
    cached_prefix: usize,
    load_duration: Duration,
    /// What the slot will have cached when the lease ends: the prompt plus whatever was
    /// generated, so the next turn of the same conversation finds it.
    cache: Vec<String>,
    // Field order matters: the slot permit goes back before the model is released, so
    // a model never looks idle while a slot of it is still taken.
    _permit: OwnedSemaphorePermit,
    model_use: ModelUse,
}

impl SlotLease {
    /// Prompt tokens this request skips thanks to the slot's cache.
    pub(super) fn cached_prefix(&self) -> usize {
        self.cached_prefix
    }

    /// Time this request spent getting the model resident (zero if it already was).
    pub(super) fn load_duration(&self) -> Duration {
        self.load_duration
    }

    /// Records a token as now present in this slot's KV cache.
    pub(super) fn remember(&mut self, token: &str) {
        self.cache.push(token.to_string());
    }
}

impl Drop for SlotLease {
    fn drop(&mut self) {
        let cache = std::mem::take(&mut self.cache);
        self.model_use.loaded.release_slot(self.slot, cache);
    }
}

impl Scheduler {
    pub(super) fn new(config: SchedulerConfig, stats: Arc<Stats>) -> Arc<Scheduler> {
        Arc::new(Scheduler {
            config: SchedulerConfig {
                parallel: config.parallel.max(1),
                max_loaded: config.max_loaded.max(1),
                load_time: config.load_time,
            },
            stats,
            residency: Mutex::new(Residency::default()),
            load_serializer: tokio::sync::Mutex::new(()),
            became_idle: Notify::new(),
        })
    }

    fn residency(&self) -> MutexGuard<'_, Residency> {
        self.residency
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn unload_expired(&self, residency: &mut Residency) {
        let unloaded = residency.unload_expired(Instant::now());
        if unloaded > 0 {
            self.stats.record_unloads(unloaded);
        }
    }

    /// Makes a model resident at startup, without load time. Returns false when
    /// `max_loaded` models are already resident.
    pub(super) fn preload(&self, name: ModelName) -> bool {
        let mut residency = self.residency();
        if residency.models.contains_key(&name) {
            return true;
        }
        if residency.models.len() >= self.config.max_loaded {
            return false;
        }
        let now = residency.tick();
        residency.models.insert(
            name,
            Resident {
                loaded: Arc::new(LoadedModel::new(self.config.parallel)),
                users: 0,
                last_used: now,
                keep_alive: KeepAlive::DEFAULT,
                expires_at: KeepAlive::DEFAULT.deadline(Instant::now()),
            },
        );
        true
    }

    /// Resident models, for `/api/ps`.
    pub(super) fn resident(&self) -> Vec<ResidentModel> {
        let mut residency = self.residency();
        self.unload_expired(&mut residency);
        let now = Instant::now();
        let wall_now = SystemTime::now();
        let far_future = Duration::from_secs(100 * 365 * 24 * 3600);
        let mut models: Vec<ResidentModel> = residency
            .models
            .iter()
            .map(|(name, resident)| {
                let remaining = match (resident.expires_at, resident.keep_alive) {
                    (Some(deadline), _) => deadline.saturating_duration_since(now),
                    (None, KeepAlive::For(keep_alive)) => keep_alive,
                    (None, KeepAlive::Forever) => far_future,
                };
                ResidentModel {
                    name: name.clone(),
                    expires_at: wall_now.checked_add(remaining).unwrap_or(wall_now),
                }
            })
            .collect();
        models.sort_by(|a, b| a.name.cmp(&b.name));
        models
    }

    /// Unloads a model as soon as it is idle (`keep_alive: 0` with an empty prompt).
    pub(super) fn expire(&self, name: &ModelName) {
        let mut residency = self.residency();
        if let Some(resident) = residency.models.get_mut(name) {
            resident.keep_alive = KeepAlive::For(Duration::ZERO);
            if resident.users == 0 {
                resident.expires_at = Some(Instant::now());
            }
        }
        self.unload_expired(&mut residency);
    }

    /// Waits for a free slot of `name` (loading the model first if needed) and claims
    /// the one whose cache shares the longest prefix with `prompt`.
    pub(super) async fn acquire(
        self: &Arc<Self>,
        name: &ModelName,
        prompt: &[String],
        keep_alive: Option<KeepAlive>,
    ) -> SlotLease {
        let (model_use, load_duration) = self.pin(name, keep_alive).await;
        let permit = Arc::clone(&model_use.loaded.free_slots)
            .acquire_owned()
            .await
            .expect("slot semaphores are never closed");
        let (slot, cached_prefix) = model_use.loaded.claim_best_slot(prompt);
        SlotLease {
            slot,
            cached_prefix,
            load_duration,
            cache: prompt.to_vec(),
            _permit: permit,
            model_use,
        }
    }

    /// Makes `name` resident and keeps it so while the returned guard lives. The
    /// duration is what this request spent waiting for the load.
    pub(super) async fn pin(
        self: &Arc<Self>,
        name: &ModelName,
        keep_alive: Option<KeepAlive>,
    ) -> (ModelUse, Duration) {
        if let Some(model_use) = self.try_pin(name, keep_alive) {
            return (model_use, Duration::ZERO);
        }
        let started = Instant::now();
        // The load runs as its own task: as in Ollama, a client that gives up does not
        // abort a load other requests may be waiting on.
        let load = tokio::spawn(Arc::clone(self).load(name.clone(), keep_alive));
        match load.await {
            Ok(model_use) => (model_use, started.elapsed()),
            Err(error) => match error.try_into_panic() {
                Ok(panic) => std::panic::resume_unwind(panic),
                // The runtime is shutting down; nothing will answer this request.
                Err(_) => std::future::pending().await,
            },
        }
    }

    fn try_pin(
        self: &Arc<Self>,
        name: &ModelName,
        keep_alive: Option<KeepAlive>,
    ) -> Option<ModelUse> {
        let mut residency = self.residency();
        self.unload_expired(&mut residency);
        let now = residency.tick();
        let resident = residency.models.get_mut(name)?;
        resident.users += 1;
        resident.last_used = now;
        resident.expires_at = None;
        if let Some(keep_alive) = keep_alive {
            resident.keep_alive = keep_alive;
        }
        Some(ModelUse {
            scheduler: Arc::clone(self),
            name: name.clone(),
            loaded: Arc::clone(&resident.loaded),
        })
    }

    async fn load(self: Arc<Self>, name: ModelName, keep_alive: Option<KeepAlive>) -> ModelUse {
        let _loading = self.load_serializer.lock().await;
        // Someone else may have loaded it while we queued for the serializer.
        if let Some(model_use) = self.try_pin(&name, keep_alive) {
            return model_use;
        }
        self.make_room().await;
        tokio::time::sleep(self.config.load_time).await;
        let loaded = Arc::new(LoadedModel::new(self.config.parallel));
        let mut residency = self.residency();
        let now = residency.tick();
        residency.models.insert(
            name.clone(),
            Resident {
                loaded: Arc::clone(&loaded),
                users: 1,
                last_used: now,
                keep_alive: keep_alive.unwrap_or(KeepAlive::DEFAULT),
                expires_at: None,
            },
        );
        drop(residency);
        self.stats.record_load();
        tracing::debug!(model = %name, "sim loaded model");
        ModelUse {
            scheduler: Arc::clone(&self),
            name,
            loaded,
        }
    }

    /// Evicts least-recently-used idle models until there is room for one more; when
    /// every resident model is busy, waits for one to go idle. Only the holder of the
    /// load serializer calls this, so nothing else can fill the room it makes.
    async fn make_room(&self) {
        loop {
            let idle = self.became_idle.notified();
            tokio::pin!(idle);
            // Registered before looking, so a model going idle in between still wakes us.
            idle.as_mut().enable();
            {
                let mut residency = self.residency();
                self.unload_expired(&mut residency);
                if residency.models.len() < self.config.max_loaded {
                    return;
                }
                if let Some(victim) = residency.least_recently_used_idle() {
                    residency.models.remove(&victim);
                    self.stats.record_eviction();
                    tracing::debug!(model = %victim, "sim evicted model");
                    continue;
                }
            }
            idle.await;
        }
    }

    fn release(&self, name: &ModelName, loaded: &Arc<LoadedModel>) {
        let mut residency = self.residency();
        let now = residency.tick();
        if let Some(resident) = residency.models.get_mut(name) {
            if Arc::ptr_eq(&resident.loaded, loaded) {
                resident.users = resident.users.saturating_sub(1);
                resident.last_used = now;
                if resident.users == 0 {
                    resident.expires_at = resident.keep_alive.deadline(Instant::now());
                }
            }
        }
        self.unload_expired(&mut residency);
        drop(residency);
        self.became_idle.notify_waiters();
    }
}

#[cfg(test)]
#[path = "scheduler_tests.rs"]
mod tests;
