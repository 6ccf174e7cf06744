//! Consistent hashing with bounded loads.
//!
//! Each key orders the candidates by rendezvous hash (highest random weight): the same
//! key and the same pool give the same order on every replica, and removing a backend
//! moves only the keys it held. A key takes the first backend in its order whose load,
//! counting this request, stays within `bound` × its fair share of the total load.

use xxhash_rust::xxh3::xxh3_64_with_seed;

use super::candidates::Candidate;

/// `key`'s preference order over `cands` (indices, best first).
pub fn rendezvous_order(key: u64, cands: &[Candidate]) -> Vec<usize> {
    let mut order: Vec<(u64, usize)> = cands
        .iter()
        .enumerate()
        .map(|(i, c)| (xxh3_64_with_seed(c.name().as_bytes(), key), i))
        .collect();
    // Ties are impossible in practice; the name breaks them deterministically anyway.
    order.sort_by(|a, b| {
        b.0.cmp(&a.0)
            .then_with(|| cands[a.1].name().cmp(cands[b.1].name()))
    });
    order.into_iter().map(|(_, i)| i).collect()
}

/// The index of the backend `key` goes to and whether it is the key's first choice, or
/// `None` when every candidate would exceed its bound or is full.
pub fn bounded_pick(key: u64, cands: &[Candidate], bound: f64) -> Option<(usize, bool)> {
    let total_load: usize = cands.iter().map(|c| c.in_flight).sum::<usize>() + 1;
    let total_cap: usize = cands.iter().map(|c| c.capacity).sum::<usize>().max(1);
    let order = rendezvous_order(key, cands);
    order.iter().enumerate().find_map(|(rank, &i)| {
        let c = &cands[i];
        // Fair share of the load, in requests, weighted by capacity. A box may always
        // fill half its slots with its own keys: at light load a spill costs a full
        // re-evaluation of the conversation's history and buys no shorter queue.
        let share = (bound * total_load as f64 * c.capacity as f64 / total_cap as f64).ceil();
        let allowed = share.max((c.capacity as f64 / 2.0).ceil());
        (c.has_free_slot() && (c.in_flight + 1) as f64 <= allowed).then_some((i, rank == 0))
    })
}
