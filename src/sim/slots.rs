//! The slots of one resident model and what each still holds in its KV cache. A
//! request takes the free slot whose cache shares the longest prefix with its prompt,
//! which is what makes sending a conversation back to the same box pay off.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::Semaphore;

/// A resident model's slots.
pub(super) struct LoadedModel {
    /// One permit per free slot; tokio's semaphore is FIFO, like Ollama's slot queue.
    pub(super) free_slots: Arc<Semaphore>,
    slots: Mutex<SlotTable>,
}

struct SlotTable {
    slots: Vec<Slot>,
    clock: u64,
}

struct Slot {
    busy: bool,
    /// Tokens whose KV cache this slot still holds.
    cached: Vec<String>,
    last_used: u64,
}

impl LoadedModel {
    pub(super) fn new(slot_count: usize) -> LoadedModel {
        let slots = (0..slot_count)
            .map(|_| Slot {
                busy: false,
                cached: Vec::new(),
                last_used: 0,
            })
            .collect();
        LoadedModel {
            free_slots: Arc::new(Semaphore::new(slot_count)),
            slots: Mutex::new(SlotTable { slots, clock: 0 }),
        }
    }

    fn slot_table(&self) -> MutexGuard<'_, SlotTable> {
        self.slots.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Claims the free slot sharing the longest prefix with `prompt` (ties: the least
    /// recently used, so an unrelated prompt does not clobber a hot cache). Returns the
    /// slot and the number of prompt tokens it can skip.
    pub(super) fn claim_best_slot(&self, prompt: &[String]) -> (usize, usize) {
        let mut table = self.slot_table();
        let best = table
            .slots
            .iter()
            .enumerate()
            .filter(|(_, slot)| !slot.busy)
            .max_by_key(|(_, slot)| {
                (
                    common_prefix_len(&slot.cached, prompt),
                    std::cmp::Reverse(slot.last_used),
                )
            })
            .map(|(index, slot)| (index, common_prefix_len(&slot.cached, prompt)));
        // The caller holds a slot permit, so a free slot exists.
        let (index, prefix) = best.expect("a slot permit guarantees a free slot");
        table.slots[index].busy = true;
        // A fully cached prompt still re-evaluates its last token: the model needs
        // fresh logits to start generating (Ollama does the same).
        (index, prefix.min(prompt.len().saturating_sub(1)))
    }

    pub(super) fn release_slot(&self, index: usize, cached: Vec<String>) {
        let mut table = self.slot_table();
        table.clock += 1;
        let clock = table.clock;
        if let Some(slot) = table.slots.get_mut(index) {
            slot.busy = false;
            slot.cached = cached;
            slot.last_used = clock;
        }
    }
}

fn common_prefix_len(a: &[String], b: &[String]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}
