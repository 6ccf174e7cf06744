//! Which models each box holds when a scenario starts: nothing, the placement a good
//! router would reach (replicas in proportion to popularity), or that placement with
//! the popularity order reversed — the least popular model on the most boxes, as after
//! a shift in demand.

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Start {
    /// No model resident anywhere: every model's first request loads it.
    Empty,
    /// Replicas in proportion to popularity.
    Ideal,
    /// The ideal replica counts given to the models in reverse popularity order.
    Wrong,
}

/// Per box, the indexes of the models resident at start. `popularity` is in model
/// order, most popular first; each box holds up to `per_box` models.
pub fn resident(start: Start, popularity: &[u32], boxes: usize, per_box: usize) -> Vec<Vec<usize>> {
    let mut placed = vec![Vec::new(); boxes];
    if start == Start::Empty {
        return placed;
    }
    let counts = replicas(popularity, boxes, per_box);
    let models: Vec<usize> = match start {
        Start::Wrong => (0..popularity.len()).rev().collect(),
        _ => (0..popularity.len()).collect(),
    };
    // Rank r's replica count goes to models[r]. Copies are dealt to boxes in turn, so a
    // model's copies land on consecutive boxes and, with at most `boxes` of them, never
    // twice on one box.
    let copies = models
        .iter()
        .zip(&counts)
        .flat_map(|(&model, &count)| std::iter::repeat_n(model, count));
    for (i, model) in copies.enumerate() {
        placed[i % boxes].push(model);
    }
    placed
}

/// Replicas per popularity rank for `boxes * per_box` residency slots: one for each
/// model while slots last, then each further slot to the model with the most
/// popularity per replica (at most one replica per box).
fn replicas(popularity: &[u32], boxes: usize, per_box: usize) -> Vec<usize> {
    let slots = boxes * per_box;
    let mut counts: Vec<usize> = (0..popularity.len())
        .map(|m| usize::from(m < slots))
        .collect();
    for _ in counts.iter().sum::<usize>()..slots {
        let best = (0..popularity.len())
            .filter(|&m| counts[m] < boxes)
            .max_by(|&a, &b| {
                let share = |m: usize| f64::from(popularity[m]) / (counts[m] + 1) as f64;
                // Ties go to the more popular (earlier) model.
                share(a).total_cmp(&share(b)).then(b.cmp(&a))
            });
        match best {
            Some(m) => counts[m] += 1,
            None => break,
        }
    }
    counts
}
