//! Routing in fleets too large to look at every candidate: above `SMALL_SET` candidates
//! a request looks at a bounded sample of them, found through the table's model index,
//! and the usual strategy chooses within it. The work is then O(log n) in backends
//! (a binary search on a hash ring) instead of O(n).
//!
//! - Keyed affinity requests sample the key's window on the model's hash ring: the
//!   resident boxes that follow the key's point. The same key finds the same window
//!   on every replica, and removing a box moves only the keys of its neighbours.
//!   Rendezvous hashing with bounded loads then chooses within the window.
//! - Keyless requests sample a window starting at a point that moves with every
//!   request, and take the least loaded in it (the power of d choices).
//! - Resident boxes come first: a window is widened (up to `WALK_CAP` boxes) until it
//!   holds a resident box with a free slot, and cold boxes are sampled only when none
//!   is found — so a sample does not cause a cold load while the boxes around the key
//!   have room.
//! - Placement's fleet-wide figures (the model's resident slots, its requests in
//!   flight) are estimated from the sample, scaled by how many boxes it stands for.
//!   Per-model aggregates kept up to date would be exact but would need a write on
//!   every request's start and end; the estimate is only read when every sampled
//!   resident box is full, and the decision it feeds has a 25 % hysteresis margin.
//! - Weighted round robin finds its turn's box by binary search over running weight
//!   totals; `Pinned` walks the names in order to the first usable box (exact).

use crate::model::ModelName;
use crate::pool::{Backend, Member, Members, ModelEntry, RingSlot, RoutingTable};

use super::candidates::{candidate, Candidate, NoRoute};
use super::{Need, Pick, RouteReason, RouteRequest, Router};
use crate::config::Strategy;

use std::sync::atomic::Ordering;
use xxhash_rust::xxh3::xxh3_64;

/// Candidate sets up to this size are routed exactly as before the index existed:
/// every candidate is looked at. Every fleet of the routing benchmark matrix
/// (benches/routing/scenarios.rs: at most 5 boxes) and of the product's target (2–50
/// boxes) is below it, so their routing is the one that matrix measured.
pub(super) const SMALL_SET: usize = 64;

/// How many usable candidates a large set is sampled down to.
pub(super) const SAMPLE: usize = 8;

/// How far a window is widened looking for a free slot.
const WALK_CAP: usize = 8 * SAMPLE;

/// A sample of a large candidate set.
struct Sample<'a> {
    found: Vec<Candidate<'a>>,
    /// How many candidates each sampled resident box stands for.
    scale: f64,
}

impl Router {
    /// The pick for a large candidate set, or `None` when the set is small and is
    /// routed exactly.
    pub(super) fn pick_large(
        &self,
        table: &RoutingTable,
        req: &RouteRequest,
        tried: &[String],
    ) -> Option<Result<Pick, NoRoute>> {
        let index = table.index();
        let mut walker = Walker {
            table,
            tried,
            stale: None,
        };
        match &req.need {
            Need::Model(model) => {
                let entry = index.model(model)?;
                if !index.is_current() {
                    walker.stale = Some(model);
                }
                if entry.listed.list.len() <= SMALL_SET {
                    return None;
                }
                let turn = self.rotation.fetch_add(1, Ordering::Relaxed);
                Some(self.decide_sampled(table, req, turn, |usable| {
                    walker.model(table, entry, req, turn, usable)
                }))
            }
            Need::Any if index.all.list.len() > SMALL_SET => {
                let turn = self.rotation.fetch_add(1, Ordering::Relaxed);
                Some(self.decide_sampled(table, req, turn, |usable| {
                    walker.spread(table, &index.all, turn, usable)
                }))
            }
            Need::Pinned if index.all.list.len() > SMALL_SET => {
                // Lowest name among usable backends, as for a small fleet.
                let first = |usable: &dyn Fn(&Backend) -> bool| {
                    let mut found = Vec::new();
                    let member = |i: usize| Member {
                        backend: index.by_name[i],
                        resident: false,
                    };
                    walker.walk(index.by_name.len(), 0, member, usable, 1, &mut found);
                    found.into_iter().next()
                };
                let pick = match first(&Backend::is_available) {
                    Some(c) => Ok(super::pick(&c, RouteReason::Pinned, false)),
                    None => first(&panic_usable)
                        .map(|c| super::pick(&c, RouteReason::Pinned, true))
                        .ok_or(NoRoute::NoHealthy),
                };
                Some(pick)
            }
            _ => None,
        }
    }

    /// Samples with routable backends, or with ejected ones when there are none
    /// ("panic mode", as for a small set), and lets the strategy choose.
    fn decide_sampled<'a>(
        &self,
        table: &RoutingTable,
        req: &RouteRequest,
        turn: usize,
        sample: impl Fn(&dyn Fn(&Backend) -> bool) -> Sample<'a>,
    ) -> Result<Pick, NoRoute> {
        let mut panic = false;
        let mut s = sample(&Backend::is_available);
        if s.found.is_empty() {
            panic = true;
            s = sample(&panic_usable);
        }
        if s.found.is_empty() {
            return Err(NoRoute::NoHealthy);
        }
        self.decide(table, &s.found, panic, req, turn, s.scale)
    }
}

/// Usable in panic mode: probed healthy and not draining, ejected or not.
fn panic_usable(b: &Backend) -> bool {
    b.state.is_healthy() && !b.state.is_draining()
}

/// A point on the ring that moves with every request.
fn spread(turn: usize) -> u64 {
    (turn as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

struct Walker<'t> {
    table: &'t RoutingTable,
    tried: &'t [String],
    /// The model, when the index is stale (a large fleet between rebuilds): what it
    /// lists is checked against the live inventory and residency.
    stale: Option<&'t ModelName>,
}

impl<'t> Walker<'t> {
    /// Takes usable, untried backends from `len` members in order from `start`
    /// (wrapping): `want` of them, more while none has a free slot and fewer than
    /// `WALK_CAP` were looked at — and however far it takes to find one at all.
    /// Returns how many members were looked at.
    fn walk(
        &self,
        len: usize,
        start: usize,
        member: impl Fn(usize) -> Member,
        usable: &dyn Fn(&Backend) -> bool,
        want: usize,
        out: &mut Vec<Candidate<'t>>,
    ) -> usize {
        let taken_before = out.len();
        let mut free = false;
        let mut visited = 0;
        while visited < len {
            let m = member((start + visited) % len);
            visited += 1;
            let b = &self.table.backends[m.backend as usize];
            let live = match self.stale {
                Some(model) if !b.state.has_model(model) => None,
                Some(model) => Some(b.state.has_resident(model)),
                None => Some(m.resident),
            };
            let untried = !self.tried.iter().any(|t| t == b.name());
            if let Some(resident) = live.filter(|_| usable(b) && untried) {
                let c = Candidate {
                    resident,
                    ..candidate(b, None)
                };
                free |= c.has_free_slot();
                out.push(c);
            }
            let taken = out.len() - taken_before;
            if taken >= want && (free || visited >= WALK_CAP) {
                break;
            }
            if taken > 0 && visited >= WALK_CAP {
                break;
            }
        }
        visited
    }

    /// A window of `members` at a moving point, or the box whose turn it is for a
    /// weighted round robin.
    fn spread(
        &self,
        table: &RoutingTable,
        members: &Members,
        turn: usize,
        usable: &dyn Fn(&Backend) -> bool,
    ) -> Sample<'t> {
        let len = members.list.len();
        let mut found = Vec::with_capacity(SAMPLE);
        let member = |i: usize| members.list[i];
        if table.config.routing.strategy == Strategy::RoundRobin {
            let total = members.weight_ends.last().copied().unwrap_or(0).max(1);
            let slot = turn as u64 % total;
            let start = members.weight_ends.partition_point(|&end| end <= slot);
            self.walk(len, start, member, usable, 1, &mut found);
            // The turn's box, or the next usable one: not a choice among several.
            found.truncate(1);
        } else {
            let start = (spread(turn) % len as u64) as usize;
            self.walk(len, start, member, usable, SAMPLE, &mut found);
        }
        Sample { found, scale: 1.0 }
    }

    /// The sample for a request for one model.
    fn model(
        &self,
        table: &RoutingTable,
        entry: &ModelEntry,
        req: &RouteRequest,
        turn: usize,
        usable: &dyn Fn(&Backend) -> bool,
    ) -> Sample<'t> {
        if table.config.routing.strategy != Strategy::Affinity {
            return self.spread(table, &entry.listed, turn, usable);
        }
        let point = match req.key {
            Some(key) => xxh3_64(&key.to_le_bytes()),
            None => spread(turn),
        };
        let mut found = Vec::with_capacity(2 * SAMPLE);
        let visited = self.ring(&entry.resident_ring, true, point, usable, &mut found);
        let resident = entry.resident_ring.len();
        let scale = if visited == 0 || visited >= resident {
            1.0
        } else {
            resident as f64 / visited as f64
        };
        if !found.iter().any(Candidate::has_free_slot) {
            self.ring(&entry.cold_ring, false, point, usable, &mut found);
        }
        Sample { found, scale }
    }

    /// The window of `ring` that starts at `point`.
    fn ring(
        &self,
        ring: &[RingSlot],
        resident: bool,
        point: u64,
        usable: &dyn Fn(&Backend) -> bool,
        out: &mut Vec<Candidate<'t>>,
    ) -> usize {
        if ring.is_empty() {
            return 0;
        }
        let start = ring.partition_point(|s| s.point < point) % ring.len();
        let member = |i: usize| Member {
            backend: ring[i].backend,
            resident,
        };
        self.walk(ring.len(), start, member, usable, SAMPLE, out)
    }
}
