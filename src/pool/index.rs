//! A per-model index of one routing table: which backends list each model and which
//! hold it resident, so a request looks only at boxes that can serve it.
//!
//! Inventory and residency change between table rebuilds (probes, loads corral starts),
//! so every such change bumps one process-wide generation, and the first pick that sees
//! a newer generation than its table's index rebuilds the index and publishes it with
//! `ArcSwap`: no lock, and two racing rebuilds build the same thing. One counter for
//! the process rather than one per pool: a process has one pool (tests have several, and
//! then only rebuild more often). Health and load are not indexed: they change per
//! request and are read live from the backend's atomics.
//!
//! A rebuild costs about 0.4 µs per backend. Up to `SYNC_REBUILD_MAX` backends the
//! index is rebuilt on every change, so it is always current. A larger fleet rebuilds
//! at most once per `REBUILD_EVERY_MS` and reads a stale index in between: callers
//! check what they take from it against the live state (`is_current`), so a stale index
//! can only miss a box that gained a model in the last few milliseconds.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use xxhash_rust::xxh3::{xxh3_64, Xxh3Builder};

use crate::model::ModelName;

use super::passive::now_ms;
use super::table::Backend;

/// Fleets up to this size rebuild their index on every change (at most ~0.4 ms).
const SYNC_REBUILD_MAX: usize = 1024;

/// How often a larger fleet's index may be rebuilt: bounds the rebuild's share of the
/// request path to a few percent of a core however fast inventory changes.
const REBUILD_EVERY_MS: u64 = 100;

/// Starts above the empty index's 0, so a new table's index is built on first use.
static GENERATION: AtomicU64 = AtomicU64::new(1);

/// Some backend's inventory or residency changed: indexes built before are stale.
pub(crate) fn inventory_changed() {
    GENERATION.fetch_add(1, Ordering::Release);
}

fn generation() -> u64 {
    GENERATION.load(Ordering::Acquire)
}

/// One backend in a model's list. `backend` indexes the table's `backends`.
#[derive(Debug, Clone, Copy)]
pub struct Member {
    pub backend: u32,
    pub resident: bool,
}

/// A backend's place on a model's hash ring: the ring orders boxes by a hash of their
/// name, so the same key finds the same neighbours on every replica and removing a box
/// moves only the keys next to it.
#[derive(Debug, Clone, Copy)]
pub struct RingSlot {
    pub point: u64,
    pub backend: u32,
}

/// A list of backends with the running total of their weights, for a weighted round
/// robin by binary search.
#[derive(Debug, Default)]
pub struct Members {
    pub list: Vec<Member>,
    /// `weight_ends[i]`: the sum of the weights of `list[..=i]`.
    pub weight_ends: Vec<u64>,
}

impl Members {
    fn push(&mut self, backend: u32, resident: bool, weight: u64) {
        let end = self.weight_ends.last().copied().unwrap_or(0) + weight;
        self.list.push(Member { backend, resident });
        self.weight_ends.push(end);
    }
}

#[derive(Debug, Default)]
pub struct ModelEntry {
    /// Backends that list the model, in table order.
    pub listed: Members,
    /// Of those, the ones holding it resident, by ring point.
    pub resident_ring: Vec<RingSlot>,
    /// Of those, the ones that would have to load it, by ring point.
    pub cold_ring: Vec<RingSlot>,
    /// Every backend believed to hold it resident, listed or not, in table order: the
    /// slots the model keeps when one of its boxes is taken.
    pub held: Vec<u32>,
}

#[derive(Debug, Default)]
pub struct ModelIndex {
    generation: u64,
    /// When it was built (`now_ms`).
    built_ms: u64,
    models: HashMap<ModelName, ModelEntry, Xxh3Builder>,
    /// Every backend, in table order.
    pub all: Members,
    /// Every backend, lowest name first.
    pub by_name: Vec<u32>,
}

impl ModelIndex {
    pub fn model(&self, model: &ModelName) -> Option<&ModelEntry> {
        self.models.get(model)
    }

    /// No inventory or residency changed since it was built: what it says is what a
    /// scan of the backends would find now.
    pub fn is_current(&self) -> bool {
        self.generation == generation()
    }

    fn build(backends: &[Arc<Backend>], generation: u64) -> ModelIndex {
        let mut index = ModelIndex {
            generation,
            built_ms: now_ms(),
            ..Default::default()
        };
        for (i, b) in backends.iter().enumerate() {
            let i = i as u32;
            let weight = b.config.weight as u64;
            let point = xxh3_64(b.name().as_bytes());
            let slot = RingSlot { point, backend: i };
            index.all.push(i, false, weight);
            let residency = &b.state.residency;
            for m in &b.state.inventory.load().models {
                let entry = entry(&mut index.models, m);
                let is_resident = residency.contains(m);
                entry.listed.push(i, is_resident, weight);
                let ring = if is_resident {
                    &mut entry.resident_ring
                } else {
                    &mut entry.cold_ring
                };
                ring.push(slot);
            }
            residency.each_model(|m| entry(&mut index.models, m).held.push(i));
        }
        for entry in index.models.values_mut() {
            entry.resident_ring.sort_by_key(|s| s.point);
            entry.cold_ring.sort_by_key(|s| s.point);
        }
        index.by_name = (0..backends.len() as u32).collect();
        index
            .by_name
            .sort_by(|&a, &b| backends[a as usize].name().cmp(backends[b as usize].name()));
        index
    }
}

/// `model`'s entry, cloning its name only the first time.
fn entry<'m>(
    models: &'m mut HashMap<ModelName, ModelEntry, Xxh3Builder>,
    model: &ModelName,
) -> &'m mut ModelEntry {
    if !models.contains_key(model) {
        models.insert(model.clone(), ModelEntry::default());
    }
    models.get_mut(model).expect("inserted above")
}

/// The table's index, rebuilt first if inventory or residency changed since it was.
pub(super) fn current(
    cell: &arc_swap::ArcSwap<ModelIndex>,
    backends: &[Arc<Backend>],
) -> arc_swap::Guard<Arc<ModelIndex>> {
    let now = generation();
    let index = cell.load();
    if index.generation == now {
        return index;
    }
    let ever_built = index.generation != 0;
    if ever_built
        && backends.len() > SYNC_REBUILD_MAX
        && now_ms().saturating_sub(index.built_ms) < REBUILD_EVERY_MS
    {
        return index;
    }
    drop(index);
    let built = Arc::new(ModelIndex::build(backends, now));
    cell.store(built.clone());
    arc_swap::Guard::from_inner(built)
}
